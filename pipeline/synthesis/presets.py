"""The part of the per-method budgets that every method shares.

``--budget fast`` / ``--budget paper`` pick the preset of the run's method (``--method``, YAML or --set).
Each method keeps its own presets beside its config dataclass, as a module-level
``PRESETS = {"fast": {...}, "paper": {...}}`` registered with ``register_method(name, Config, presets=PRESETS)``;
``pipeline.config.build_config`` finds them through the registry. A preset maps dotted run-config keys to
values, as ``--set`` takes them. The generic budgets (``default``, ``tiny``) are in ``pipeline.config.BUDGETS``.

``fast`` fits a 2-core CPU in minutes on the bundled model, with the same budget for every method (equal
budgets for comparisons): a 128-image pool, 200 synthesis steps (inversion iterations per image batch, or
generator warm-up steps) and 200 Q steps of batch 32. 200 synthesis steps because at 40 the inverted images
do not match the BN statistics yet and every method that trains on them loses accuracy (10 pt at W4A4 for
plain inversion, benchmarks/RESULTS.md).

``paper`` is the published CIFAR schedule (docs/methods.md §3), meant for a GPU host: epochs × 200
iterations, batch sizes, pool size and warm-ups. It is the budget only: the quantizer and the optimisers the
papers trained with are the ``paper`` *profile* (``--profile paper``), which applies each method's
``PROTOCOL`` (beside its code, registered with ``register_method(..., protocol=PROTOCOL)``). A published
result is reproduced by both (``--profile paper --budget paper``); the published schedule with an integer
artifact is ``--budget paper`` alone.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import SMOKE_CHECK

FAST_SYNTH_STEPS = 200
# ``fast``'s keys outside ``synthesis.options``, equal for every method (a method may override one, e.g. zeroq's qat.steps)
FAST_COMMON: dict[str, Any] = {
    "synthesis.num_images": 128, "synthesis.holdout_images": 64,
    "synthesis.holdout_options": {"batch_size": 64, "iterations": FAST_SYNTH_STEPS},
    "qat.steps": 200, "qat.batch_size": 32, "qat.calib_images": 128,
    **SMOKE_CHECK,
}
# ``fast`` synthesis options of the inversion methods (bn-inversion, zeroq, hast) and of the generator methods (gdfq, lrq, fdda)
INV_FAST: dict[str, Any] = {"batch_size": 64, "iterations": FAST_SYNTH_STEPS}
GEN_FAST: dict[str, Any] = {"warmup_steps": FAST_SYNTH_STEPS, "gen_batch_size": 32, "gen_width": 64}


EPOCH = 200  # iterations per epoch of the CIFAR schedules (GDFQ, IntraQ, HAST, FDDA)


def sgd_protocol(lr: float, milestones_epochs: tuple[int, ...] = (), first_q_epoch: int = 0, weight_decay: float = 1e-4,
                 nesterov: bool = True, steps_per_epoch: int = EPOCH) -> dict[str, Any]:
    """The Q optimiser of a GDFQ-lineage protocol as dotted keys: SGD, momentum 0.9, Nesterov, ×0.1 at the milestones.

    The papers' MultiStepLR counts epochs from the first epoch of the run, the ones that only warm a generator up or
    calibrate ranges (Q not stepped) included; here Q's schedule counts Q steps, so a milestone at epoch E is Q step
    ``(E − first_q_epoch) × steps_per_epoch``.
    """
    return {"qat.optimizer": "sgd", "qat.lr": lr, "qat.momentum": 0.9, "qat.nesterov": nesterov, "qat.weight_decay": weight_decay,
            "qat.lr_schedule": "multistep" if milestones_epochs else "constant", "qat.lr_gamma": 0.1,
            "qat.lr_milestones": [(e - first_q_epoch) * steps_per_epoch for e in milestones_epochs]}
