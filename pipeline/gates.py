"""Quality gates: what a CI job can fail a run on, judged from what the check stage and the devices measured.

Two thresholds in the ``check`` section (None: not gated), judged for every integer artifact
(precision other than fp32; the FP32 twins are the reference, not a deliverable):

* ``check.min_agreement``: top-1 agreement of the artifact with the FP model, at least this. Measured on the
  real ``--eval-data`` when the run has it, else on the held-out synthetic set (a rule's ``measured_on`` says
  which): the user's own images are the better witness when there are any.
* ``check.max_accuracy_drop``: FP accuracy minus the artifact's accuracy on ``--eval-data``, at most this
  (absolute: 0.01 is one point). It needs labelled data; the preflight refuses it without ``--eval-data``.

:func:`evaluate` makes the check stage's ``gates`` block (``check.json``), :func:`statuses` the per-artifact
``status``; :func:`report_gates` adds one rule per device result (a ``mismatch`` fails, ``unchecked`` does
not) for ``report.json`` with the exit status the rules imply (:mod:`pipeline.cli.exits`: 5 for a quality
gate, before 7 for a device mismatch, else 0); :func:`failure_lines` says what failed, one line per rule.
Every function here is pure: dicts in, dicts out.
"""

from __future__ import annotations

from typing import Any

from pipeline.cli import exits

GATES = ("min_agreement", "max_accuracy_drop")  # the check section's threshold fields; nothing the check measures depends on them
_DIGITS = 6  # values are shares of N images (k/N): compared at this precision, so 0.002 drop is within a 0.002 threshold


def _words(ev: dict | None, holdout: dict | None) -> tuple[str, str]:
    """(the data an agreement rule is measured on, in words; the same for an accuracy rule)."""
    synthetic = f"the held-out synthetic set ({(holdout or {}).get('images', '?')} images)"
    if not ev:
        return synthetic, "no --eval-data"
    real = f"--eval-data {ev.get('source', '?')} ({ev.get('images', '?')} images)"
    return real, real


def _rule(gate: str, artifact: str, threshold: float, value: float | None, on: str) -> dict:
    if value is not None:
        value = round(float(value), _DIGITS)
    passed = value is not None and (value >= threshold if gate == "min_agreement" else value <= threshold)
    return {"gate": gate, "artifact": artifact, "threshold": threshold, "value": value, "passed": bool(passed), "measured_on": on}


def evaluate(check_result: dict, check_cfg: Any) -> dict:
    """The ``gates`` block of ``check.json``: the configured thresholds and one rule per integer artifact and gate.

    ``check_result`` is the check stage's record (``artifacts``, ``eval_data``, ``holdout``); ``check_cfg`` anything
    with the :data:`GATES` attributes (:class:`pipeline.config.CheckConfig`). A rule whose value is missing fails.
    """
    configured = {g: getattr(check_cfg, g, None) for g in GATES}
    ev = check_result.get("eval_data")
    agree_on, acc_on = _words(ev, check_result.get("holdout"))
    rules = []
    for name, e in (check_result.get("artifacts") or {}).items():
        if e.get("precision") == "fp32":
            continue
        if configured["min_agreement"] is not None:
            vs = e.get("vs_fp_eval_data") if ev else e.get("vs_fp")
            rules.append(_rule("min_agreement", name, configured["min_agreement"], (vs or {}).get("top1_agreement"), agree_on))
        if configured["max_accuracy_drop"] is not None:
            drop = ev["fp_accuracy"] - e["accuracy"] if ev and e.get("accuracy") is not None else None
            rules.append(_rule("max_accuracy_drop", name, configured["max_accuracy_drop"], drop, acc_on))
    return {"passed": all(r["passed"] for r in rules), "configured": configured, "rules": rules}


def statuses(gates: dict, artifacts: list[str]) -> dict[str, str]:
    """Each artifact's ``status``: ``fail`` when one of its rules failed, ``pass`` when it has rules, else ``not gated``."""
    out = {}
    for name in artifacts:
        mine = [r for r in gates.get("rules", []) if r.get("artifact") == name]
        out[name] = "not gated" if not mine else ("pass" if all(r["passed"] for r in mine) else "fail")
    return out


def device_rule(result: dict) -> dict:
    """The rule of one device result: ``mismatch`` fails; ``ok`` passes, and so does ``unchecked`` (nothing was compared:
    no failure, though never shown as a pass)."""
    status = result.get("status")
    return {"gate": "device", "artifact": (result.get("artifact") or {}).get("name"), "device": (result.get("device") or {}).get("name"),
            "status": status, "passed": status != "mismatch"}


def exit_status(rules: list[dict]) -> int:
    """The ``pipeline`` exit status ``rules`` imply: a failed quality gate 5 (it wins: the artifact fails on the host
    already), else a device mismatch 7, else 0."""
    failed = {r["gate"] for r in rules if not r["passed"]}
    if failed & set(GATES):
        return exits.QUALITY_GATE
    if "device" in failed:
        return exits.DEVICE_MISMATCH
    return exits.OK


def report_gates(report: dict) -> dict:
    """The ``gates`` block of ``report.json``: the check stage's rules, one rule per current device result, ``passed``
    over all of them and ``exit_status``. A check made before gates existed counts as not gated."""
    check = (report.get("check") or {}).get("gates") or {}
    rules = [*check.get("rules", []), *(device_rule(d) for d in report.get("devices") or [])]
    return {"passed": all(r["passed"] for r in rules), "configured": check.get("configured") or {g: None for g in GATES},
            "rules": rules, "exit_status": exit_status(rules)}


def _pct(v: float | None) -> str:
    return "no value" if v is None else f"{v * 100:.1f}%"


def failure_line(rule: dict) -> str:
    """One line for a failed rule, naming the artifact, the value, the threshold, its config key and the data."""
    if rule["gate"] == "device":
        return (f"device gate failed: {rule['artifact']} on {rule['device']}: outputs differ from the reference beyond tolerance "
                f"(status {rule['status']}; the result's reference block has the figures)")
    if rule["gate"] == "min_agreement":
        what = f"top-1 agreement with FP {_pct(rule['value'])} < {_pct(rule['threshold'])}"
    else:
        drop = "no accuracy measured" if rule["value"] is None else f"{rule['value'] * 100:.2f} points"
        what = f"accuracy drop from FP {drop} > {rule['threshold'] * 100:.2f} points"
    return f"quality gate failed: {rule['artifact']} {what} (check.{rule['gate']}) on {rule['measured_on']}"


def failure_lines(gates: dict) -> list[str]:
    """:func:`failure_line` for every failed rule of a ``gates`` block, in order."""
    return [failure_line(r) for r in gates.get("rules", []) if not r["passed"]]


__all__ = ["GATES", "device_rule", "evaluate", "exit_status", "failure_line", "failure_lines", "report_gates", "statuses"]
