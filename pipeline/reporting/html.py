"""``report.html``: one self-contained page (inline CSS and SVG, no script, no network) per run or per comparison.

Sections, in the order a reader asks: the gates (each rule, its threshold and value, pass or fail, and the exit
status the run implies); the artifacts (FP32 and integer side by side, status from the gates); trained vs
deployed bits and why they differ; latency with its spread and a noisy mark; integer-vs-FP32 speed-ups (marked
when a figure is noisy); the slowest ops from each runtime's profiler (pipeline.reporting.ops); device cold start
and memory; sizes; accuracy and agreement; accelerator choices per artifact (pipeline.reporting.accelerators);
per-class agreement; per-layer SQNR; the worst layers quantized alone (pipeline.reporting.layers); the QAT loss
curve; stage timings; across runs the two Pareto views; device environment.

Nothing here decides a status: :mod:`pipeline.reporting.status` does, and the page only colours what it says
(``pass``/``ok`` good, ``fail``/``mismatch`` bad, ``not gated``/``unchecked`` neutral). Every number a chart
shows is also printed, beside its bar, box or point, or in a table next to it.
"""

from __future__ import annotations

import json
import re
import time
from html import escape
from pathlib import Path

from pipeline.reporting import compare, svg
from pipeline.reporting.accelerators import section as accelerator_choices
from pipeline.reporting.layers import section as worst_layers
from pipeline.reporting.ops import section as slowest_ops
from pipeline.reporting.status import (artifact_status, device_label, device_noise, device_spread, device_status, host_noise,
                                       host_spread, kind, speedups)

__all__ = ["device_label", "device_results_left_out", "isa_summary", "render", "speedups", "title_of", "write_html"]

CSS = f"""
body{{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}}
h1{{font-size:22px}}h2{{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}}
table{{border-collapse:collapse;margin:8px 0;font-size:13px}}th,td{{border:1px solid #ddd;padding:4px 8px;text-align:right}}
th{{background:#f4f4f4}}td.l,th.l{{text-align:left}}
.status{{font-weight:600;padding:1px 6px;border-radius:3px;white-space:nowrap}}
.status.ok{{color:#1e7b3a;background:#e3f4e8}}.status.bad{{color:#b3261e;background:#fbe4e2}}.status.neutral{{color:#555;background:#eee}}
.note{{color:#666;font-size:13px}}.flag{{color:#8a5a00}}.noisy{{color:#8a5a00;font-weight:600}}
svg.chart{{display:block;margin:8px 0;max-width:100%;height:auto}}
code{{background:#f4f4f4;padding:1px 4px}}
.sw{{display:inline-block;width:10px;height:10px;margin-right:5px;vertical-align:baseline}}
.sw.fp32{{background:{svg.FP32_COLOR}}}.sw.int{{background:{svg.INT_COLOR}}}.sw.other{{background:{svg.OTHER_COLOR}}}
footer{{margin-top:40px;border-top:1px solid #ddd;padding-top:8px}}
"""

EXIT_MEANING = {0: "success", 5: "quality gate not met", 7: "a device's outputs differ from the reference"}


def _f(v, fmt: str = "{:.3f}") -> str:
    return "–" if v is None else fmt.format(v)


def _pct(v) -> str:
    return _f(v, "{:.2%}")


def _table(head: list[str], rows: list[list[str]], left: int = 1, cls: str = "") -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{escape(h)}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{th}</tr>{body}</table>'


def _status(word: str) -> str:
    """A status word in its colour: only what the gates call good is green."""
    return f'<span class="status {kind(word)}">{escape(word)}</span>'


def _noisy(noisy: bool, why: str | None) -> str:
    return f'<span class="noisy" title="{escape(why or "")}">noisy</span>' if noisy else "steady"


def _swatch(precision: str | None) -> str:
    cls = "fp32" if precision == "fp32" else ("int" if precision and precision != "unknown" else "other")
    return f'<span class="sw {cls}"></span>'


def _run_name(report: dict) -> str:
    return Path(report.get("run_dir", "?")).name or str(report.get("run_dir", "?"))


def _run_label(report: dict, many: bool) -> str:
    return (_run_name(report) + ": ") if many else ""


def _scheme(report: dict) -> str:
    cfg = (report.get("config") or {}).get("_data", {})
    return str((report.get("qat") or {}).get("scheme") or cfg.get("qat", {}).get("bits") or "?")


