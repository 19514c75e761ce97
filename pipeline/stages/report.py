"""Stage 5: ``report.json`` (everything a reader or a CI gate needs) and the end-of-run summary table."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.runner import MANIFEST, RunContext, write_json

REPORT = "report.json"
SCHEMA_VERSION = 1


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def build_report(run_dir: Path) -> dict:
    export = _load(run_dir / "export.json")
    check = _load(run_dir / "check.json")
    return {
        "schema_version": SCHEMA_VERSION,
        "run_dir": str(run_dir),
        "config": _load(run_dir / "config.json"),
        "model_card": export.get("card"),
        "manifest": _load(run_dir / MANIFEST),
        "qat": _load(run_dir / "qat" / "qat.json"),
        "artifacts": export.get("artifacts", []),
        "check": check,
    }


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def summary(report: dict) -> str:
    cfg = report.get("config", {}).get("_data", {})
    card = report.get("model_card") or {}
    qat = report.get("qat") or {}
    check = report.get("check") or {}
    lines = [f"zsq-edge run {report['run_dir']}: model {card.get('name', '?')}, {qat.get('scheme', '?')} ({qat.get('profile', '?')} profile), "
             f"method {cfg.get('synthesis', {}).get('method', '?')}"]
    ev = check.get("eval_data")
    header = f"{'artifact':<28}{'runtime':<13}{'size':>10}{'p50 ms':>9}{'p90 ms':>9}{'agree FP':>10}{'agree FQ':>10}{'KL vs FP':>10}"
    header += f"{'real acc':>10}" if ev else ""
    lines += [header, "-" * len(header)]
    for name, e in (check.get("artifacts") or {}).items():
        lat = e.get("latency") or {}
        row = (f"{name:<28}{e['runtime']:<13}{_mb(e['size_bytes']):>10}{lat.get('p50_ms', float('nan')):>9.3f}{lat.get('p90_ms', float('nan')):>9.3f}"
               f"{_pct(e['vs_fp']['top1_agreement']):>10}{_pct((e.get('vs_fake_quant') or {}).get('top1_agreement')):>10}{e['vs_fp']['kl']:>10.4f}")
        row += f"{_pct(e.get('accuracy')):>10}" if ev else ""
        lines.append(row)
    if ev:
        lines.append(f"real data: {ev['images']} images from {ev['source']}: FP {_pct(ev['fp_accuracy'])}, fake-quant {_pct(ev['fake_quant_accuracy'])}")
    hold = check.get("holdout")
    if hold:
        lines.append(f"held-out synthetic set: {hold['images']} images (seed {hold['seed']}); fake-quant vs FP agreement "
                     f"{_pct(hold['fake_quant_vs_fp']['top1_agreement'])}")
    for art in report.get("artifacts", []):
        cov = art.get("integer_coverage")
        if cov:
            kernels = ", ".join(f"{v} {k}" for k, v in sorted(cov["int_kernels"].items()) if k not in ("QuantizeLinear", "DequantizeLinear"))
            lines.append(f"integer coverage {art['path']}: {cov['share'] * 100:.1f}% of MACs on {cov['runtime']} ({kernels})")
    return "\n".join(lines)


def run(ctx: RunContext) -> None:
    report = build_report(ctx.run_dir)
    write_json(ctx.path(REPORT), report)


def outputs(ctx: RunContext) -> list[Path]:
    return [ctx.run_dir / REPORT]
