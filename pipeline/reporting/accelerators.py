"""The "Accelerators" section: per artifact, each accelerator choice it was checked on, what ran, and whether it still agrees.

The figures are the check stage's (``check.accelerators``, pipeline/accelerators.py): per choice, what the
runtime says executed (ORT's providers, OpenVINO's ``EXECUTION_DEVICES``, LiteRT's delegate partitions), the
share of MACs in integer kernels as that choice executes the artifact and the export's integer gate judged on
it, and agreement with the fake-quant model (top-1 and the largest output difference, in output LSBs at an
integer edge). The runtime's default path is the first row of each table, from the same check, so a choice
reads against it. Device results benched on a choice (``pipeline bench --runtime-accelerator``) follow.
Nothing is computed here: every number is read from ``check.json`` or a device result.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from pipeline.reporting.status import device_label

HEAD = ["choice", "runs on", "integer MACs", "integer gate", "agree FQ", "max diff vs FQ", "agree FP", "max diff vs default"]


def _pct(v) -> str:
    return "–" if v is None else f"{v:.2%}"


def _diff(m: dict | None) -> str:
    if not m:
        return "–"
    if m.get("max_abs_diff_lsb") is not None:
        return f"{m['max_abs_diff_lsb']:.3g} LSB"
    return f"{m['max_abs_diff']:.3g}"


def _gate(g: dict | None) -> str:
    if not g:
        return "–"
    word = "pass" if g.get("passed") else "fail"
    title = escape(g.get("reason") or f"≥ {g.get('min_integer_coverage', 1.0):.0%} of MACs in integer")
    return f'<span class="status {"ok" if g.get("passed") else "bad"}" title="{title}">{word}</span>'


def _cov(c: dict | None) -> str:
    if not c:
        return "–"
    from runtimes.coverage import percent

    extra = ""
    if c.get("executed_by"):
        extra = " (" + ", ".join(f"{n} on {p}" for p, n in c["executed_by"].items()) + ")"
    elif c.get("delegate") is not None or "ops_builtin" in c:
        extra = f" ({c.get('ops_delegated', 0)} ops delegated, {c.get('ops_builtin', 0)} built-in)"
    return escape(percent(c.get("share") or 0.0) + extra)


def rows(report: dict) -> dict[str, list[list[str]]]:
    """Per artifact with a non-default choice: the table rows (default path first)."""
    from runtimes.accelerators import DEFAULTS

    export = {Path(a["path"]).name: a for a in report.get("artifacts") or [] if isinstance(a, dict) and "path" in a}
    out: dict[str, list[list[str]]] = {}
    for name, e in ((report.get("check") or {}).get("artifacts") or {}).items():
        chosen = e.get("accelerators") or {}
        if not chosen:
            continue
        default = f"{e.get('runtime')}:{DEFAULTS.get(e.get('runtime'), '?')}"
        integer = e.get("precision") != "fp32"
        table = [[escape(default) + " <span class=\"note\">(default)</span>", "default path",
                  _cov((export.get(name) or {}).get("integer_coverage")), "export gate" if integer else "–",
                  _pct((e.get("vs_fake_quant") or {}).get("top1_agreement")), _diff(e.get("vs_fake_quant")),
                  _pct((e.get("vs_fp") or {}).get("top1_agreement")), "–"]]
        for key, a in chosen.items():
            table.append([escape(key), escape(", ".join(a.get("executes_on") or ["?"])), _cov(a.get("integer_coverage")),
                          _gate(a.get("integer_gate")), _pct((a.get("vs_fake_quant") or {}).get("top1_agreement")),
                          _diff(a.get("vs_fake_quant")), _pct((a.get("vs_fp") or {}).get("top1_agreement")), _diff(a.get("vs_default"))])
        out[name] = table
    return out


def device_rows(report: dict) -> list[list[str]]:
    """Device results benched on a non-default choice: where, artifact, choice, what ran, coverage, agreement."""
    out = []
    for d in report.get("devices") or []:
        if not d.get("accelerator"):
            continue
        ref = d.get("reference") or {}
        out.append([escape(device_label(d)), escape(d["artifact"]["name"]), escape(d["accelerator"]),
                    escape(", ".join((d.get("kernels") or {}).get("executes_on") or ["?"])), _cov(d.get("integer_coverage")),
                    _pct(ref.get("top1_agreement")), _diff(ref), escape(str(d.get("status")))])
    return out


def section(reports: list[dict], many: bool) -> str:
    """The section, or nothing when no run checked a choice other than the default paths."""
    from pipeline.reporting.html import _run_label, _table  # the page's own table helper (imported late: html imports this)

    parts = []
    for rep in reports:
        for name, table in rows(rep).items():
            parts.append(f"<p><b>{escape(_run_label(rep, many) + name)}</b></p>" + _table(HEAD, table, 2, "accelerators"))
        dev = device_rows(rep)
        if dev:
            parts.append(f"<p><b>{escape(_run_label(rep, many))}devices benched on a choice</b></p>"
                         + _table(["device", "artifact", "choice", "runs on", "integer MACs", "agreement", "max diff", "status"], dev, 4))
    if not parts:
        return ""
    return ("<h2 id=\"accelerators\">Accelerators</h2>"
            + '<p class="note">Each artifact checked again on the accelerator choices asked for (check.accelerators, '
              "--runtime-accelerator), in the runtime's own words. <i>runs on</i> is what the runtime reports executing; "
              "integer MACs are read from the runtime as that choice executes the artifact, and the export's integer gate is "
              "judged on them (a choice that computes in float fails it); agreement and differences are on the held-out "
              "synthetic set, vs the fake-quant model (FQ), the FP model and the runtime's default path. "
              "docs/accelerators.md says what each choice is.</p>" + "".join(parts))
