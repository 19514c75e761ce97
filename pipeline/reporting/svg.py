"""Small inline-SVG charts for the HTML report: horizontal bars, latency boxes, a line along the network.

No plotting library and no script: each function returns an ``<svg>`` string with
its own axis, labels and ``<title>`` tooltips, so the page renders offline anywhere.
"""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#3366cc", "#dc7633", "#2e9e5b", "#a23bb0", "#c0392b", "#16a0a8", "#7f8c8d", "#b7950b")
# one colour for FP32 and one for integer artifacts on every chart of the page (and in its legend)
FP32_COLOR, INT_COLOR, OTHER_COLOR, NOISY_COLOR = "#3366cc", "#dc7633", "#16a0a8", "#9e9e9e"


def precision_color(precision: str | None) -> str:
    """The page's colour for an artifact of this precision: FP32, integer (any wXaY), or neither (unknown)."""
    if precision == "fp32":
        return FP32_COLOR
    return INT_COLOR if precision and precision != "unknown" else OTHER_COLOR
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, v = [], start
    while v <= hi + step * 0.5:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _frame(width: int, height: int, title: str, body: list[str], cls: str) -> str:
    return (f'<svg class="chart {cls}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" {FONT}>'
            f'<title>{escape(title)}</title><rect width="100%" height="100%" fill="#fff"/>'
            f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="600">{escape(title)}</text>'
            + "".join(body) + "</svg>")


def _x_axis(x0: float, x1: float, y: float, top: float, lo: float, hi: float, ticks: list[float], unit: str) -> list[str]:
    out = []
    scale = (x1 - x0) / (hi - lo)
    for t in ticks:
        x = x0 + (t - lo) * scale
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{y}" stroke="#e3e3e3"/>'
                   f'<text x="{x:.1f}" y="{y + 14}" text-anchor="middle" fill="#555">{_fmt(t)}</text>')
    out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{y + 30}" text-anchor="middle" fill="#333">{escape(unit)}</text>')
    return out


def bar_chart(items: list[tuple[str, float]], title: str, unit: str, colors: list[str] | None = None,
              reference: float | None = None, value_fmt: str = "{:.3g}", width: int = 720, notes: list[str | None] | None = None) -> str:
    """Horizontal bars, one per (label, value), each value printed at the bar's end with its note (e.g. "noisy");
    ``reference`` draws a dashed line (e.g. speed-up 1×)."""
    if not items:
        return ""
    label_w, row = 250, 26
    height = 40 + row * len(items) + 40
    x0, x1 = label_w, width - (140 if notes and any(notes) else 70)
    hi = max([v for _, v in items] + [reference or 0.0]) * 1.1 or 1.0
    ticks = nice_ticks(0.0, hi)
    hi = ticks[-1]
    body = _x_axis(x0, x1, 30 + row * len(items) + 4, 28, 0.0, hi, ticks, unit)
    for i, (label, v) in enumerate(items):
        y = 32 + i * row
        w = (x1 - x0) * v / hi
        c = (colors[i] if colors else PALETTE[0])
        body.append(f'<text x="{x0 - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
                    f'<rect class="bar" x="{x0}" y="{y + 3}" width="{max(w, 0.5):.1f}" height="{row - 8}" fill="{c}">'
                    f'<title>{escape(label)}: {value_fmt.format(v)} {escape(unit)}</title></rect>'
                    f'<text class="value" x="{x0 + w + 4:.1f}" y="{y + 15}" fill="#333">{value_fmt.format(v)}'
                    + (f' <tspan fill="#8a5a00" font-weight="600">{escape(notes[i])}</tspan>' if notes and notes[i] else "") + "</text>")
    if reference is not None:
        x = x0 + (x1 - x0) * reference / hi
        body.append(f'<line x1="{x:.1f}" y1="28" x2="{x:.1f}" y2="{30 + row * len(items)}" stroke="#333" stroke-dasharray="4 3"/>')
    return _frame(width, height, title, body, "bars")


def _quantiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)

    def q(p: float) -> float:
        k = (len(s) - 1) * p
        f, c = math.floor(k), math.ceil(k)
        return s[f] + (s[c] - s[f]) * (k - f)

    return {"min": s[0], "p25": q(0.25), "p50": q(0.5), "p75": q(0.75), "p90": q(0.9), "p99": q(0.99), "max": s[-1]}