def title_of(reports: list[dict]) -> str:
    """The page title: the run folder's name, model and scheme; or the runs compared."""
    if len(reports) > 1:
        return f"zsq-edge: {len(reports)} runs compared (" + ", ".join(_run_name(r) for r in reports) + ")"
    rep = reports[0]
    model = (rep.get("model_card") or {}).get("name", "?")
    return f"zsq-edge: {_run_name(rep)} ({model}, {_scheme(rep)})"


def _samples(report: dict, dev: dict) -> dict[int, list[float]]:
    """Every timed sample of a device result, by thread count (read from the result file beside the run)."""
    path = Path(report.get("run_dir", ".")) / dev.get("result_file", "")
    if not dev.get("result_file") or not path.exists():
        return {}
    full = json.loads(path.read_text())
    return {r["threads"]: [v for t in r.get("trials", []) for v in t.get("samples_ms", [])] for r in full.get("runs", [])}


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


def _precisions(report: dict) -> dict[str, str]:
    return {Path(a["path"]).name: a.get("precision", "?") for a in report.get("artifacts") or []}


def _pair_key(name: str, precision: str | None) -> tuple:
    """Sort key that puts each FP32 twin right before its integer artifact (same format, FP32 first)."""
    suffix = name.split(".", 2)[-1] if name.count(".") >= 2 else name
    return (suffix, precision != "fp32", name)


def latency_series(reports: list[dict]) -> list[tuple[str, dict]]:
    """One series per device run and host-check latency, FP32 and integer of the same place adjacent."""
    many = len(reports) > 1
    series = []
    for rep in reports:
        precisions = _precisions(rep)
        groups: list[tuple[tuple, str, dict]] = []
        for dev in rep.get("devices") or []:
            samples = _samples(rep, dev)
            name = dev["artifact"]["name"]
            prec = precisions.get(name, "unknown")
            for run in dev.get("runs", []):
                s = run["steady"]
                noisy, why = device_noise(run)
                label = f"{_run_label(rep, many)}{device_label(dev)} · {name} · {run['threads']}T"
                groups.append(((device_label(dev), run["threads"], *_pair_key(name, prec)), label,
                               {"samples": samples.get(run["threads"]), **{k: s.get(f"{k}_ms") for k in ("min", "p50", "p90", "p99", "max")},
                                "color": svg.precision_color(prec), "note": "noisy" if noisy else None, "why": why,
                                "spread": device_spread(run), "noisy": noisy}))
        for name, e in ((rep.get("check") or {}).get("artifacts") or {}).items():
            lat = e.get("latency")
            if lat:
                noisy, why = host_noise(lat)
                label = f"{_run_label(rep, many)}host check · {name} · {lat.get('threads', 1)}T"
                groups.append((("~host", lat.get("threads", 1), *_pair_key(name, e.get("precision"))), label,
                               {**{k: lat.get(f"{k}_ms") for k in ("min", "p50", "p90", "p99", "max")},
                                "color": svg.precision_color(e.get("precision")), "note": "noisy" if noisy else None, "why": why,
                                "spread": host_spread(lat), "noisy": noisy}))
        series += [(label, st) for _, label, st in sorted(groups, key=lambda g: tuple(map(str, g[0])))]
    return series


def _summary(rep: dict) -> str:
    cfg = (rep.get("config") or {}).get("_data", {})
    card = rep.get("model_card") or {}
    qat = rep.get("qat") or {}
    return (f"model <b>{escape(str(card.get('name', '?')))}</b> {escape(str(tuple(card.get('input_shape', ()))))}, "
            f"scheme <b>{escape(_scheme(rep))}</b> "
            f"({escape(str(qat.get('profile', cfg.get('qat', {}).get('profile', '?'))))} profile), "
            + (f"weights {escape(str(qat['weight_grid']))}, " if qat.get("weight_grid") else "")
            + f"synthesis <b>{escape(str(qat.get('method') or cfg.get('synthesis', {}).get('method', '?')))}</b>, "
            f"run folder <code>{escape(str(rep.get('run_dir')))}</code>")


# ---- sections ------------------------------------------------------------------------------------------------

