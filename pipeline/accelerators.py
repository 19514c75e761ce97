"""Accelerator choices on the host side: ``check.accelerators`` parsed, checked before the first stage, measured by the check.

A choice is ``RUNTIME:CHOICE`` in the runtime's own words (:mod:`runtimes.accelerators`: ORT execution
providers, OpenVINO devices, LiteRT delegates). The default path of each runtime (CPU provider, CPU
device, XNNPACK) is what the export's integer gate and the check always measure; each *other* choice
asked for is measured too, because what a runtime computes depends on where it runs: another device
has other kernels (OpenVINO AUTO may pick a GPU that runs int8 layers in float; LiteRT's GPU computes
in fp16 on dequantized weights; ORT places nodes an execution provider cannot take on the CPU). So per
choice and artifact the check stores, in ``check.json`` under ``artifacts[name]["accelerators"][choice]``:
what the runtime says executes, agreement with the FP, fake-quant and default-path outputs on the
held-out set (:func:`devices.reference.metrics`, the same comparison as everywhere), the integer
coverage as that choice executes the artifact, and the export's integer gate
(``export.min_integer_coverage``) judged on it: a choice that runs a graph in float shows it, and is
listed in the check's warnings (the run's exit status stays the gates': nothing is re-exported).

* :func:`parse_choices`: config time (syntax and vocabulary, canonical spelling, no duplicates);
* :func:`preflight_problems`: before the first stage (a runtime no target uses; available on this host);
* :func:`measure_artifact`: the check stage, one artifact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError

KEY = "check.accelerators"


def parse_choices(values: list[str] | tuple[str, ...] | None) -> list[str]:
    """``values`` in each runtime's spelling (``ov:auto`` → ``openvino:AUTO``); one-line :class:`ConfigError` on a word that
    is not ``RUNTIME:CHOICE``, names no runtime or is outside the runtime's vocabulary (with the closest), or on a repeat."""
    from runtimes.accelerators import UnknownAccelerator, parse

    out: list[str] = []
    for value in values or []:
        try:
            choice = str(parse(value))
        except UnknownAccelerator as exc:
            raise ConfigError(f"{KEY}: {exc}") from None
        except ImportError as exc:  # the runtime itself is missing: the syntax is all that can be checked
            raise ConfigError(f"{KEY}: {value!r} needs {exc.name}, which is not installed here") from None
        if choice in out:
            raise ConfigError(f"{KEY}: {choice} is given twice")
        out.append(choice)
    return out


def preflight_problems(cfg) -> list[str]:
    """Why the run's accelerator choices cannot be checked, one line each (none when they can): a choice for a runtime no
    exported target runs on, or one this host cannot run (what it can run is named). Cheap: nothing is converted."""
    from runtimes.accelerators import AcceleratorUnavailable, require, runtime_of
    from runtimes.formats import BY_NAME

    used = {BY_NAME[t].runtime: t for t in cfg.export.targets if t in BY_NAME}
    problems = []
    for key in cfg.check.accelerators:
        runtime = runtime_of(key.split(":", 1)[0])
        if runtime not in used:
            problems.append(f"{KEY} asks for {key}, but no target of this run runs on {runtime} (targets: "
                            f"{', '.join(cfg.export.targets)}): add --target {next(f for f, i in BY_NAME.items() if i.runtime == runtime)} "
                            "or drop the choice")
            continue
        try:
            require(key)
        except AcceleratorUnavailable as exc:
            problems.append(str(exc))
    return problems


def check_available(cfg) -> None:
    """:func:`preflight_problems` as one :class:`ConfigError` (exit 3), for a caller without a list of its own."""
    problems = preflight_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))