def latency_boxes(series: list[tuple[str, dict]], title: str, unit: str = "latency (ms)", width: int = 720) -> str:
    """One box per series: whiskers min → p99, box p25 → p75, a bar at p50, a tick at p90, ``max`` as a dot.

    Each series is (label, stats) where stats has ``samples`` (every sample) or the
    percentiles themselves (``min p50 p90 p99 max``; the box then spans p50 → p90), and may have ``color``
    (the artifact's precision colour) and ``note`` (printed after the p50, e.g. "noisy").
    The p50 is printed at the right of each row; the other figures are in the hover title.
    """
    rows = []
    for label, st in series:
        q = _quantiles(st["samples"]) if st.get("samples") else {k: st.get(k) for k in ("min", "p25", "p50", "p75", "p90", "p99", "max")}
        if q.get("p50") is None:
            continue
        rows.append((label, q, len(st.get("samples") or []), st.get("color"), st.get("note")))
    if not rows:
        return ""
    label_w, row = 280, 30
    height = 40 + row * len(rows) + 40
    x0, x1 = label_w, width - 150  # the right margin holds the printed p50
    lo = min(q["min"] if q.get("min") is not None else q["p50"] for _, q, *_ in rows)
    hi = max(q["p99"] if q.get("p99") is not None else q["p50"] for _, q, *_ in rows)
    if lo > 0 and hi / lo > 10:  # sub-ms medians next to multi-ms tails: a log axis keeps every box readable
        k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        ticks = [m * 10.0**k for k in range(k0, k1 + 1) for m in (1, 2, 5) if lo <= m * 10.0**k * 1.0001 and m * 10.0**k <= hi * 2]
        lo, hi = min(lo, ticks[0]) * 0.9, max(hi, ticks[-1]) * 1.05
        llo, lhi = math.log10(lo), math.log10(hi)

        def X(v: float) -> float:
            return x0 + (x1 - x0) * (math.log10(min(max(v, lo), hi)) - llo) / (lhi - llo)

        unit += ", log scale"
    else:
        ticks = nice_ticks(max(0.0, lo - 0.05 * (hi - lo)), hi + 0.05 * (hi - lo) if hi > lo else hi * 1.2 + 1e-6)
        lo, hi = ticks[0], ticks[-1]

        def X(v: float) -> float:
            return x0 + (x1 - x0) * (min(max(v, lo), hi) - lo) / (hi - lo)

    y_axis = 30 + row * len(rows) + 4
    body = []
    for t in ticks:
        body.append(f'<line x1="{X(t):.1f}" y1="28" x2="{X(t):.1f}" y2="{y_axis}" stroke="#e3e3e3"/>'
                    f'<text x="{X(t):.1f}" y="{y_axis + 14}" text-anchor="middle" fill="#555">{_fmt(t)}</text>')
    body.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{y_axis + 30}" text-anchor="middle" fill="#333">{escape(unit)}</text>')
    for i, (label, q, n, color, note) in enumerate(rows):
        y = 32 + i * row + row / 2
        c = color or PALETTE[i % len(PALETTE)]
        b0 = q.get("p25") if q.get("p25") is not None else q["p50"]
        b1 = q.get("p75") if q.get("p75") is not None else (q.get("p90") or q["p50"])
        tip = ", ".join(f"{k} {v:.3f}" for k, v in q.items() if v is not None) + (f" ms over {n} runs" if n else " ms")
        g = [f'<g class="box"><title>{escape(label)}: {escape(tip)}</title>',
             f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end">{escape(label)}</text>']
        if q.get("min") is not None and q.get("p99") is not None:
            g.append(f'<line x1="{X(q["min"]):.1f}" y1="{y}" x2="{X(q["p99"]):.1f}" y2="{y}" stroke="{c}"/>')
        g.append(f'<rect x="{X(b0):.1f}" y="{y - 8}" width="{max(X(b1) - X(b0), 1.5):.1f}" height="16" fill="{c}" fill-opacity="0.35" stroke="{c}"/>'
                 f'<line x1="{X(q["p50"]):.1f}" y1="{y - 10}" x2="{X(q["p50"]):.1f}" y2="{y + 10}" stroke="{c}" stroke-width="3"/>')
        if q.get("p90") is not None:
            g.append(f'<line x1="{X(q["p90"]):.1f}" y1="{y - 6}" x2="{X(q["p90"]):.1f}" y2="{y + 6}" stroke="#222"/>')
        if q.get("max") is not None and q["max"] > hi:
            g.append(f'<text x="{x1 - 2}" y="{y - 10}" text-anchor="end" fill="#999" font-size="10">max {q["max"]:.2f} →</text>')
        g.append(f'<text class="value" x="{x1 + 8}" y="{y + 4}" fill="#333">p50 {q["p50"]:.3f} ms'
                 + (f' <tspan fill="#8a5a00" font-weight="600">{escape(note)}</tspan>' if note else "") + "</text>")
        g.append("</g>")
        body += g
    return _frame(width, height, title, body, "boxes")


def line_chart(points: list[tuple[str, float | None]], title: str, unit: str, width: int = 720, height: int = 300,
               value_fmt: str = "{:.1f}") -> str:
    """Values along an axis of named steps (layers in network order, QAT steps); ``None`` (infinite SQNR) is skipped.

    Every value is printed above its point when there are at most 30; beyond that the first, last, lowest and
    highest are (the rest stay in the hover titles).
    """
    pts = [(i, label, v) for i, (label, v) in enumerate(points) if v is not None and math.isfinite(v)]
    if not pts:
        return ""
    x0, x1, y0, y1 = 80, width - 30, height - 60, 34
    lo, hi = min(v for *_, v in pts), max(v for *_, v in pts)
    pad = 0.1 * ((hi - lo) or abs(hi) or 1.0)  # relative to the data: a loss of 1e-4 gets an axis of its own size
    ticks = nice_ticks(min(0.0, lo) if lo < 0 else max(0.0, lo - pad), hi + pad)
    lo, hi = ticks[0], ticks[-1]
    n = max(len(points) - 1, 1)

    def X(i: int) -> float:
        return x0 + (x1 - x0) * i / n

    def Y(v: float) -> float:
        return y0 - (y0 - y1) * (v - lo) / (hi - lo)

    body = []
    for t in ticks:
        body.append(f'<line x1="{x0}" y1="{Y(t):.1f}" x2="{x1}" y2="{Y(t):.1f}" stroke="#e3e3e3"/>'
                    f'<text x="{x0 - 6}" y="{Y(t) + 4:.1f}" text-anchor="end" fill="#555">{_fmt(t)}</text>')
    body.append(f'<text x="14" y="{(y0 + y1) / 2}" transform="rotate(-90 14 {(y0 + y1) / 2})" text-anchor="middle">{escape(unit)}</text>')
    body.append(f'<polyline class="series" fill="none" stroke="{PALETTE[0]}" stroke-width="2" points="'
                + " ".join(f"{X(i):.1f},{Y(v):.1f}" for i, _, v in pts) + '"/>')
    step = max(1, len(points) // 12)
    if len(pts) <= 30:
        shown = {i for i, _, _ in pts}
    else:
        shown = {pts[0][0], pts[-1][0], min(pts, key=lambda p: p[2])[0], max(pts, key=lambda p: p[2])[0]}
    for i, label, v in pts:
        body.append(f'<circle class="point" cx="{X(i):.1f}" cy="{Y(v):.1f}" r="3.5" fill="{PALETTE[0]}"><title>{escape(label)}: {v:.2f} {escape(unit)}</title></circle>')
        if i in shown:
            body.append(f'<text class="value" x="{X(i):.1f}" y="{Y(v) - 7:.1f}" text-anchor="middle" fill="#333" font-size="9">{value_fmt.format(v)}</text>')
    for i, (label, _) in enumerate(points):
        if i % step == 0 or i == len(points) - 1:
            short = label if len(label) <= 14 else "…" + label[-13:]
            body.append(f'<text x="{X(i):.1f}" y="{y0 + 14}" text-anchor="end" transform="rotate(-35 {X(i):.1f} {y0 + 14})" '
                        f'fill="#555" font-size="10">{escape(short)}</text>')
    return _frame(width, height, title, body, "line")


def scatter(points: list[dict], title: str, x_unit: str, y_unit: str, x_fmt: str = "{:.3g}", y_fmt: str = "{:.2%}",
            width: int = 720, height: int = 340, log_x: bool = False, x_ticks: list[float] | None = None) -> str:
    """Points with their labels printed beside them (moved down where they would overlap); Pareto points (``pareto``)
    filled and ringed and joined by the front's step line, the others hollow; ``noisy`` points dashed.
    Each point: label, x, y, color, pareto, noisy. ``x_ticks`` replaces the automatic ticks (e.g. the bit widths)."""
    pts = [p for p in points if p.get("x") is not None and p.get("y") is not None and (not log_x or p["x"] > 0)]
    if not pts:
        return ""
    x0, x1, y0, y1 = 80, width - 170, height - 60, 34
    xs, ys = [p["x"] for p in pts], [p["y"] for p in pts]
    if log_x:
        lo, hi = math.log10(min(xs)), math.log10(max(xs))
        lo, hi = (lo - 0.15, hi + 0.15) if hi - lo > 1e-9 else (lo - 0.5, hi + 0.5)
        xt = x_ticks or [10 ** k * m for k in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5) if lo <= math.log10(10 ** k * m) <= hi]

        def X(v: float) -> float:
            return x0 + (x1 - x0) * (math.log10(v) - lo) / (hi - lo)
    else:
        xt = nice_ticks(min(0.0, min(xs)), max(xs) * 1.05 if max(xs) > 0 else 1.0)
        xlo, xhi = xt[0], xt[-1]

        def X(v: float) -> float:
            return x0 + (x1 - x0) * (v - xlo) / ((xhi - xlo) or 1.0)
    ylo, yhi = min(ys), max(ys)
    pad = (yhi - ylo) * 0.1 or 0.01
    yt = nice_ticks(ylo - pad, yhi + pad)
    ylo, yhi = yt[0], yt[-1]

    def Y(v: float) -> float:
        return y0 - (y0 - y1) * (v - ylo) / ((yhi - ylo) or 1.0)

    body = []
    for t in xt:
        body.append(f'<line x1="{X(t):.1f}" y1="{y1}" x2="{X(t):.1f}" y2="{y0}" stroke="#e3e3e3"/>'
                    f'<text x="{X(t):.1f}" y="{y0 + 14}" text-anchor="middle" fill="#555">{_fmt(t)}</text>')
    for t in yt:
        body.append(f'<line x1="{x0}" y1="{Y(t):.1f}" x2="{x1}" y2="{Y(t):.1f}" stroke="#e3e3e3"/>'
                    f'<text x="{x0 - 6}" y="{Y(t) + 4:.1f}" text-anchor="end" fill="#555">{escape(y_fmt.format(t))}</text>')
    body.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{y0 + 32}" text-anchor="middle" fill="#333">{escape(x_unit)}</text>')
    body.append(f'<text x="14" y="{(y0 + y1) / 2}" transform="rotate(-90 14 {(y0 + y1) / 2})" text-anchor="middle">{escape(y_unit)}</text>')
    front = sorted((p for p in pts if p.get("pareto")), key=lambda p: (p["x"], -p["y"]))
    if len(front) > 1:
        path = []
        for a, b in zip(front, front[1:]):
            path += [f"{X(a['x']):.1f},{Y(a['y']):.1f}", f"{X(b['x']):.1f},{Y(a['y']):.1f}"]
        path.append(f"{X(front[-1]['x']):.1f},{Y(front[-1]['y']):.1f}")
        body.append(f'<polyline class="front" fill="none" stroke="#555" stroke-dasharray="5 3" points="{" ".join(path)}"/>')
    placed: list[tuple[float, float, float]] = []  # (x0, x1, y) of the labels written so far

    def free_y(x0_: float, x1_: float, y: float) -> float:
        while any(a < x1_ and x0_ < b and abs(y - yy) < 11 for a, b, yy in placed):
            y += 11
        placed.append((x0_, x1_, y))
        return y

    for p in sorted(pts, key=lambda p: (Y(p["y"]), X(p["x"]))):
        cx, cy, c = X(p["x"]), Y(p["y"]), p.get("color") or PALETTE[0]
        tip = f"{p['label']}: {x_fmt.format(p['x'])} {x_unit}, {y_fmt.format(p['y'])}" + (" (Pareto)" if p.get("pareto") else "") \
            + (" (noisy latency)" if p.get("noisy") else "")
        dash = ' stroke-dasharray="2 2"' if p.get("noisy") else ""
        if p.get("pareto"):
            body.append(f'<g class="pareto"><circle cx="{cx:.1f}" cy="{cy:.1f}" r="9" fill="none" stroke="#222" stroke-width="1.5"{dash}/>'
                        f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{c}"><title>{escape(tip)}</title></circle></g>')
        else:
            body.append(f'<circle class="dominated" cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="#fff" stroke="{c}" stroke-width="2"{dash}>'
                        f'<title>{escape(tip)}</title></circle>')
        text = f"{p['label']} ({x_fmt.format(p['x'])}, {y_fmt.format(p['y'])})" + (" noisy" if p.get("noisy") else "")
        ty = free_y(cx + 11, cx + 11 + 5.5 * len(text), cy + 4)
        body.append(f'<text class="value" x="{cx + 11:.1f}" y="{ty:.1f}" fill="#333" font-size="10">{escape(text)}</text>')
    return _frame(width, height, title, body, "scatter")
