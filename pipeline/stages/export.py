"""Stage 3: for each requested format, the FP32 twin and the integer artifact, each integer one proven integer.

A loop over format records (:mod:`exporters.registry`): the stage makes the neutral
deployment spec once from the QAT model (:func:`pipeline.quant.deploy.deployment_spec`)
and hands every format the same inputs; no format depends on which others were asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exporters import registry
from exporters.artifact import Artifact
from exporters.format import ExportInputs
from pipeline.layout import ARTIFACT_PREFIX
from pipeline.quant.deploy import deployment_spec, io_contract
from pipeline.runner import RunContext, write_json
from pipeline.stages.qat import load_student, scheme
from pipeline.synthesis import SyntheticSet
from runtimes.formats import artifact_files


def _log_integer(ctx: RunContext, art: Artifact) -> None:
    """One line per integer artifact: size, MAC share in integer on its runtime, the integer kernels."""
    cov = art.coverage
    kernels = ", ".join(f"{v} {k}" for k, v in sorted(cov.int_kernels.items()))
    if cov.float_kernels:
        kernels += "; float: " + ", ".join(f"{v} {k}" for k, v in sorted(cov.float_kernels.items()))
    detail = f" (hint {art.notes['precision_hint']})" if "precision_hint" in art.notes else ""
    detail += f", {art.notes['mode']}" if "mode" in art.notes else ""
    gate = art.notes.get("integer_gate") or {}
    if art.notes.get("float_layers") and "measured_share_outside_float_layers" in gate:  # float islands: what the gate judged
        names = ", ".join(d["name"] for d in art.notes["float_layers"])
        kernels += (f"; float layers {names} ({gate['float_layer_share']:.1%} of MACs) run in float by design, "
                    f"{gate['measured_share_outside_float_layers']:.1%} of the other MACs in integer")
    ctx.log(f"  {art.path.name}: {art.size_bytes / 1e6:.2f} MB, {cov.share:.1%} of MACs in integer on {cov.runtime}{detail} ({kernels})")


def export_inputs(ctx: RunContext) -> ExportInputs:
    """What every format gets: the float model, the I/O contract, the spec (deploy profile only), the held-out images."""
    teacher, card = ctx.teacher()
    spec = deployment_spec(load_student(ctx), card, scheme(ctx)) if ctx.cfg.qat.profile == "deploy" else None
    images = SyntheticSet.load(ctx.layout.holdout_set).images
    return ExportInputs(teacher, io_contract(card), spec, np.ascontiguousarray(images, dtype=np.float32),
                        ctx.cfg.export.min_integer_coverage)


def run(ctx: RunContext) -> None:
    inputs = export_inputs(ctx)
    if inputs.spec is None:
        ctx.log("  qat.profile=paper reproduces published tables (BN unfolded, asymmetric weights): no integer artifact, FP32 only")
    settings = ctx.cfg.section("export")
    artifacts: list[Artifact] = []
    for name in ctx.cfg.export.targets:  # canonical format names: the config resolved aliases and "all" once
        fmt = registry.get(name)
        options = fmt.options(settings)
        artifacts.append(fmt.write_float(inputs, ctx.layout.artifact("fp32", fmt.info), options))
        if inputs.spec is not None:
            art = fmt.write_integer(inputs, ctx.layout.artifact(fmt.precision(inputs.spec, options), fmt.info), options)
            _log_integer(ctx, art)
            artifacts.append(art)
    _, card = ctx.teacher()
    write_json(ctx.layout.export_index, {"artifacts": [a.to_dict(ctx.run_dir) for a in artifacts], "card": card.to_dict()})
    moved = set_aside_superseded(ctx.layout, [f for a in artifacts for f in made_files(a)])
    if moved:
        ctx.log(f"  moved {len(moved)} file(s) this export did not make to {ctx.layout.superseded.name}/: {', '.join(moved)}")


def made_files(artifact: Artifact) -> list[Path]:
    """The files this export made for ``artifact``: the artifact's own (an OpenVINO ``.bin`` too) and the proof files
    its notes name, such as ORT's optimized graph (``model.w8a8.ort_optimized.onnx``), which belong beside it."""
    files = artifact_files(artifact.path)
    for value in artifact.notes.values():
        if isinstance(value, str) and "/" not in value and value.startswith(f"{ARTIFACT_PREFIX}.") and (artifact.path.parent / value).is_file():
            files.append(artifact.path.parent / value)
    return files


def set_aside_superseded(layout, current: list[Path]) -> list[str]:
    """Move artifacts of an earlier export that this one did not make (another ``--bits`` or ``--target``) into
    ``superseded/``, so the run folder holds only what ``export.json`` lists and nothing stale is benched or reported.

    One generation is kept there (the folder is emptied first): enough to recover a file, never a growing pile.
    """
    import shutil

    keep = {Path(p).name for p in current}
    stale = sorted(p for p in layout.root.glob(f"{ARTIFACT_PREFIX}.*") if p.is_file() and p.name not in keep)
    if not stale:
        return []
    shutil.rmtree(layout.superseded, ignore_errors=True)
    layout.superseded.mkdir()
    for p in stale:
        p.replace(layout.superseded / p.name)
    return [p.name for p in stale]


def load_artifacts(ctx: RunContext) -> list[Artifact]:
    data = json.loads(ctx.layout.export_index.read_text())
    return [Artifact.from_dict(d, ctx.run_dir) for d in data["artifacts"]]


def outputs(ctx: RunContext) -> list[Path]:
    p = ctx.layout.export_index
    files = [p]
    if p.exists():
        for a in json.loads(p.read_text())["artifacts"]:
            files += artifact_files(ctx.run_dir / a["path"])
    return files


def inputs(ctx: RunContext) -> list[Path]:
    from pipeline.stages.synth import weights_inputs

    lay = ctx.layout
    return [lay.student, lay.qat_metrics, lay.holdout_set, *weights_inputs(ctx)]
