"""``report.html``: one self-contained page (inline CSS and SVG, no script, no network) per run or per comparison.

Sections: the summary table; latency distribution per runtime and device (every
sample where a device bench kept them, the check stage's percentiles otherwise);
int8-vs-FP32 speed-up bars; size bars; the accuracy/agreement table (host check and
device checks); per-layer SQNR along the network; each device's environment and flags.
"""

from __future__ import annotations

import json
import time
from html import escape
from pathlib import Path

from pipeline.reporting import svg

CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.ok{color:#1e7b3a;font-weight:600}.bad{color:#b3261e;font-weight:600}
.note{color:#666;font-size:13px}.flag{color:#8a5a00}svg.chart{display:block;margin:8px 0;max-width:100%;height:auto}
code{background:#f4f4f4;padding:1px 4px}
"""


def _f(v, fmt: str = "{:.3f}") -> str:
    return "–" if v is None else fmt.format(v)


def _pct(v) -> str:
    return _f(v, "{:.2%}") if v is not None else "–"


def _table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{escape(h)}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _run_label(report: dict, many: bool) -> str:
    return (Path(report.get("run_dir", "?")).name + ": ") if many else ""


def _samples(report: dict, dev: dict) -> dict[int, list[float]]:
    """Every timed sample of a device result, by thread count (read from the result file beside the run)."""
    path = Path(report.get("run_dir", ".")) / dev.get("result_file", "")
    if not dev.get("result_file") or not path.exists():
        return {}
    full = json.loads(path.read_text())
    return {r["threads"]: [v for t in r.get("trials", []) for v in t.get("samples_ms", [])] for r in full.get("runs", [])}


def device_label(dev: dict) -> str:
    """A device result's name, marked when its latencies were measured on an emulated CPU (never a device figure)."""
    return dev["device"]["name"] + (" (emulated CPU)" if dev.get("latency_source") == "emulated" else "")


def device_results_left_out(report: dict) -> list[str]:
    """The device results a report did not use, one line each with the reason (stale artifact, malformed file)."""
    lines = [f"device result {d.get('result_file', '?')} is stale, left out: {d.get('reason', '?')}; "
             "bench the current artifact again (pipeline bench)" for d in report.get("devices_stale") or []]
    return lines + [f"device result {d.get('result_file', '?')} is not a valid device result, skipped: {d.get('reason', '?')}"
                    for d in report.get("devices_invalid") or []]


def isa_summary(env: dict) -> str:
    """The int8-relevant CPU features of a device record, and whether its u8×s8 kernels saturate."""
    isa = env.get("isa") or {}
    if not isa:
        return "not recorded"
    feats = ", ".join(k for k, v in (isa.get("int8_features") or {}).items() if v) or "none"
    out = f"{isa.get('arch', '?')}: {feats}" + ("; u8×s8 saturates (no VNNI)" if isa.get("u8s8_saturates") else "")
    return out + (f"; emulated: {isa['emulated']}" if isa.get("emulated") else "")


def latency_series(reports: list[dict]) -> list[tuple[str, dict]]:
    many = len(reports) > 1
    series = []
    for rep in reports:
        devs = rep.get("devices") or []
        for dev in devs:
            samples = _samples(rep, dev)
            for run in dev.get("runs", []):
                s = run["steady"]
                label = f"{_run_label(rep, many)}{device_label(dev)} · {dev['artifact']['name']} · {run['threads']}T"
                series.append((label, {"samples": samples.get(run["threads"]), **{k: s.get(f"{k}_ms") for k in ("min", "p50", "p90", "p99", "max")}}))
        for name, e in ((rep.get("check") or {}).get("artifacts") or {}).items():
            lat = e.get("latency")
            if lat:
                label = f"{_run_label(rep, many)}host check · {name} · {lat.get('threads', 1)}T"
                series.append((label, {k: lat.get(f"{k}_ms") for k in ("min", "p50", "p90", "p99", "max")}))
    return series


def speedups(report: dict) -> list[dict]:
    """int-vs-FP32 speed-up (p50 ratio) per device, runtime and thread count, and per runtime in the host check."""
    out = []
    by_key: dict[tuple, dict[str, float]] = {}
    precisions = {Path(a["path"]).name: a["precision"] for a in report.get("artifacts") or []}
    for dev in report.get("devices") or []:
        prec = _precision(dev["artifact"]["name"], precisions)
        for run in dev.get("runs", []):
            p50 = run["steady"].get("p50_ms") or run["steady"].get("mean_ms")
            if p50:
                by_key.setdefault((device_label(dev), dev["artifact"]["runtime"], run["threads"]), {})[prec] = p50
    for name, e in ((report.get("check") or {}).get("artifacts") or {}).items():
        lat = e.get("latency") or {}
        if lat.get("p50_ms"):
            by_key.setdefault(("host check", e["runtime"], lat.get("threads", 1)), {})[e["precision"] if e["precision"] == "fp32" else "int"] = lat["p50_ms"]
    for (device, runtime, threads), v in sorted(by_key.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if "fp32" in v and "int" in v:
            out.append({"device": device, "runtime": runtime, "threads": threads, "fp32_p50_ms": v["fp32"], "int_p50_ms": v["int"],
                        "speedup": v["fp32"] / v["int"]})
    return out


def _precision(artifact_name: str, precisions: dict[str, str]) -> str:
    """``fp32`` or ``int`` for a benched artifact, as the run's export index records it (not guessed from the name)."""
    recorded = precisions.get(artifact_name)
    if recorded is None:  # benched from elsewhere (pipeline bench --artifact): what the device's reference check says
        return "unknown"
    return "fp32" if recorded == "fp32" else "int"


def _summary(rep: dict) -> str:
    cfg = (rep.get("config") or {}).get("_data", {})
    card = rep.get("model_card") or {}
    qat = rep.get("qat") or {}
    return (f"model <b>{escape(str(card.get('name', '?')))}</b> {escape(str(tuple(card.get('input_shape', ()))))}, "
            f"scheme <b>{escape(str(qat.get('scheme', cfg.get('qat', {}).get('bits', '?'))))}</b> "
            f"({escape(str(qat.get('profile', cfg.get('qat', {}).get('profile', '?'))))} profile), "
            + (f"weights {escape(str(qat['weight_grid']))}, " if qat.get("weight_grid") else "")
            + f"synthesis <b>{escape(str(cfg.get('synthesis', {}).get('method', '?')))}</b>, run folder <code>{escape(str(rep.get('run_dir')))}</code>")


def render(reports: list[dict], title: str | None = None) -> str:
    many = len(reports) > 1
    title = title or ("zsq-edge: " + (f"{len(reports)} runs compared" if many else f"run {Path(reports[0].get('run_dir', '?')).name}"))
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style></head><body>",
             f"<h1>{escape(title)}</h1>",
             f'<p class="note">Generated {time.strftime("%Y-%m-%d %H:%M:%S")} by <code>pipeline report</code>. '
             "Host numbers are this machine's, never a proxy for a device.</p>"]
    for rep in reports:
        parts.append(f"<p>{_summary(rep)}</p>")

    # artifacts
    rows = []
    for rep in reports:
        check = rep.get("check") or {}
        for art in rep.get("artifacts", []):
            name = Path(art["path"]).name
            e = (check.get("artifacts") or {}).get(name, {})
            cov = art.get("integer_coverage")
            rows.append([escape(_run_label(rep, many) + name), escape(art.get("target", "?")), escape(art.get("precision", "?")),
                         _f(art.get("size_bytes", 0) / 1e6, "{:.3f}"), _f((e.get("latency") or {}).get("p50_ms")),
                         _pct((e.get("vs_fp") or {}).get("top1_agreement")), _pct((e.get("vs_fake_quant") or {}).get("top1_agreement")),
                         _f((e.get("vs_fp") or {}).get("kl"), "{:.4f}"), _pct(cov.get("share")) if cov else "–"])
    parts.append("<h2>Artifacts</h2>" + _table(["artifact", "target", "precision", "size MB", "host p50 ms", "agree FP", "agree FQ",
                                                   "KL vs FP", "integer MACs"], rows))

    # latency distribution
    series = latency_series(reports)
    parts.append("<h2>Latency distribution</h2>")
    chart = svg.latency_boxes(series, "Latency per device, artifact and thread count")
    if chart:
        chart += ('<p class="note">Box p25–p75 (p50–p90 where only percentiles were kept), thick bar p50, tick p90, whiskers min–p99; '
                  "every timed sample of every trial. Hover for the numbers.</p>")
    parts.append(chart or '<p class="note">No latency measured (run with the check stage\'s bench or pipeline bench).</p>')

    # speed-up
    ups = [(rep, s) for rep in reports for s in speedups(rep)]
    parts.append("<h2>Integer vs FP32 speed-up</h2>")
    if ups:
        items = [(f"{_run_label(rep, many)}{s['device']} · {s['runtime']} · {s['threads']}T", s["speedup"]) for rep, s in ups]
        colors = [svg.PALETTE[1] if v < 1 else svg.PALETTE[2] for _, v in items]
        parts.append(svg.bar_chart(items, "p50(FP32) / p50(int): above 1× the integer artifact is faster", "speed-up (×)", colors,
                                   reference=1.0, value_fmt="{:.2f}×"))
        parts.append(_table(["device · runtime · threads", "FP32 p50 ms", "int p50 ms", "speed-up"],
                            [[escape(lbl), _f(s["fp32_p50_ms"]), _f(s["int_p50_ms"]), _f(s["speedup"], "{:.2f}×")] for (lbl, _), (_, s) in zip(items, ups)]))
    else:
        parts.append('<p class="note">No FP32/integer pair measured on the same runtime.</p>')

    # sizes
    sizes = [(f"{_run_label(rep, many)}{Path(a['path']).name}", a.get("size_bytes", 0) / 1e6) for rep in reports for a in rep.get("artifacts", [])]
    parts.append("<h2>Size</h2>")
    parts.append(svg.bar_chart(sizes, "Artifact size on disk", "MB", [svg.PALETTE[0] if ".fp32." in n else svg.PALETTE[2] for n, _ in sizes],
                               value_fmt="{:.3f}") or '<p class="note">No artifacts.</p>')

    # accuracy / agreement
    rows = []
    for rep in reports:
        for name, e in ((rep.get("check") or {}).get("artifacts") or {}).items():
            fq = e.get("vs_fake_quant") or {}
            rows.append([escape(_run_label(rep, many) + name), "host check", _pct(e["vs_fp"]["top1_agreement"]), _pct(fq.get("top1_agreement")),
                         _f(fq.get("max_abs_diff_lsb"), "{:.2f}"), _pct(e.get("accuracy")), '<span class="ok">ok</span>'])
        for dev in rep.get("devices") or []:
            ref = dev.get("reference") or {}
            kind = dev.get("reference_kind")
            status = dev.get("status", "?")
            cls = "ok" if status == "ok" and ref else ("bad" if status != "ok" else "")
            rows.append([escape(_run_label(rep, many) + dev["artifact"]["name"]), escape(device_label(dev)),
                         _pct(ref.get("top1_agreement")) if kind == "fp" else "–", _pct(ref.get("top1_agreement")) if kind == "fake_quant" else "–",
                         _f(ref.get("max_abs_diff_lsb"), "{:.2f}"), "–",
                         f'<span class="{cls}">{escape(status if ref else "not checked")}</span>'])
    ev = next(((rep.get("check") or {}).get("eval_data") for rep in reports if (rep.get("check") or {}).get("eval_data")), None)
    parts.append("<h2>Accuracy and agreement</h2>" + _table(["artifact", "where", "agree FP", "agree fake-quant", "max diff (LSB)", "real accuracy", "status"], rows, 2))
    parts.append('<p class="note">Agreement = top-1 agreement on the held-out synthetic set (never trained on); a device result '
                 "compares the device's outputs with the expected outputs that travelled with the artifact."
                 + (f" Real accuracy on {ev['images']} labelled images: FP {_pct(ev['fp_accuracy'])}, fake-quant {_pct(ev['fake_quant_accuracy'])}." if ev else "")
                 + "</p>")
    host_warnings = [(rep, w) for rep in reports for w in (rep.get("check") or {}).get("warnings") or []]
    if host_warnings:
        parts.append("<ul>" + "".join(f'<li class="flag">{escape(_run_label(rep, many))}host check · {escape(w)}</li>'
                                      for rep, w in host_warnings) + "</ul>")

    # per-layer SQNR
    parts.append("<h2>Per-layer quantization error</h2>")
    for rep in reports:
        layers = (rep.get("check") or {}).get("layers") or []
        chart = svg.line_chart([(row["name"], row["sqnr_db"]) for row in layers],
                               f"{_run_label(rep, many)}SQNR of each conv/linear output vs the FP model (higher is better)", "SQNR (dB)")
        parts.append(chart or '<p class="note">No per-layer data (re-run the check stage: pipeline run --from check).</p>')

    # device results not used: stale (another artifact) or invalid (malformed file)
    left_out = [(rep, line) for rep in reports for line in device_results_left_out(rep)]
    if left_out:
        parts.append("<h2>Device results left out</h2><ul>" + "".join(f'<li class="flag">{escape(_run_label(rep, many) + line)}</li>'
                                                                     for rep, line in left_out) + "</ul>")

    # devices
    devs = [(rep, d) for rep in reports for d in rep.get("devices") or []]
    if devs:
        parts.append("<h2>Devices and environment</h2>")
        seen = set()
        rows = []
        for rep, d in devs:
            env = d.get("environment") or {}
            key = (d["device"]["name"], env.get("hostname"))
            if key in seen:
                continue
            seen.add(key)
            rows.append([escape(device_label(d)), escape(str(d["device"].get("url", ""))), escape(str(env.get("cpu_model", "?"))),
                         escape(isa_summary(env)),
                         escape(str(env.get("os", "?"))), escape(str(env.get("big_cores", env.get("max_freq_mhz", "?")))),
                         escape(json.dumps(env.get("governor") or "n/a")), escape(json.dumps(env.get("temperatures_c") or "n/a")),
                         escape(str(env.get("load_average"))), escape(", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items()))])
        parts.append(_table(["device", "url", "CPU", "int8 ISA", "OS", "big cores", "governor", "temperatures °C", "load", "versions"], rows, 10))
        flags = [(d, f) for _, d in devs for f in d.get("flags", [])]
        if flags:
            parts.append("<ul>" + "".join(f'<li class="flag">{escape(d["device"]["name"])} · {escape(d["artifact"]["name"])}: {escape(f)}</li>'
                                          for d, f in flags) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(path: Path, reports: list[dict], title: str | None = None) -> Path:
    from runtimes.atomic import write_text

    return write_text(Path(path), render(reports, title))