def _gates(reports: list[dict], many: bool) -> str:
    out = ["<h2 id=\"gates\">Gates</h2>"]
    rows = []
    for rep in reports:
        g = rep.get("gates") or {}
        for r in g.get("rules") or []:
            if r.get("gate") == "device":
                dev = next((d for d in rep.get("devices") or [] if d["artifact"]["name"] == r.get("artifact")
                            and d["device"]["name"] == r.get("device")), {})
                ref = dev.get("reference") or {}
                tol = ref.get("min_top1_agreement")
                where = device_label(dev) if dev else str(r.get("device", "?"))
                rows.append([escape(_run_label(rep, many) + "device output check"), escape(str(r.get("artifact", "?"))),
                             escape(f"{where}, vs the reference outputs that travelled" if ref else f"{where}: no reference travelled"),
                             "≥ " + _pct(tol) if tol is not None else "–", _pct(ref.get("top1_agreement")),
                             _status(r.get("status") or ("ok" if r.get("passed") else "mismatch"))])
            else:
                drop = r.get("gate") == "max_accuracy_drop"
                fmt = (lambda v: _f(None if v is None else v * 100, "{:.2f} points")) if drop else _pct
                rows.append([escape(_run_label(rep, many) + str(r.get("gate"))), escape(str(r.get("artifact", "?"))),
                             escape(str(r.get("measured_on", ""))), ("≤ " if drop else "≥ ") + fmt(r.get("threshold")),
                             fmt(r.get("value")), _status("pass" if r.get("passed") else "fail")])
    if rows:
        out.append(_table(["rule", "artifact", "measured on", "threshold", "value", "result"], rows, 3, "gates"))
    for rep in reports:
        g = rep.get("gates") or {}
        code = rep.get("exit_status", 0)
        configured = {k: v for k, v in (g.get("configured") or {}).items() if v is not None}
        conf = (", ".join(f"check.{k} = {v}" for k, v in configured.items()) if configured
                else "no quality gate configured (check.min_agreement, check.max_accuracy_drop)")
        unchecked = sum(1 for r in g.get("rules") or [] if r.get("status") == "unchecked")
        out.append(f'<p class="exit">{escape(_run_label(rep, many))}{escape(conf)}; '
                   f'{_status("pass" if g.get("passed", True) else "fail")} exit status <b>{code}</b> '
                   f"({escape(EXIT_MEANING.get(code, 'see docs/cli.md'))})"
                   + (f"; {unchecked} device result(s) unchecked: no reference outputs travelled, nothing was compared" if unchecked else "")
                   + "</p>")
    return "".join(out)


def _artifacts(reports: list[dict], many: bool) -> str:
    rows = []
    for rep in reports:
        check = rep.get("check") or {}
        qat = rep.get("qat") or {}
        arts = sorted(rep.get("artifacts", []), key=lambda a: _pair_key(Path(a["path"]).name, a.get("precision")))
        for art in arts:
            name = Path(art["path"]).name
            e = (check.get("artifacts") or {}).get(name, {})
            lat = e.get("latency") or {}
            noisy, why = host_noise(lat)
            cov = art.get("integer_coverage")
            trained = "fp32" if art.get("precision") == "fp32" else (art.get("notes") or {}).get("trained_bits") or qat.get("scheme", "?")
            rows.append([_swatch(art.get("precision")) + escape(_run_label(rep, many) + name), escape(art.get("target", "?")),
                         escape(str(trained)), escape(art.get("precision", "?")), _f(art.get("size_bytes", 0) / 1e6, "{:.3f}"),
                         _f(lat.get("p50_ms")), escape(host_spread(lat)) + (" " + _noisy(noisy, why) if noisy else "") if lat else "–",
                         _pct((e.get("vs_fp") or {}).get("top1_agreement")), _pct((e.get("vs_fake_quant") or {}).get("top1_agreement")),
                         _f((e.get("vs_fp") or {}).get("kl"), "{:.4f}"), _pct(e.get("accuracy")), _pct(cov.get("share")) if cov else "–",
                         _status(artifact_status(e)) if e else _status("not checked")])
    return ("<h2 id=\"artifacts\">Artifacts</h2>"
            + f'<p class="note"><span class="sw fp32"></span>FP32 twin · <span class="sw int"></span>integer artifact: the same two colours '
            "on every chart of this page.</p>"
            + _table(["artifact", "target", "trained", "deployed", "size MB", "host p50 ms", "spread", "agree FP", "agree FQ",
                      "KL vs FP", "real accuracy", "integer MACs", "status"], rows))


