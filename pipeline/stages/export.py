"""Stage 3: integer artifacts (and their FP32 twins) for each target, each proven integer."""

from __future__ import annotations

from pathlib import Path

import torch

from exporters.artifact import Artifact
from pipeline.errors import ExportError
from pipeline.runner import RunContext, write_json
from pipeline.stages.qat import METRICS, STUDENT, load_student, scheme
from pipeline.stages.synth import HOLDOUT
from pipeline.synthesis import SyntheticSet

INDEX = "export.json"


def output_scale(student: torch.nn.Module) -> float | None:
    """Scale of the quantizer on the model output: the unit of 'LSB' in the parity checks."""
    out = next(n for n in student.graph.nodes if n.op == "output")
    src = out.args[0]
    if getattr(src, "op", None) == "call_module":
        mod = student.get_submodule(src.target)
        if hasattr(mod, "export_qparams"):
            return mod.export_qparams()[0]
    return None


def training_notes(ctx: RunContext, student: torch.nn.Module) -> dict:
    """What the artifact was trained as: bits, weight grid (overflow-safe or full), the output LSB.

    ``weight_qmax`` (largest |integer weight| any layer may hold) travels with the artifact so a
    device can tell whether its u8×s8 kernels can saturate on it (pipeline/quant/overflow.py).
    """
    from pipeline.quant.prepare import quant_layers

    sch = scheme(ctx)
    return {"trained_bits": sch.name, "output_scale": output_scale(student), "weight_grid": sch.weight_grid,
            "overflow_safe": sch.overflow_safe, "weight_qmax": max(m.wq.qmax for m in quant_layers(student))}


def _log_integer(ctx: RunContext, art: Artifact, detail: str = "") -> None:
    """One line per integer artifact: size, MAC share in integer on its runtime, the integer kernels."""
    cov = art.coverage
    kernels = ", ".join(f"{v} {k}" for k, v in sorted(cov.int_kernels.items()))
    ctx.log(f"  {art.path.name}: {art.size_bytes / 1e6:.2f} MB, {cov.share:.1%} of MACs in integer on {cov.runtime}{detail} ({kernels})")


def _onnx(ctx: RunContext, teacher: torch.nn.Module, student: torch.nn.Module | None, card, sample: torch.Tensor) -> list[Artifact]:
    from exporters.onnx import check_integer, export_fp32, export_qdq

    arts = [export_fp32(teacher, card, ctx.path("model.fp32.onnx"))]
    if student is not None:
        precision = scheme(ctx).deployed_name
        art = export_qdq(student, card, ctx.path(f"model.{precision}.onnx"), precision)
        art.notes.update(training_notes(ctx, student))
        optimized = ctx.path(f"model.{precision}.ort_optimized.onnx")
        try:
            check_integer(art, sample, card, ctx.cfg.export.min_integer_coverage, optimized)
        except ExportError:
            art.path.unlink(missing_ok=True)  # an artifact that fails the gate is not left behind
            optimized.unlink(missing_ok=True)
            raise
        _log_integer(ctx, art)
        arts.append(art)
    return arts


def _openvino(ctx: RunContext, teacher: torch.nn.Module, student: torch.nn.Module | None, card, sample: torch.Tensor) -> list[Artifact]:
    """IR from the ONNX files: reused when the onnx target ran first in this stage, else written here as intermediates."""
    from exporters.onnx import export_fp32, export_qdq
    from exporters.openvino import check_integer_openvino, export_ir, ir_files
    from runtimes.openvino_backend import DEFAULT_PRECISION_HINT

    own_onnx = "onnx" not in ctx.cfg.export.targets  # run() puts onnx first, so its files are this run's
    fp32_onnx = ctx.path("model.fp32.onnx")
    if own_onnx:
        export_fp32(teacher, card, fp32_onnx)
    fp32 = export_ir(fp32_onnx, ctx.path("model.fp32.xml"), "fp32", card)
    fp32.notes["precision_hint"] = DEFAULT_PRECISION_HINT
    arts = [fp32]
    if student is not None:
        precision = scheme(ctx).deployed_name
        qdq_onnx = ctx.path(f"model.{precision}.onnx")
        if own_onnx:
            export_qdq(student, card, qdq_onnx, precision)
        art = export_ir(qdq_onnx, ctx.path(f"model.{precision}.xml"), precision, card)
        art.notes.update(training_notes(ctx, student))
        try:
            check_integer_openvino(art, sample, card, ctx.cfg.export.min_integer_coverage, precision_hint=DEFAULT_PRECISION_HINT)
        except ExportError:
            for f in ir_files(art.path):  # an IR that fails the gate is not left behind
                f.unlink(missing_ok=True)
            raise
        _log_integer(ctx, art, f" (hint {art.notes['precision_hint']})")
        arts.append(art)
    return arts


