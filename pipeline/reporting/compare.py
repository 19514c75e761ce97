"""Across runs: one flat row per run × artifact (``pipeline report --format md|csv|json``) and the Pareto fronts.

The rows are what a PR comment or a spreadsheet needs and nothing nested: which run and model, how it was
quantized, the artifact and where it runs, its size, agreement, real accuracy, host latency with its spread
and noise flag, and the gate status. The same rows feed the comparison page's two Pareto views (accuracy
vs bits, latency vs accuracy), so a row's ``pareto`` flag and the page's marks never disagree.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from pipeline.reporting.status import artifact_status, host_noise

FORMATS = ("md", "csv", "json")
COLUMNS = ["run", "model", "method", "scheme", "artifact", "runtime", "precision", "bits", "size_bytes", "agreement", "accuracy",
           "p50_ms", "spread", "cv", "noisy", "status", "pareto"]


def trained_weight_bits(report: dict) -> int | None:
    """The weight bits the run trained (``w4a4`` → 4), from qat.json or the config."""
    scheme = (report.get("qat") or {}).get("scheme") or (((report.get("config") or {}).get("_data") or {}).get("qat") or {}).get("bits")
    m = re.match(r"w(\d+)a(\d+)", str(scheme or ""))
    return int(m.group(1)) if m else None


def rows(reports: list[dict]) -> list[dict]:
    """One row per run × artifact (the export's artifacts, else the checked ones), ``pareto`` on latency vs quality."""
    out = []
    for rep in reports:
        cfg = (rep.get("config") or {}).get("_data") or {}
        qat = rep.get("qat") or {}
        checked = (rep.get("check") or {}).get("artifacts") or {}
        arts = [(Path(a["path"]).name, a) for a in rep.get("artifacts") or []] or [(n, {"precision": e.get("precision")}) for n, e in checked.items()]
        for name, art in arts:
            e = checked.get(name) or {}
            lat = e.get("latency") or {}
            noisy, _ = host_noise(lat)
            precision = art.get("precision") or e.get("precision")
            out.append({
                "run": str(rep.get("run_dir", "?")), "model": (rep.get("model_card") or {}).get("name"),
                "method": qat.get("method") or (cfg.get("synthesis") or {}).get("method"),
                "scheme": qat.get("scheme") or (cfg.get("qat") or {}).get("bits"), "artifact": name,
                "runtime": e.get("runtime"), "precision": precision,
                "bits": 32 if precision == "fp32" else trained_weight_bits(rep),
                "size_bytes": art.get("size_bytes", e.get("size_bytes")),
                "agreement": (e.get("vs_fp") or {}).get("top1_agreement"), "accuracy": e.get("accuracy"),
                "p50_ms": lat.get("p50_ms"), "spread": lat.get("spread") if int(lat.get("trials") or 1) >= 2 else None,
                "cv": lat.get("cv"), "noisy": noisy if lat else None, "status": artifact_status(e) if e else "not checked", "pareto": False,
            })
    quality = quality_key(out)
    for i in pareto([(r["p50_ms"], r[quality]) for r in out]):
        out[i]["pareto"] = True
    return out


def quality_key(rows_: list[dict]) -> str:
    """``accuracy`` (real labelled data) when every row has it, else ``agreement`` (top-1 with FP, held-out synthetic)."""
    return "accuracy" if rows_ and all(r.get("accuracy") is not None for r in rows_) else "agreement"


def pareto(points: list[tuple[float | None, float | None]]) -> set[int]:
    """Indices of the non-dominated points, each (cost, quality): lower cost and higher quality are better.

    A point is dominated when another is no worse in both and better in one; points missing either value are
    never on the front.
    """
    ok = [(i, c, q) for i, (c, q) in enumerate(points) if c is not None and q is not None]
    return {i for i, c, q in ok
            if not any((c2 <= c and q2 >= q) and (c2 < c or q2 > q) for j, c2, q2 in ok if j != i)}


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_rows(table: list[dict], fmt: str) -> str:
    """The rows as a Markdown table (PR comments), CSV (spreadsheets) or a JSON list (scripts)."""
    if fmt == "json":
        return json.dumps(table, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in table:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in COLUMNS})
        return buf.getvalue().rstrip("\n")
    if fmt == "md":
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
        lines += ["| " + " | ".join(_cell(r[k]).replace("|", "\\|") for k in COLUMNS) + " |" for r in table]
        return "\n".join(lines)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