def bits_explanation(report: dict) -> list[str]:
    """Why each integer artifact's precision (its file name) differs from what QAT trained, in words."""
    qat = report.get("qat") or {}
    first_last = (qat.get("meta") or {}).get("first_last_bits")
    out = []
    for art in report.get("artifacts") or []:
        if art.get("precision") in (None, "fp32"):
            continue
        notes = art.get("notes") or {}
        trained = str(notes.get("trained_bits") or qat.get("scheme") or "not recorded")
        deployed = str(art["precision"])
        name = Path(art["path"]).name
        t, d = re.match(r"w(\d+)a(\d+)", trained), re.match(r"w(\d+)a(\d+)", deployed)
        why = []
        if notes.get("mode") == "ptq-calibrated":
            why.append("calibrated post-training on the held-out synthetic set (--tflite-calibrate): the runtime's own w8a8 grids, "
                       "not the ones QAT learned")
        elif t and d:
            tw, ta, dw, da = (int(x) for x in (*t.groups(), *d.groups()))
            if tw < 8:
                # weight_qmax is the widest layer's grid: with per-layer bits (8-bit layers in a W4 run) not the run's own
                qmax = 2 ** (tw - 1) - 1 if notes.get("layer_bits") else notes.get("weight_qmax") or 2 ** (tw - 1) - 1
                why.append(f"weights keep the trained {tw}-bit grid (integers within ±{qmax}) stored in int8 tensors: no CPU runtime "
                           "has a convolution kernel below 8 bits, so size and speed are those of int8")
            if ta < da:
                why.append(f"activations trained at {ta} bits run at {da} bits inside the clipping range QAT learned (no CPU runtime "
                           f"executes {ta}-bit activations); the {trained} figure is the fake-quant model's, and "
                           "\"agree FQ\" compares the artifact with it")
        if first_last:
            why.append(f"first and last layers at {first_last} bits (qat.first_last_bits)")
        if ((qat.get("meta") or {}).get("layer_patterns") or {}).get("layer_bits") and notes.get("layer_bits"):
            other = {layer: b for layer, b in notes["layer_bits"].items() if b != trained}
            why.append(f"per-layer bits (qat.layer_bits): {', '.join(f'{layer} {b}' for layer, b in other.items())}; every other "
                       f"quantized layer {trained}")
        if notes.get("float_layers"):
            islands, gate = notes["float_layers"], notes.get("integer_gate") or {}
            share, outside = sum(d.get("share") or 0 for d in islands), gate.get("measured_share_outside_float_layers")
            why.append(f"kept in float (qat.float_layers): {', '.join(d['name'] for d in islands)} ({share:.1%} of the MACs), each a "
                       "float op between a dequantize and a quantize; the integer gate required "
                       f"{gate.get('min_integer_coverage', 1.0):.0%} of the other MACs in integer"
                       + (f" (measured {outside:.1%})" if outside is not None else ""))
        if notes.get("weight_grid"):
            why.append(f"weight grid: {notes['weight_grid']}")
        head = f"{name}: trained {trained}, deployed {deployed}" + (" (as trained)" if trained == deployed else "")
        out.append(head + (": " + "; ".join(why) if why else ""))
    return out


def _bits(reports: list[dict], many: bool) -> str:
    items = [(rep, line) for rep in reports for line in bits_explanation(rep)]
    body = "".join(f"<li>{escape(_run_label(rep, many) + line)}</li>" for rep, line in items)
    return ("<h2 id=\"bits\">Trained vs deployed bits</h2>"
            + (f"<ul>{body}</ul>" if body else '<p class="note">No integer artifact.</p>')
            + '<p class="note">An integer artifact\'s file name is its deployed precision. docs/conversion.md §5 has the measurements '
              "behind these rules.</p>")


