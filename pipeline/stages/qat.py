"""Stage 2: build the fake-quant model; the method initialises its ranges and trains it (default: KD on the pool).

The method (``synthesis.method`` with its options) owns calibration and the QAT
loop (:class:`pipeline.synthesis.base.Strategy`); the pool written by the synth
stage records the method's options, so changing one re-keys this stage too.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from pipeline.quant.prepare import QuantProfile, quantize_model
from pipeline.quant.qat import predict
from pipeline.quant.scheme import BitScheme
from pipeline.runner import RunContext, write_json
from pipeline.synthesis import QATJob, SyntheticSet, create_method
from pipeline.train.distributed import broadcast


def scheme(ctx: RunContext) -> BitScheme:
    """The run's bit scheme (parsed once by the config, overflow grid resolved against the targets)."""
    return ctx.cfg.scheme


def key_extra(ctx: RunContext) -> dict:
    """What the stage key needs beyond the ``qat`` section: ``auto`` resolves differently for other targets, and the
    device, precision and number of ranks change the numbers."""
    return {"overflow_safe": scheme(ctx).overflow_safe, "placement": ctx.placement.key()}


def build_student(ctx: RunContext) -> torch.nn.Module:
    teacher, _ = ctx.teacher()
    q = ctx.cfg.qat
    return quantize_model(teacher, scheme(ctx), QuantProfile.named(q.profile, q.act_range))


def load_student(ctx: RunContext) -> torch.nn.Module:
    """The trained student: the graph rebuilt from the config (the same surgery, so the same per-layer bits and float
    layers: ``zsq_meta`` is not in the state dict), checked against the record the qat stage wrote, then its weights
    and ranges loaded.

    The qat stage's key covers the ``qat`` section, so ``qat/student.pt`` was trained as this very graph; a student
    from another plan (copied in by hand) would load into the wrong graph or not at all: that is one line saying so."""
    def make() -> torch.nn.Module:
        student = build_student(ctx)
        trained = _trained_meta(ctx)
        differs = [k for k in _SAME_GRAPH if k in trained and trained[k] != student.zsq_meta.get(k)]
        try:
            if not differs:
                student.load_state_dict(torch.load(ctx.layout.student, map_location="cpu", weights_only=True))
        except RuntimeError:
            differs = ["its layers"]
        if differs:
            from pipeline.errors import UserError

            raise UserError(f"{ctx.layout.student} was trained as another model than this config builds ({', '.join(differs)} differ): "
                            "redo the qat stage (--from qat)")
        return student.eval()

    return ctx.memo("student", make)


# What the surgery records (zsq_meta) that decides the graph and its grids: equal in qat.json and in the rebuilt student.
_SAME_GRAPH = ("bits", "first_last_bits", "overflow_safe", "layer_bits", "float_layers")


def _trained_meta(ctx: RunContext) -> dict:
    """The surgery's record (``zsq_meta``) the qat stage wrote into qat.json, or {} when there is none to read."""
    import json

    try:
        return dict(json.loads(ctx.layout.qat_metrics.read_text()).get("meta") or {})
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def per_layer_summary(meta: dict) -> str:
    """The layers' bits and float layers in one line: the run's own bits by count, the others by name."""
    groups: dict[str, list[str]] = {}
    for layer, bits in (meta.get("layer_bits") or {}).items():
        groups.setdefault(bits, []).append(layer)
    base = meta.get("bits")
    parts = [f"{len(groups.pop(base))} layers {base}"] if base in groups else []
    parts += [f"{bits}: {', '.join(names)}" for bits, names in groups.items()]
    floats = meta.get("float_layers") or []
    return "per-layer bits: " + "; ".join(parts) + (f"; float: {', '.join(floats)}" if floats else "")


def act_range_modes(student: torch.nn.Module) -> str:
    """How the trained student's activation ranges moved: ``learned``, ``ema`` (or both, comma-separated)."""
    from pipeline.quant.prepare import quantizers
    from pipeline.quant.quantizers import ActQuantizer

    return ",".join(sorted({q.mode for q in quantizers(student) if isinstance(q, ActQuantizer)})) or "none"


