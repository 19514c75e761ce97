"""Stage 1: synthesize the QAT set and a disjoint held-out set (other seed) from the FP model."""

from __future__ import annotations

from pathlib import Path

from pipeline.runner import RunContext
from pipeline.synthesis import SyntheticSet, create_method

TRAIN, HOLDOUT = "synthetic/train.npz", "synthetic/holdout.npz"


def weights_inputs(ctx: RunContext) -> list[Path]:
    from pipeline.models.loading import BUNDLED

    cfg = ctx.cfg.model
    if cfg.weights:
        return [Path(cfg.weights)]
    if cfg.name in BUNDLED:
        return [BUNDLED[cfg.name].with_suffix(".pt")]
    files = [Path(cfg.name.rpartition(":")[0])] if ":" in cfg.name else []
    return [f for f in files if f.exists()]


def run(ctx: RunContext) -> None:
    teacher, card = ctx.teacher()
    s = ctx.cfg.synthesis
    method = create_method(s.method, s.options)
    ctx.log(f"  {s.method}: {s.num_images} training images (seed {s.seed}) + {s.holdout_images} held-out (seed {s.holdout_seed})")
    train: SyntheticSet = method.synthesize(teacher, card, s.num_images, s.seed)
    train.save(ctx.path(TRAIN))
    holdout: SyntheticSet = method.synthesize(teacher, card, s.holdout_images, s.holdout_seed)
    holdout.save(ctx.path(HOLDOUT))


def outputs(ctx: RunContext) -> list[Path]:
    return [ctx.run_dir / TRAIN, ctx.run_dir / HOLDOUT]