def _latency(reports: list[dict]) -> str:
    series = latency_series(reports)
    parts = ["<h2 id=\"latency\">Latency</h2>"]
    chart = svg.latency_boxes(series, "Latency per device, artifact and thread count")
    if not chart:
        return parts[0] + '<p class="note">No latency measured (run with the check stage\'s bench or pipeline bench).</p>'
    parts.append(chart)
    parts.append('<p class="note">Box p25–p75 (p50–p90 where only percentiles were kept), thick bar p50, tick p90, whiskers min–p99. '
                 "Spread = how far the trials' p50s are apart (max − min over their median); a figure is <b>noisy</b> when its "
                 "trials disagree by more than the limit, or when it comes from a single trial. Host numbers are this machine's, "
                 "never a device's.</p>")
    parts.append(_table(["where · artifact · threads", "p50 ms", "p90 ms", "p99 ms", "max ms", "spread", "steady?"],
                        [[escape(label), _f(st.get("p50")), _f(st.get("p90")), _f(st.get("p99")), _f(st.get("max")), escape(st["spread"]),
                          _noisy(st["noisy"], st["why"]) + (f' <span class="note">{escape(st["why"])}</span>' if st["noisy"] else "")]
                         for label, st in series]))
    return "".join(parts)


def _speedups(reports: list[dict], many: bool) -> str:
    ups = [(rep, s) for rep in reports for s in rep.get("speedups") or speedups(rep)]
    head = "<h2 id=\"speedup\">Integer vs FP32 speed-up</h2>"
    if not ups:
        return head + '<p class="note">No FP32/integer pair measured on the same runtime.</p>'
    items = [(f"{_run_label(rep, many)}{s['device']} · {s['runtime']} · {s['threads']}T", s["speedup"]) for rep, s in ups]
    colors = [svg.NOISY_COLOR if s.get("noisy") else svg.OTHER_COLOR for _, s in ups]
    notes = ["noisy" if s.get("noisy") else None for _, s in ups]
    return (head + svg.bar_chart(items, "p50(FP32) / p50(int): above 1× the integer artifact is faster", "speed-up (×)", colors,
                                 reference=1.0, value_fmt="{:.2f}×", notes=notes)
            + _table(["device · runtime · threads", "FP32 p50 ms", "int p50 ms", "speed-up", "steady?"],
                     [[escape(lbl), _f(s["fp32_p50_ms"]), _f(s["int_p50_ms"]), _f(s["speedup"], "{:.2f}×"),
                       _noisy(bool(s.get("noisy")), s.get("why")) + (f' <span class="note">{escape(s["why"])}</span>' if s.get("noisy") else "")]
                      for (lbl, _), (_, s) in zip(items, ups)])
            + '<p class="note">A ratio of a noisy figure (grey bar) is shown but is no speed-up: measure again on an idle machine, '
              "with more trials (pipeline bench --trials).</p>")


def _cold(reports: list[dict], many: bool) -> str:
    head = "<h2 id=\"cold\">Cold start and memory (devices)</h2>"
    rows = []
    for rep in reports:
        for dev in rep.get("devices") or []:
            for run in dev.get("runs", []):
                cs = run.get("cold_start") or {}

                def med(k: str) -> str:
                    v = cs.get(k) or {}
                    return _f(v.get("median"), "{:.1f}") + (f' <span class="note">({v["min"]:.1f}–{v["max"]:.1f})</span>'
                                                            if v.get("min") is not None and len(cs.get("runs") or []) > 1 else "")
                kb = [run.get("rss_init_kb"), run.get("rss_peak_kb"), cs.get("rss_peak_kb")]
                rows.append([escape(f"{_run_label(rep, many)}{device_label(dev)} · {dev['artifact']['name']} · {run['threads']}T"),
                             str(len(cs.get("runs") or [])), med("import_ms"), med("load_ms"), med("first_ms"),
                             *[_f(v / 1024 if v is not None else None, "{:.1f}") for v in kb]])
    if not rows:
        return head + '<p class="note">No device result: pipeline bench (or pipeline run --device) measures cold starts and memory.</p>'
    return (head + _table(["device · artifact · threads", "cold starts", "import ms", "load ms", "first inference ms",
                           "RSS before load MiB", "RSS peak (steady) MiB", "RSS peak (cold) MiB"], rows)
            + '<p class="note">Each cold start is a fresh process: import of the runtime, load (and compile) of the artifact, first '
              "inference; median (min–max). RSS = resident memory of the process.</p>")


def _sizes(reports: list[dict], many: bool) -> str:
    arts = [(rep, a) for rep in reports for a in sorted(rep.get("artifacts", []), key=lambda a: _pair_key(Path(a["path"]).name, a.get("precision")))]
    items = [(f"{_run_label(rep, many)}{Path(a['path']).name}", a.get("size_bytes", 0) / 1e6) for rep, a in arts]
    chart = svg.bar_chart(items, "Artifact size on disk", "MB", [svg.precision_color(a.get("precision")) for _, a in arts], value_fmt="{:.3f}")
    return "<h2 id=\"size\">Size</h2>" + (chart or '<p class="note">No artifacts.</p>')