def optimizer_summary(s) -> dict:
    """The Q optimiser the loop ran (QATSettings), for qat.json and the report: what trained the student."""
    out = {"optimizer": s.optimizer, "lr": s.lr, "quant_lr": s.quant_lr, "weight_decay": s.weight_decay, "lr_schedule": s.lr_schedule}
    if s.optimizer == "sgd":
        out.update(momentum=s.momentum, nesterov=s.nesterov)
    if s.lr_schedule == "multistep":
        out.update(lr_milestones=list(s.lr_milestones), lr_gamma=s.lr_gamma)
    return out


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(1) == b.argmax(1)).float().mean())


def run(ctx: RunContext) -> None:
    """Calibrate and train on every rank (data-parallel, one student); rank 0 writes it.

    The QAT loop checkpoints into ``checkpoints/qat.pt`` every ``host.checkpoint_every`` steps; a rerun after a kill
    calibrates again (cheap, deterministic), then continues the loop from there.
    """
    from pipeline.train.checkpoint import for_stage
    from runtimes import atomic

    teacher, card = ctx.teacher_on_device()
    q, place = ctx.cfg.qat, ctx.placement
    # rank 0 reads the sets and hands them to the others: a multi-host run needs no shared folder
    train, holdout = broadcast((SyntheticSet.load(ctx.layout.train_set), SyntheticSet.load(ctx.layout.holdout_set))
                               if place.is_main else None)
    xh = torch.from_numpy(holdout.images)
    torch.manual_seed(q.seed)
    student = place.model(build_student(ctx))
    if scheme(ctx).per_layer:
        ctx.log(f"  {per_layer_summary(student.zsq_meta)}")
    t0 = time.time()
    method_name = train.meta.get("method", ctx.cfg.synthesis.method)
    method = create_method(method_name, train.meta.get("options", ctx.cfg.synthesis.options), place)
    settings = q.settings()
    checkpoint = for_stage(ctx, "qat").phase(None, settings.steps, ctx.cfg.host.checkpoint_every)
    job = QATJob(student, teacher, card, train, settings, seed=q.seed, calib_images=q.calib_images, act_init=q.act_init, log=ctx.log,
                 checkpoint=checkpoint)
    method.calibrate(job)
    fp_h = predict(teacher, xh)
    start = agreement(predict(student, xh), fp_h)
    ctx.log(f"  {scheme(ctx).name} ({q.profile}): after range init, top-1 agreement with FP on held-out = {start:.1%}")
    losses = method.train(job)
    end = agreement(predict(student, xh), fp_h)
    ctx.log(f"  after {len(losses)} QAT steps ({method_name}): agreement {end:.1%}")
    if not place.is_main:
        return
    state = student.state_dict() if place.device.type == "cpu" else copy.deepcopy(student).cpu().state_dict()
    # through memory, not a path: torch names the zip's inner folder after a path (the temporary name is random), and
    # its zip writer turns a full disk into a RuntimeError
    atomic.write_via(ctx.layout.ensure(ctx.layout.student), lambda f: torch.save(state, f))
    sch = scheme(ctx)
    from pipeline.quant.prepare import quant_layers

    grid = sch.describe_weight_grid(m.wq.bits for m in quant_layers(student))  # the widths the layers got, not the patterns'
    write_json(ctx.layout.ensure(ctx.layout.qat_metrics), {
        "scheme": sch.name, "profile": q.profile, "act_ranges": act_range_modes(student), "optimizer": optimizer_summary(settings),
        "overflow_fix": q.overflow_fix,
        "overflow_safe": sch.overflow_safe, "weight_grid": grid, "method": method_name, "steps": len(losses), "meta": student.zsq_meta, "seconds": round(time.time() - t0, 2),
        "holdout_agreement_after_init": start, "holdout_agreement_after_qat": end,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "loss_curve": [round(v, 5) for v in losses[:: max(1, len(losses) // 100)]],
        "placement": {**place.describe(), **({"peak_gpu_mib": round(torch.cuda.max_memory_allocated(place.device) / 2**20, 1)}
                                             if place.device.type == "cuda" else {})},
    })


def outputs(ctx: RunContext) -> list[Path]:
    return [ctx.layout.student, ctx.layout.qat_metrics]


def inputs(ctx: RunContext) -> list[Path]:
    from pipeline.stages.synth import weights_inputs

    return [ctx.layout.train_set, ctx.layout.holdout_set, *weights_inputs(ctx)]
