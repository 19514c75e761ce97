"""ZeroQ (CVPR 2020): direct BN-statistics inversion, then range calibration only, no training (the floor, docs/methods.md §2.2).

Per-sample statistics (channel mean/std over H·W of every BN input vs the
running mean/std) plus the same on the normalised input image vs (0, 1), the
input being one more term of the same sum over layers (ZeroQ sums; the shared
BN loss averages over the L layers, so the input term is divided by L too); no
labels, no priors, no augmentation; Adam lr 0.5 (normalised units: the step in
pixels is lr × the card's std).

Deviations: the pipeline's image optimiser, Adam betas (0.5, 0.9) with cosine decay, instead of ZeroQ's
Adam defaults (0.9, 0.999) with ReduceLROnPlateau(patience 100), as for every inversion method (HAST's
docstring says why; the paper profile's :data:`PROTOCOL` applies ZeroQ's); init N(0, 1) in normalised space (ZeroQ's code: uniform noise
of ±0.02); the images are clipped to the card's pixel range after each step (the deployed input
contract); ranges are initialised by the pipeline's calibration (MSE clipping in ``deploy``, min/max
EMA in ``paper``) rather than ZeroQ's raw min/max.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from pipeline.models.card import ModelCard
from pipeline.synthesis.base import QATJob, register_method
from pipeline.synthesis.generator import check_adam_schedule
from pipeline.synthesis.inversion import BNInversion, InversionConfig
from pipeline.synthesis.presets import FAST_COMMON, INV_FAST


@dataclass(frozen=True)
class ZeroQConfig:
    batch_size: int = 32
    iterations: int = 500
    lr: float = 0.5  # in normalised-input units
    # the image optimiser: the pipeline's; ZeroQ's distill_data.py keeps Adam's betas (0.9, 0.999) with plateau
    # (patience 100, min_lr 1e-4): the paper profile's
    betas: tuple[float, float] = (0.5, 0.9)
    lr_schedule: str = "cosine"
    plateau_patience: int = 100
    input_stats_weight: float = 1.0  # relative to one BN layer's term, as in ZeroQ's sum

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.iterations < 1 or self.lr <= 0:
            raise ValueError("batch_size >= 2, iterations >= 1 and lr > 0 are required")
        check_adam_schedule(self, prefix="")


# Budget presets (pipeline/synthesis/presets.py; docs/methods.md §3): calibration only, no Q steps;
# paper: 32 images, 500 iterations.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {**FAST_COMMON, "synthesis.options": dict(INV_FAST), "qat.steps": 0},
    "paper": {"synthesis.num_images": 32, "synthesis.options": {"batch_size": 32, "iterations": 500}, "qat.steps": 0,
              "qat.calib_images": 32},
}
# ZeroQ's protocol (the paper profile): no training; the image optimiser's Adam betas (0.9, 0.999) and
# ReduceLROnPlateau(patience 100, min_lr 1e-4).
PROTOCOL: dict[str, Any] = {"synthesis.options": {"betas": [0.9, 0.999], "lr_schedule": "plateau"}}


class ZeroQ(BNInversion):
    name = "zeroq"

    def __init__(self, cfg: ZeroQConfig) -> None:
        self.zcfg = cfg
        super().__init__(self.inversion_config(None))

    def inversion_config(self, card: ModelCard | None) -> InversionConfig:
        std = sum(card.std) / len(card.std) if card is not None else 1.0
        c = self.zcfg
        return InversionConfig(batch_size=c.batch_size, iterations=c.iterations, lr=c.lr * std, stat_loss="per-sample",
                               label_loss="none", tv_weight=0.0, l2_weight=0.0, jitter=0, flip=False, betas=c.betas,
                               lr_schedule=c.lr_schedule, plateau_patience=c.plateau_patience)

    def extra_loss(self, x: torch.Tensor, card: ModelCard) -> torch.Tensor:
        if not self.zcfg.input_stats_weight:
            return torch.zeros((), device=x.device)
        mean = torch.tensor(card.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(card.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        xn = (x - mean) / std
        mu, sd = xn.mean((2, 3)), xn.std((2, 3), unbiased=False)
        term = mu.pow(2).sum(1).mean() + (sd - 1).pow(2).sum(1).mean()
        return self.zcfg.input_stats_weight * term / self._num_bn  # one more layer of ZeroQ's sum, on the average's scale

    def synthesize(self, teacher, *args, **kwargs):
        from pipeline.synthesis.bn_stats import require_batchnorm

        self._num_bn = len(require_batchnorm(teacher, self.name))
        out = super().synthesize(teacher, *args, **kwargs)
        out.meta["config"] = asdict(self.zcfg)
        return out

    def train(self, job: QATJob) -> list[float]:
        """Calibration only: ZeroQ has no fine-tuning."""
        job.log("  zeroq: calibration only, no QAT steps")
        return []


register_method("zeroq", ZeroQConfig, presets=PRESETS, protocol=PROTOCOL)(ZeroQ)