def _accuracy(reports: list[dict], many: bool) -> str:
    rows = []
    for rep in reports:
        for name, e in sorted(((rep.get("check") or {}).get("artifacts") or {}).items(), key=lambda kv: _pair_key(kv[0], kv[1].get("precision"))):
            fq = e.get("vs_fake_quant") or {}
            rows.append([_swatch(e.get("precision")) + escape(_run_label(rep, many) + name), "host check", _pct(e["vs_fp"]["top1_agreement"]),
                         _pct(fq.get("top1_agreement")), _f(fq.get("max_abs_diff_lsb"), "{:.2f}"), _pct(e.get("accuracy")),
                         _status(artifact_status(e))])
        precisions = _precisions(rep)
        for dev in rep.get("devices") or []:
            ref = dev.get("reference") or {}
            kind_ = dev.get("reference_kind")
            rows.append([_swatch(precisions.get(dev["artifact"]["name"], "unknown")) + escape(_run_label(rep, many) + dev["artifact"]["name"]),
                         escape(device_label(dev)),
                         _pct(ref.get("top1_agreement")) if kind_ == "fp" else "–", _pct(ref.get("top1_agreement")) if kind_ == "fake_quant" else "–",
                         _f(ref.get("max_abs_diff_lsb"), "{:.2f}"), "–", _status(device_status(dev))])
    ev = next(((rep.get("check") or {}).get("eval_data") for rep in reports if (rep.get("check") or {}).get("eval_data")), None)
    parts = ["<h2 id=\"accuracy\">Accuracy and agreement</h2>",
             _table(["artifact", "where", "agree FP", "agree fake-quant", "max diff (LSB)", "real accuracy", "status"], rows, 2),
             '<p class="note">Agreement = top-1 agreement on the held-out synthetic set (never trained on); a device result '
             "compares the device's outputs with the expected outputs that travelled with the artifact. Status: the check gates "
             "(<b>pass</b>/<b>fail</b>; <b>not gated</b> when no gate applies) and the device check (<b>ok</b>/<b>mismatch</b>; "
             "<b>unchecked</b> when no reference travelled)."
             + (f" Real accuracy on {ev['images']} labelled images: FP {_pct(ev['fp_accuracy'])}, fake-quant {_pct(ev['fake_quant_accuracy'])}." if ev else "")
             + "</p>"]
    host_warnings = [(rep, w) for rep in reports for w in (rep.get("check") or {}).get("warnings") or []]
    if host_warnings:
        parts.append("<ul>" + "".join(f'<li class="flag">{escape(_run_label(rep, many))}host check · {escape(w)}</li>'
                                      for rep, w in host_warnings) + "</ul>")
    return "".join(parts)


def _per_class(reports: list[dict], many: bool) -> str:
    head = "<h2 id=\"per-class\">Per-class agreement (held-out synthetic set)</h2>"
    parts = []
    for rep in reports:
        arts = {n: e["per_class_agreement"] for n, e in ((rep.get("check") or {}).get("artifacts") or {}).items()
                if isinstance(e.get("per_class_agreement"), dict)}
        if not arts:
            continue
        names = sorted(arts, key=lambda n: _pair_key(n, "fp32" if ".fp32." in n else "int"))
        classes = next(iter(arts.values()))["classes"]
        images = next(iter(arts.values()))["images"]
        rows = []
        for i, c in enumerate(classes):
            if i < len(images) and images[i] == 0:
                continue
            cells = []
            for n in names:
                pc = arts[n]
                v = pc["agreement"][i] if i < len(pc.get("agreement") or []) else None
                low = v is not None and v == min((x for x in pc["agreement"] if x is not None), default=None) and v < 1.0
                cells.append(f'<b class="flag">{_pct(v)}</b>' if low else _pct(v))
            rows.append([str(c), str(images[i]) if i < len(images) else "–", *cells])
        empty = [str(c) for c, n in zip(classes, images) if n == 0]
        parts.append((f"<p>{escape(_run_name(rep))}</p>" if many else "")
                     + _table(["class (FP top-1)", "images", *names], rows, 1, "per-class")
                     + (f'<p class="note">Classes the FP model predicts for none of these images: {escape(", ".join(empty))}.</p>' if empty else ""))
    if not parts:
        return head + '<p class="note">No per-class figures in check.json (re-run the check stage: pipeline run --from check).</p>'
    return head + "".join(parts) + ('<p class="note">Images of the held-out synthetic set grouped by the FP model\'s top-1 class; '
                                    "agreement = share whose top-1 the artifact keeps. The lowest class of each artifact is marked.</p>")