def _tflite(ctx: RunContext, teacher: torch.nn.Module, student: torch.nn.Module | None, card, sample: torch.Tensor) -> list[Artifact]:
    """Full-integer .tflite with the QAT scales (or PT2E-calibrated with export.tflite_calibrate), and the FP32 twin."""
    from exporters.tflite import TfliteOptions, export_fp32, export_int8, export_ptq

    arts = [export_fp32(teacher, card, ctx.path("model.fp32.tflite"))]
    if student is not None:
        e = ctx.cfg.export
        options = TfliteOptions(io=e.tflite_io, min_integer_coverage=e.min_integer_coverage)
        if e.tflite_calibrate:  # PT2E calibration deploys w8a8 whatever the QAT bits were
            art = export_ptq(teacher, card, ctx.path("model.w8a8.tflite"), SyntheticSet.load(ctx.run_dir / HOLDOUT).images, options)
        else:
            precision = scheme(ctx).deployed_name
            art = export_int8(student, card, ctx.path(f"model.{precision}.tflite"), precision, options)
        art.notes.update(training_notes(ctx, student))
        if e.tflite_calibrate:  # PT2E picked its own grids: full-range int8 weights and its own output scale
            art.notes.update(output_scale=art.outputs[0]["scale"], weight_grid="PT2E-calibrated, full range (±127)",
                             overflow_safe=False, weight_qmax=127)
        _log_integer(ctx, art, f", {art.notes['mode']}")
        arts.append(art)
    return arts


EXPORTERS = {"onnx": _onnx, "openvino": _openvino, "tflite": _tflite}  # target → exporter; a new format is one function and one row


def run(ctx: RunContext) -> None:
    teacher, card = ctx.teacher()
    deployable = ctx.cfg.qat.profile == "deploy"
    student = load_student(ctx) if deployable else None
    if not deployable:
        ctx.log("  qat.profile=paper reproduces published tables (BN unfolded, asymmetric weights): no integer artifact, FP32 only")
    sample = torch.from_numpy(SyntheticSet.load(ctx.run_dir / HOLDOUT).images[:1])
    artifacts: list[Artifact] = []
    for target in sorted(ctx.cfg.export.targets, key=lambda t: t != "onnx"):  # onnx first: other targets convert its files
        artifacts += EXPORTERS[target](ctx, teacher, student, card, sample)
    write_json(ctx.path(INDEX), {"artifacts": [a.to_dict(ctx.run_dir) for a in artifacts], "card": card.to_dict()})


def load_artifacts(ctx: RunContext) -> list[Artifact]:
    import json

    data = json.loads((ctx.run_dir / INDEX).read_text())
    return [Artifact.from_dict(d, ctx.run_dir) for d in data["artifacts"]]


def outputs(ctx: RunContext) -> list[Path]:
    import json

    p = ctx.run_dir / INDEX
    files = [p]
    if p.exists():
        data = json.loads(p.read_text())
        for a in data["artifacts"]:
            path = ctx.run_dir / a["path"]
            files.append(path)
            if path.suffix == ".xml":  # OpenVINO IR: the weights live in the .bin beside it
                files.append(path.with_suffix(".bin"))
    return files


def inputs(ctx: RunContext) -> list[Path]:
    from pipeline.stages.synth import weights_inputs

    return [ctx.run_dir / STUDENT, ctx.run_dir / METRICS, ctx.run_dir / HOLDOUT, *weights_inputs(ctx)]
