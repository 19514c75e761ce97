"""Stage 1: the method's pool (fixed images, or a warmed-up generator and its samples) and the held-out set.

The held-out set for the checks is always plain BN inversion from another seed
(``synthesis.holdout_options``), whatever the method, so every method is judged
on the same images. ``--calib-data`` (real images, only FDDA uses them) is
loaded here and refused for data-free methods.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.runner import RunContext
from pipeline.synthesis import RealData, SyntheticSet, create_method
from pipeline.synthesis.base import HOLDOUT_METHOD
from pipeline.train.distributed import gather, shard



def weights_inputs(ctx: RunContext) -> list[Path]:
    from pipeline.models.loading import BUNDLED

    cfg = ctx.cfg.model
    calib = [Path(ctx.cfg.synthesis.calib_data)] if ctx.cfg.synthesis.calib_data and Path(ctx.cfg.synthesis.calib_data).is_file() else []
    if cfg.weights:
        return [Path(cfg.weights), *calib]
    if cfg.name in BUNDLED:
        return [BUNDLED[cfg.name].with_suffix(".pt"), *calib]
    files = [Path(cfg.name.rpartition(":")[0])] if ":" in cfg.name else []
    return [f for f in files if f.exists()] + calib


def calibration_data(ctx: RunContext, method_name: str, needs: bool) -> RealData | None:
    s = ctx.cfg.synthesis
    if not s.calib_data:
        if needs:
            raise ConfigError(f"method {method_name!r} is not data-free: give --calib-data (ImageFolder dir or .npz, "
                              ">= 1 real image per class)")
        return None
    if not needs:
        raise ConfigError(f"--calib-data is only used by methods that need real images (fdda); {method_name!r} is data-free")
    images, labels = ctx.real_data("calib")
    return RealData(images, labels)


def key_extra(ctx: RunContext) -> dict:
    """Where the images are made: a device, precision or number of ranks draws other images.

    An ImageFolder ``--calib-data`` enters as its content digest (:func:`pipeline.evaldata.digest`): the runner
    hashes input files, not folders, so an edited folder would otherwise keep the old pool. A file is in
    :func:`weights_inputs`.
    """
    extra = {"placement": ctx.placement.key(), "compile": ctx.cfg.host.compile}
    calib = ctx.cfg.synthesis.calib_data
    if calib and Path(calib).is_dir():
        from pipeline.evaldata import digest

        extra["calib_data"] = digest(calib, ctx.cfg.check.eval_transform)  # the transform that turns it into inputs
    return extra


def run(ctx: RunContext) -> None:
    """Every rank synthesizes its shard of the budget from its own seed stream; rank 0 writes their union.

    The long loops (inversion batches, a generator's warm-up, the held-out inversion) checkpoint into
    ``checkpoints/synth.<phase>.pt`` and resume there after a kill; the files go once both sets are written.
    """
    from pipeline.train.checkpoint import for_stage

    teacher, card = ctx.teacher_on_device()
    s, place = ctx.cfg.synthesis, ctx.placement
    if ctx.cfg.host.compile:
        import torch

        teacher = torch.compile(teacher)  # module hooks (BN statistics) registered later still fire: dynamo traces them
    method = create_method(s.method, s.options, place)
    checkpoints = method.checkpoints = for_stage(ctx, "synth")
    calib = calibration_data(ctx, s.method, getattr(method, "needs_calib_data", False))
    ranks = f", {place.world_size} ranks" if place.world_size > 1 else ""
    ctx.log(f"  {s.method}: {s.num_images} training images (seed {s.seed}{ranks}) + {s.holdout_images} held-out "
            f"({HOLDOUT_METHOD}, seed {s.holdout_seed})" + (f"; {len(calib.labels)} real calibration images" if calib else ""))
    part: SyntheticSet = method.synthesize(teacher, card, shard(s.num_images, place.rank, place.world_size), s.seed, calib=calib)
    parts = gather(part)
    if not place.is_main:
        return
    train = SyntheticSet.union(parts)
    train.meta["method"], train.meta["options"] = s.method, dict(s.options)  # the qat stage's key follows the options
    train.save(ctx.layout.ensure(ctx.layout.train_set))
    alone = dataclasses.replace(place, rank=0, world_size=1)
    holdout_method = create_method(HOLDOUT_METHOD, s.holdout_options, alone)
    holdout_method.checkpoints = checkpoints.scoped("holdout", alone)  # rank 0 alone: no collectives
    holdout: SyntheticSet = holdout_method.synthesize(teacher, card, s.holdout_images, s.holdout_seed)
    holdout.save(ctx.layout.ensure(ctx.layout.holdout_set))
    checkpoints.clear()


def outputs(ctx: RunContext) -> list[Path]:
    return [ctx.layout.train_set, ctx.layout.holdout_set]