def _sqnr(reports: list[dict], many: bool) -> str:
    parts = ["<h2 id=\"sqnr\">Per-layer quantization error</h2>"]
    for rep in reports:
        layers = (rep.get("check") or {}).get("layers") or []
        chart = svg.line_chart([(row["name"], row["sqnr_db"]) for row in layers],
                               f"{_run_label(rep, many)}SQNR of each conv/linear output vs the FP model (higher is better)", "SQNR (dB)")
        parts.append(chart or '<p class="note">No per-layer data (re-run the check stage: pipeline run --from check).</p>')
    return "".join(parts)


def _qat(reports: list[dict], many: bool) -> str:
    parts = ["<h2 id=\"qat\">Quantization-aware training</h2>"]
    for rep in reports:
        qat = rep.get("qat") or {}
        curve = qat.get("loss_curve") or []
        if not qat:
            parts.append(f'<p class="note">{escape(_run_label(rep, many))}No QAT record (qat/qat.json).</p>')
            continue
        stride = max(1, int(qat.get("steps") or len(curve)) // 100)  # the QAT stage keeps every (steps // 100)-th step's loss
        parts.append(f"<p>{escape(_run_label(rep, many))}{escape(str(qat.get('scheme', '?')))} with {escape(str(qat.get('method', '?')))}: "
                     f"{qat.get('steps', '?')} steps in {_f(qat.get('seconds'), '{:.1f}')} s; top-1 agreement with FP on the held-out set "
                     f"{_pct(qat.get('holdout_agreement_after_init'))} after range init → <b>{_pct(qat.get('holdout_agreement_after_qat'))}</b> "
                     f"after QAT; loss {_f(qat.get('loss_first'), '{:.4g}')} → {_f(qat.get('loss_last'), '{:.4g}')}.</p>")
        chart = svg.line_chart([(f"step {i * stride}", v) for i, v in enumerate(curve)],
                               f"{_run_label(rep, many)}QAT loss (" + (f"every {stride}th step)" if stride > 1 else "every step)"), "loss",
                               value_fmt="{:.3g}") if len(curve) > 1 else ""
        parts.append(chart or "")
    return "".join(parts)


def _stages(reports: list[dict], many: bool) -> str:
    parts = ["<h2 id=\"stages\">Stage timings</h2>"]
    items, rows = [], []
    for rep in reports:
        for name, st in ((rep.get("manifest") or {}).get("stages") or {}).items():
            if not isinstance(st, dict):
                continue
            items.append((f"{_run_label(rep, many)}{name}", float(st.get("seconds") or 0.0)))
            ran = st.get("ran_on") or {}
            rows.append([escape(_run_label(rep, many) + name), _f(st.get("seconds"), "{:.2f}"), escape(str(st.get("finished", "–"))),
                         escape(", ".join(str(ran[k]) for k in ("accelerator", "precision") if ran.get(k)) or "–")])
    if not items:
        return parts[0] + '<p class="note">No stage timings (manifest.json records them as each stage finishes).</p>'
    parts.append(svg.bar_chart(items, "Seconds per stage (as last run; a cached stage keeps its time)", "s", value_fmt="{:.1f}"))
    parts.append(_table(["stage", "seconds", "finished", "ran on"], rows))
    return "".join(parts)


def _across(reports: list[dict]) -> str:
    rows = compare.rows(reports)
    quality = compare.quality_key(rows)
    qlabel = "real accuracy" if quality == "accuracy" else "top-1 agreement with FP (held-out synthetic)"

    def short(r: dict) -> str:
        return f"{Path(r['run']).name} · {r['precision']}"

    bit_pts = [r for r in rows if r["bits"] is not None and r[quality] is not None]
    on_front = compare.pareto([(float(r["bits"]), r[quality]) for r in bit_pts])
    bits = svg.scatter([{"label": short(r), "x": r["bits"], "y": r[quality], "color": svg.precision_color(r["precision"]),
                         "pareto": i in on_front} for i, r in enumerate(bit_pts)],
                       f"{qlabel} vs weight bits", "weight bits (trained; FP32 = 32)", qlabel, x_fmt="{:.0f}", log_x=True,
                       x_ticks=sorted({float(r["bits"]) for r in bit_pts}))
    lat = svg.scatter([{"label": short(r), "x": r["p50_ms"], "y": r[quality], "color": svg.precision_color(r["precision"]),
                        "pareto": r["pareto"], "noisy": r["noisy"]} for r in rows],
                      f"{qlabel} vs host p50 latency", "host p50 latency (ms)", qlabel, x_fmt="{:.3f}")
    table = _table(["run", "artifact", "precision", "bits", "size MB", qlabel, "host p50 ms", "steady?", "status", "Pareto (latency)"],
                   [[escape(r["run"]), escape(r["artifact"]), escape(str(r["precision"])), _f(r["bits"], "{}"),
                     _f((r["size_bytes"] or 0) / 1e6), _pct(r[quality]), _f(r["p50_ms"]),
                     _noisy(bool(r["noisy"]), None) if r["noisy"] is not None else "–", _status(r["status"]),
                     "<b>yes</b>" if r["pareto"] else "no"] for r in rows], 2, "runs")
    return ("<h2 id=\"across\">Across runs</h2>"
            + (bits or '<p class="note">No run has both bits and a quality figure.</p>')
            + (lat or '<p class="note">No host latency measured (runs made with --no-bench).</p>')
            + '<p class="note">Filled, ringed points joined by the dashed line are the Pareto front (no other artifact is both at least '
              "as good and better in one); hollow points are dominated; a dashed ring marks a noisy latency. The same rows: "
              "<code>pipeline report RUN... --format md|csv|json</code>.</p>" + table)


def render(reports: list[dict], title: str | None = None, command: str | None = None) -> str:
    """The page for one run or a comparison; ``command`` (``pipeline run``, ``pipeline report``...) is named in the footer."""
    many = len(reports) > 1
    title = title or title_of(reports)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style></head><body>",
             f"<h1>{escape(title)}</h1>"]
    parts += [f'<p class="run">{escape(_run_label(rep, many))}{_summary(rep)}</p>' for rep in reports]
    parts.append(_gates(reports, many))
    parts.append(_artifacts(reports, many))
    parts.append(_bits(reports, many))
    parts.append(_latency(reports))
    parts.append(_speedups(reports, many))
    parts.append(slowest_ops(reports, many))
    parts.append(_cold(reports, many))
    parts.append(_sizes(reports, many))
    parts.append(_accuracy(reports, many))
    parts.append(accelerator_choices(reports, many))
    parts.append(_per_class(reports, many))
    parts.append(_sqnr(reports, many))
    parts.append(worst_layers(reports, many))
    parts.append(_qat(reports, many))
    parts.append(_stages(reports, many))
    if many:
        parts.append(_across(reports))

    left_out = [(rep, line) for rep in reports for line in device_results_left_out(rep)]
    if left_out:
        parts.append("<h2 id=\"left-out\">Device results left out</h2><ul>" + "".join(
            f'<li class="flag">{escape(_run_label(rep, many) + line)}</li>' for rep, line in left_out) + "</ul>")

    devs = [(rep, d) for rep in reports for d in rep.get("devices") or []]
    if devs:
        parts.append("<h2 id=\"devices\">Devices and environment</h2>")
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
        flags = [(rep, d, f) for rep, d in devs for f in d.get("flags", [])]
        if flags:
            parts.append("<ul>" + "".join(f'<li class="flag">{escape(_run_label(rep, many) + device_label(d))} · '
                                          f'{escape(d["artifact"]["name"])}: {escape(f)}</li>' for rep, d, f in flags) + "</ul>")
    by = f"<code>{escape(command)}</code>" if command else "zsq-edge"
    parts.append(f'<footer class="note">Generated {time.strftime("%Y-%m-%d %H:%M:%S")} by {by}. '
                 "Host numbers are this machine's, never a proxy for a device. docs/report.md explains every section.</footer>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(path: Path, reports: list[dict], title: str | None = None, command: str | None = None) -> Path:
    from runtimes.atomic import write_text

    return write_text(Path(path), render(reports, title, command))
