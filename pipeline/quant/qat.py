"""Quantization-aware training on a fixed synthetic pool, distilling from the full-precision teacher.

The default recipe of the one QAT loop (:mod:`pipeline.train.engine`): each step draws a batch from
the pool (randomly flipped), and the student learns the teacher's softened outputs (KD), plus CE on
the synthetic labels and a method's extra terms where asked.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.quant.distill import kd_kl
from pipeline.quant.settings import QATSettings  # torch-free home (pipeline.config imports it); also importable from here
from pipeline.train import distributed, engine
from pipeline.train.checkpoint import Checkpointer
from pipeline.train.placement import CPU, Placement

# A loss hook lets a method add terms: f(student, teacher, x, labels, s_logits, t_logits) -> loss
ExtraLoss = Callable[[nn.Module, nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class PoolKD(engine.Recipe):
    """KD on a fixed pool kept on the device; each rank draws its own share of the batch from its own stream."""

    def __init__(self, student: nn.Module, teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: QATSettings,
                 placement: Placement = CPU, seed: int = 0, extra_loss: ExtraLoss | None = None) -> None:
        self.student, self.teacher, self.s, self.extra_loss = student, teacher, settings, extra_loss
        self.images, self.labels = placement.images(images), labels.to(placement.device)
        self.device = placement.device
        self.gen = placement.generator(distributed.rank_seed(seed, placement.rank))
        self.batch = min(distributed.shard(settings.batch_size, placement.rank, placement.world_size), self.images.shape[0])
        self.images_per_step = self.batch

    def loss(self, step: int, backward: engine.Backward) -> torch.Tensor:
        s, n = self.s, self.images.shape[0]
        idx = torch.randint(0, n, (self.batch,), generator=self.gen, device=self.device)
        x, y = self.images[idx], self.labels[idx]
        if s.flip:
            flip = torch.rand(x.shape[0], generator=self.gen, device=self.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        with torch.no_grad():
            t_logits = self.teacher(x)
        s_logits = self.student(x)
        loss = s.kd_weight * kd_kl(s_logits, t_logits, s.temperature)
        if s.ce_weight:
            loss = loss + s.ce_weight * F.cross_entropy(s_logits.float(), y)
        if self.extra_loss is not None:
            loss = loss + self.extra_loss(self.student, self.teacher, x, y, s_logits, t_logits)
        backward(loss)
        return loss.detach()

    def rng_streams(self) -> dict[str, torch.Generator]:
        return {"batches": self.gen}


def train_qat(student: nn.Module, teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor, settings: QATSettings,
              seed: int = 0, extra_loss: ExtraLoss | None = None, desc: str = "qat", placement: Placement = CPU,
              checkpoint: Checkpointer | None = None) -> list[float]:
    """Train ``student`` (already calibrated) for ``settings.steps`` steps of KD on the pool; returns the loss curve.
    ``checkpoint``: resume from / save to the stage's checkpoint (:mod:`pipeline.train.checkpoint`)."""
    recipe = PoolKD(student, teacher, images, labels, settings, placement, seed, extra_loss)
    return engine.train(student, teacher, recipe, settings, placement, desc, checkpoint=checkpoint)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits for ``images`` in eval mode, batched, on the model's device; returned on the CPU in fp32."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, images.shape[0], batch_size)])
