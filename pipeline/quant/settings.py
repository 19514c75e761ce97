"""The QAT knobs without torch: the training loop's settings and the closed choices of the ``qat`` section.

:class:`QATSettings` is the one source of the training defaults: ``pipeline.config.QATConfig`` takes its
defaults from it and hands it back with ``QATConfig.settings()``. The ``Literal`` types are the one source
of each choice's valid values (``typing.get_args``); ``pipeline.config`` validates them generically.
Nothing here imports torch, so ``pipeline.config`` can import it at module level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Profile = Literal["deploy", "paper"]  # model surgery (pipeline/quant/prepare.py)
# activation ranges: trained (LSQ+) or EMA of min/max; auto = the profile's own (deploy learned, paper ema)
ActRange = Literal["auto", "learned", "ema"]
ActInit = Literal["mse", "minmax", "percentile"]  # how calibration picks each activation range
# Where synthesis and QAT compute (pipeline/train/placement.py resolves "auto" on the machine at hand).
Accelerator = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
# The Q optimiser (pipeline/train/engine.py): the pipeline's Adam, or the papers' SGD (Nesterov where they use it).
Optimizer = Literal["adam", "sgd"]
# Its learning-rate schedule over the Q steps: cosine to 0, steps of ×lr_gamma at lr_milestones, or constant.
LRSchedule = Literal["cosine", "multistep", "constant"]


@dataclass(frozen=True)
class QATSettings:
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-5  # weights and biases
    quant_lr: float = 1e-4  # learned ranges and scales
    weight_decay: float = 0.0  # on the weights and biases only, never on ranges and scales
    # The optimiser and its schedule. Adam with cosine decay is the pipeline's: scale-free steps suit the learned
    # ranges of the deploy profile, and it needs no per-model tuning. The papers' SGD settings are each method's
    # PROTOCOL (beside its code), applied by the paper profile (docs/methods.md §3).
    optimizer: Optimizer = "adam"
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    lr_schedule: LRSchedule = "cosine"
    lr_milestones: tuple[int, ...] = ()  # multistep: the Q steps at which the learning rates are multiplied by lr_gamma
    lr_gamma: float = 0.1
    temperature: float = 1.0
    kd_weight: float = 1.0
    ce_weight: float = 0.0  # CE on the synthetic labels (GDFQ uses 1; HAST computes but does not use it)
    # ``ema`` ranges stop moving at this Q step (0: never). 1: they move on the first Q batch only, so the ranges are
    # the calibration's: the GDFQ lineage, whose ranges move during the warm-up epochs (here: calibration) and are
    # then frozen for all of QAT. A method without a warm-up (IntraQ-style pool KD) lets them move for 4 epochs.
    ema_freeze_step: int = 1
    flip: bool = True
