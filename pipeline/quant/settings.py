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
ActRange = Literal["learned", "ema"]  # activation ranges: trained (LSQ+) or EMA of min/max (paper profile)
ActInit = Literal["mse", "minmax", "percentile"]  # how calibration picks each activation range
# Where synthesis and QAT compute (pipeline/train/placement.py resolves "auto" on the machine at hand).
Accelerator = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class QATSettings:
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-5  # weights and biases
    quant_lr: float = 1e-4  # learned ranges and scales
    weight_decay: float = 0.0
    temperature: float = 1.0
    kd_weight: float = 1.0
    ce_weight: float = 0.0  # CE on the synthetic labels (GDFQ uses 1; HAST computes but does not use it)
    ema_freeze_step: int = 0  # ``ema`` ranges stop moving after this step (GDFQ: after the warm-up epochs)
    flip: bool = True