def _gate(cov: dict, name: str, runtime: str, min_share: float) -> dict:
    """The export's integer gate judged on one choice's coverage (LiteRT's float ADD/MEAN count too, as at export)."""
    from dataclasses import fields

    from runtimes.coverage import IntegerCoverage

    kept = {f.name: cov[f.name] for f in fields(IntegerCoverage) if f.name in cov}  # the reader's record, back as the object
    why = IntegerCoverage(**kept).shortfall(name, min_share, strict_kernels=runtime == "litert")
    return {"min_integer_coverage": min_share, "passed": why is None, "reason": why}


def measure_artifact(art, runtime: str, choices: list[str], images: np.ndarray, refs: dict[str, np.ndarray | None],
                     threads: int, min_share: float, log=lambda m: None) -> tuple[dict, list[str]]:
    """Each non-default choice of ``runtime`` in ``choices`` on artifact ``art`` (an export record): the entry stored
    under ``artifacts[name]["accelerators"]`` and the warnings (a choice that misses the integer gate).

    ``refs``: the held-out outputs to compare with: ``fp``, ``fake_quant`` (None for an FP32 artifact or a paper run)
    and ``default`` (this artifact on its runtime's default path), each N×C.
    """
    import runtimes
    from devices.reference import metrics
    from runtimes import accelerators

    name = Path(art.path).name
    lsb = art.notes.get("output_scale")
    integer = art.precision != "fp32"
    out: dict = {}
    warnings: list[str] = []
    for key in choices:
        choice = accelerators.parse(key)
        if choice.runtime != runtime or choice.is_default:
            continue
        pred = runtimes.load(art.path, threads=threads, accelerator=key)
        y = runtimes.predict_batched(pred, images)
        entry: dict = {"executes_on": list(getattr(pred, "executes_on", [])), "kernels": pred.kernels(),
                       "vs_fp": metrics(y, refs["fp"]),
                       "vs_fake_quant": metrics(y, refs["fake_quant"], lsb) if integer and refs.get("fake_quant") is not None else None,
                       "vs_default": metrics(y, refs["default"], lsb if integer else None)}
        if integer:
            sample = next(iter(runtimes.prepare_feeds(pred, images[:1]).values()))
            entry["integer_coverage"] = accelerators.coverage(art.path, sample, threads, key)
            entry["integer_gate"] = _gate(entry["integer_coverage"], f"{name} on {key}", runtime, min_share)
            if not entry["integer_gate"]["passed"]:
                warnings.append(entry["integer_gate"]["reason"])
        out[key] = entry
        fq = entry["vs_fake_quant"]
        cov = entry.get("integer_coverage")
        log(f"  {name} on {key} (runs on {', '.join(entry['executes_on']) or '?'}): "
            f"agreement with FP {entry['vs_fp']['top1_agreement']:.1%}"
            + (f", with fake-quant {fq['top1_agreement']:.1%} (max diff {fq.get('max_abs_diff_lsb', fq['max_abs_diff']):.3g}"
               + (" LSB)" if "max_abs_diff_lsb" in fq else ")") if fq else "")
            + (f", integer MACs {cov['share']:.1%}" if cov else ""))
    return out, warnings


def summary_lines(check: dict) -> list[str]:
    """One line per artifact and non-default choice, for the end-of-run summary."""
    from runtimes.coverage import percent

    lines = []
    for name, e in (check.get("artifacts") or {}).items():
        for key, a in (e.get("accelerators") or {}).items():
            fq = a.get("vs_fake_quant") or {}
            cov = a.get("integer_coverage") or {}
            gate = a.get("integer_gate") or {}
            lines.append(f"accelerator {key} {name}: runs on {', '.join(a.get('executes_on') or ['?'])}; agree FP "
                         f"{a['vs_fp']['top1_agreement'] * 100:.2f}%"
                         + (f", FQ {fq['top1_agreement'] * 100:.2f}%" if fq else "")
                         + (f", integer MACs {percent(cov['share'])}" if cov else "")
                         + ("" if not gate or gate.get("passed") else " BELOW the integer gate"))
    return lines


__all__ = ["check_available", "measure_artifact", "parse_choices", "preflight_problems", "summary_lines"]
