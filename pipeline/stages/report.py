"""Stage 5: ``report.json`` (everything a reader or a CI gate needs), ``report.html`` and the end-of-run summary table.

``report.json`` follows the schema documented in :mod:`pipeline.reporting.schema`;
``report.html`` is one self-contained page with the plots (:mod:`pipeline.reporting.html`).
Device results written by ``pipeline bench`` / ``pipeline run --device`` into
``bench/results/<device>/`` are part of both, when they are valid (:func:`devices.results.read`)
and measured the artifact now in the run folder (same sha256); the others are listed, with the
reason, as ``devices_invalid`` and ``devices_stale`` and their figures stay out of every table.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.layout import RunLayout
from pipeline.runner import RunContext, write_json

SCHEMA_VERSION = 3  # 3: gates, exit_status, statuses, latency spread and noise, speed-up noise flags


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def device_results(run_dir: Path, artifacts: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """This run's ``pipeline bench`` results: (current, stale, invalid). Timed samples stay in the result files.

    Current: valid and of an artifact of this export, byte for byte (``artifacts`` is export.json's list).
    Stale: of an artifact the export no longer has, or has since changed (another ``--bits``, a re-export).
    Invalid: unreadable, not JSON or not following ``zsq.bench/1``; one bad file must not stop the report.
    """
    from devices.results import InvalidResult, read, stale_reason

    from pipeline.reporting.status import device_status

    exported = {Path(a["path"]).name: run_dir / a["path"] for a in artifacts if isinstance(a, dict) and isinstance(a.get("path"), str)}
    digests: dict[Path, dict[str, str]] = {}
    current, stale, invalid = [], [], []
    for path in sorted(RunLayout(run_dir).bench_results.glob("*/*.json")):
        rel = str(path.relative_to(run_dir))
        try:
            r = read(path)
        except InvalidResult as exc:
            invalid.append({"result_file": rel, "reason": str(exc)})
            continue
        name = r["artifact"]["name"]
        why = stale_reason(r, exported.get(name), digests)
        if why:
            stale.append({"result_file": rel, "device": r["device"]["name"], "artifact": name, "reason": why})
            continue
        for run in r["runs"]:
            for trial in run.get("trials", []):
                trial.pop("samples_ms", None)
        r["result_file"] = rel
        r["status"] = device_status(r)  # an older agent wrote "ok" for a result it compared with nothing: "unchecked"
        current.append(r)
    return current, stale, invalid


def build_report(run_dir: Path) -> dict:
    """Everything a reader or a CI gate needs, from what is on disk now; ``gates`` and ``exit_status`` say what the run
    passed and which exit status that implies (the same one ``pipeline run`` and ``pipeline report`` exit with)."""
    from pipeline.gates import report_gates
    from pipeline.reporting.status import speedups

    lay = RunLayout(run_dir)
    export = _load(lay.export_index)
    check = _load(lay.check_result)
    devices, stale, invalid = device_results(run_dir, export.get("artifacts", []))
    report = {
        "schema_version": SCHEMA_VERSION,
        "run_dir": str(run_dir),
        "config": _load(lay.config),
        "model_card": export.get("card"),
        "manifest": _load(lay.manifest),
        "qat": _load(lay.qat_metrics),
        "artifacts": export.get("artifacts", []),
        "check": check,
        "devices": devices,
        "devices_stale": stale,
        "devices_invalid": invalid,
    }
    report["speedups"] = speedups(report)
    report["gates"] = report_gates(report)
    report["exit_status"] = report["gates"]["exit_status"]
    return report


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def gate_lines(report: dict) -> list[str]:
    """The gates in words, one line per failed or unchecked rule and one for the verdict (what the exit status will be)."""
    from pipeline.reporting.html import EXIT_MEANING

    gates = report.get("gates") or {}
    lines = []
    for r in gates.get("rules") or []:
        if r.get("gate") == "device":
            if r.get("status") != "ok":
                lines.append(f"gate device check: {r.get('artifact')} on {r.get('device')}: {r.get('status')}"
                             + (" (no reference outputs travelled: nothing compared)" if r.get("status") == "unchecked" else ""))
        else:
            lines.append(f"gate {r.get('gate')}: {r.get('artifact')} {_pct(r.get('value'))} "
                         f"{'<=' if r.get('gate') == 'max_accuracy_drop' else '>='} {_pct(r.get('threshold'))}: "
                         f"{'pass' if r.get('passed') else 'FAIL'}" + (f" ({r['measured_on']})" if r.get("measured_on") else ""))
    code = report.get("exit_status", 0)
    configured = any(v is not None for v in (gates.get("configured") or {}).values())
    lines.append(f"gates: {'passed' if gates.get('passed', True) else 'FAILED'}, exit status {code} ({EXIT_MEANING.get(code, 'see docs/cli.md')})"
                 + ("" if configured else "; no quality gate configured (check.min_agreement, check.max_accuracy_drop)"))
    return lines


def summary(report: dict) -> str:
    from pipeline.reporting.html import bits_explanation, device_label, device_results_left_out
    from pipeline.reporting.status import artifact_status, device_noise, device_spread, host_noise, host_spread

    cfg = report.get("config", {}).get("_data", {})
    card = report.get("model_card") or {}
    qat = report.get("qat") or {}
    check = report.get("check") or {}
    lines = [f"zsq-edge run {report['run_dir']}: model {card.get('name', '?')}, {qat.get('scheme', '?')} ({qat.get('profile', '?')} profile), "
             f"method {cfg.get('synthesis', {}).get('method', '?')}"]
    if qat.get("weight_grid"):
        lines.append(f"weight grid: {qat['weight_grid']} (qat.overflow_fix={qat.get('overflow_fix', '?')})")
    ev = check.get("eval_data")
    header = f"{'artifact':<28}{'runtime':<13}{'size':>10}{'p50 ms':>9}{'p90 ms':>9}{'agree FP':>10}{'agree FQ':>10}{'KL vs FP':>10}"
    header += f"{'real acc':>10}" if ev else ""
    header += f"  {'status':<10}latency spread"
    lines += [header, "-" * len(header)]
    for name, e in (check.get("artifacts") or {}).items():
        lat = e.get("latency") or {}
        noisy, why = host_noise(lat)
        row = (f"{name:<28}{e['runtime']:<13}{_mb(e['size_bytes']):>10}{lat.get('p50_ms', float('nan')):>9.3f}{lat.get('p90_ms', float('nan')):>9.3f}"
               f"{_pct(e['vs_fp']['top1_agreement']):>10}{_pct((e.get('vs_fake_quant') or {}).get('top1_agreement')):>10}{e['vs_fp']['kl']:>10.4f}")
        row += f"{_pct(e.get('accuracy')):>10}" if ev else ""
        row += f"  {artifact_status(e):<10}" + (host_spread(lat) + (f" NOISY: {why}" if noisy else "") if lat else "-")
        lines.append(row)
    if ev:
        lines.append(f"real data: {ev['images']} images from {ev['source']}: FP {_pct(ev['fp_accuracy'])}, fake-quant {_pct(ev['fake_quant_accuracy'])}")
    hold = check.get("holdout")
    if hold:
        lines.append(f"held-out synthetic set: {hold['images']} images (seed {hold['seed']}); fake-quant vs FP agreement "
                     f"{_pct(hold['fake_quant_vs_fp']['top1_agreement'])}")
    lines += [f"bits {line}" for line in bits_explanation(report) if "(as trained)" not in line and "not recorded" not in line]
    for art in report.get("artifacts", []):
        cov = art.get("integer_coverage")
        if cov:
            kernels = ", ".join(f"{v} {k}" for k, v in sorted(cov["int_kernels"].items()) if k not in ("QuantizeLinear", "DequantizeLinear"))
            lines.append(f"integer coverage {art['path']}: {cov['share'] * 100:.1f}% of MACs on {cov['runtime']} ({kernels})")
    from pipeline.accelerators import summary_lines as accelerator_lines

    lines += accelerator_lines(check)  # each non-default accelerator choice checked: what ran, agreement, integer share
    for w in check.get("warnings") or []:
        lines.append(f"warning (host check): {w}")
    for d in report.get("devices") or []:
        for r in d["runs"]:
            s = r["steady"]
            p50 = s.get("p50_ms")
            emulated = " [emulated CPU: not a device figure]" if d.get("latency_source") == "emulated" else ""
            p90 = "-" if s.get("p90_ms") is None else f"{s['p90_ms']:.3f}"  # benchmark_model prints p50 but no p90
            noisy, _ = device_noise(r)
            cold = (r.get("cold_start") or {}).get("load_ms") or {}
            lines.append(f"device {device_label(d)}: {d['artifact']['name']} {r['threads']}T "
                         + (f"p50 {p50:.3f} ms p90 {p90} ms" if p50 is not None else f"mean {s['mean_ms']:.3f} ms")
                         + f", {device_spread(r)}{' NOISY' if noisy else ''}"
                         + (f", cold load {cold['median']:.1f} ms" if cold.get("median") is not None else "")
                         + (f", peak RSS {r['rss_peak_kb'] / 1024:.1f} MiB" if r.get("rss_peak_kb") else "")
                         + f", status {d['status']}{emulated}")
        for flag in d.get("flags", []):
            if "saturate" in flag:
                lines.append(f"device {device_label(d)}: {d['artifact']['name']}: warning: {flag}")
    lines += device_results_left_out(report)
    for s in report.get("speedups") or []:
        lines.append(f"int vs FP32 on {s['device']} ({s['runtime']}, {s['threads']}T): {s['speedup']:.2f}x "
                     f"({s['fp32_p50_ms']:.3f} → {s['int_p50_ms']:.3f} ms p50)"
                     + (f" NOISY, not a speed-up to quote: {s['why']}" if s.get("noisy") else ""))
    from pipeline.reporting.layers import summary_lines

    lines += summary_lines(report)  # the worst layers and the --layer-bits flags that keep them at 8 bits
    from pipeline.reporting.ops import summary_lines as slowest_ops

    lines += slowest_ops(report)  # per artifact and place, what its runtime's profiler says takes the time
    lines += gate_lines(report)
    return "\n".join(lines)


def write_outputs(run_dir: Path, command: str | None = None) -> dict:
    """``report.json`` and ``report.html`` of a run folder, from what is on disk now; ``command`` (what is writing them:
    ``pipeline run``, ``pipeline report``) is named on the page."""
    from pipeline.reporting import write_html

    report = build_report(run_dir)
    write_json(RunLayout(run_dir).report_json, report)
    write_html(RunLayout(run_dir).report_html, [report], command=command)
    return report


def run(ctx: RunContext) -> None:
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    write_outputs(ctx.run_dir, command="pipeline run")  # only `pipeline run` runs the report stage


def outputs(ctx: RunContext) -> list[Path]:
    return [ctx.layout.report_json, ctx.layout.report_html]
