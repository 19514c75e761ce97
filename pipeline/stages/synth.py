"""Stage 1: the method's pool (fixed images, or a warmed-up generator and its samples) and the held-out set.

The held-out set for the checks is always plain BN inversion from another seed
(``synthesis.holdout_options``), whatever the method, so every method is judged
on the same images. ``--calib-data`` (real images, only FDDA uses them) is
loaded here and refused for data-free methods.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.runner import RunContext
from pipeline.synthesis import RealData, SyntheticSet, create_method

HOLDOUT_METHOD = "bn-inversion"


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
    from pipeline.evaldata import load_eval_data

    _, card = ctx.teacher()
    images, labels = load_eval_data(s.calib_data, card)
    return RealData(images, labels)


def run(ctx: RunContext) -> None:
    teacher, card = ctx.teacher()
    s = ctx.cfg.synthesis
    method = create_method(s.method, s.options)
    calib = calibration_data(ctx, s.method, getattr(method, "needs_calib_data", False))
    ctx.log(f"  {s.method}: {s.num_images} training images (seed {s.seed}) + {s.holdout_images} held-out "
            f"({HOLDOUT_METHOD}, seed {s.holdout_seed})" + (f"; {len(calib.labels)} real calibration images" if calib else ""))
    train: SyntheticSet = method.synthesize(teacher, card, s.num_images, s.seed, calib=calib)
    train.meta["method"], train.meta["options"] = s.method, dict(s.options)  # the qat stage's key follows the options
    train.save(ctx.layout.ensure(ctx.layout.train_set))
    holdout: SyntheticSet = create_method(HOLDOUT_METHOD, s.holdout_options).synthesize(teacher, card, s.holdout_images, s.holdout_seed)
    holdout.save(ctx.layout.ensure(ctx.layout.holdout_set))


def outputs(ctx: RunContext) -> list[Path]:
    return [ctx.layout.train_set, ctx.layout.holdout_set]
