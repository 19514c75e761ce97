"""Quantization-aware training on synthetic data, distilling from the full-precision teacher."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.progress import progress
from pipeline.quant.distill import kd_kl
from pipeline.quant.prepare import quantizers
from pipeline.quant.quantizers import ActQuantizer, WeightQuantizer
from pipeline.quant.settings import QATSettings  # torch-free home (pipeline.config imports it); also importable from here

# A loss hook lets a method (HAST, ZAQ, ...) add terms: f(student, teacher, x, labels, s_logits, t_logits) -> loss
ExtraLoss = Callable[[nn.Module, nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _param_groups(model: nn.Module, s: QATSettings) -> list[dict]:
    quant_params, weights = [], []
    quant_ids = set()
    for m in model.modules():
        if isinstance(m, (ActQuantizer, WeightQuantizer)):
            for p in m.parameters(recurse=False):
                if p.requires_grad:
                    quant_params.append(p)
                quant_ids.add(id(p))
    for p in model.parameters():
        if id(p) not in quant_ids and p.requires_grad:
            weights.append(p)
    return [{"params": weights, "lr": s.lr, "weight_decay": s.weight_decay}, {"params": quant_params, "lr": s.quant_lr, "weight_decay": 0.0}]


def train_qat(
    student: nn.Module,
    teacher: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: QATSettings,
    seed: int = 0,
    extra_loss: ExtraLoss | None = None,
    desc: str = "qat",
) -> list[float]:
    """Train ``student`` (already calibrated) for ``settings.steps`` steps; returns the loss curve."""
    gen = torch.Generator().manual_seed(seed)
    teacher.eval()
    student.eval()  # BN (paper profile) keeps the FP running statistics, as in GDFQ/HAST
    for q in quantizers(student):
        q.train()  # EMA ranges update while not frozen
    opt = torch.optim.Adam(_param_groups(student, settings))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / max(1, settings.steps))))
    losses: list[float] = []
    n = images.shape[0]
    bar = progress(range(settings.steps), desc=desc)
    for step in bar:
        if settings.ema_freeze_step and step == settings.ema_freeze_step:
            for q in quantizers(student):
                q.ema_frozen = True
        idx = torch.randint(0, n, (min(settings.batch_size, n),), generator=gen)
        x, y = images[idx], labels[idx]
        if settings.flip:
            flip = torch.rand(x.shape[0], generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = student(x)
        loss = settings.kd_weight * kd_kl(s_logits, t_logits, settings.temperature)
        if settings.ce_weight:
            loss = loss + settings.ce_weight * F.cross_entropy(s_logits, y)
        if extra_loss is not None:
            loss = loss + extra_loss(student, teacher, x, y, s_logits, t_logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    for q in quantizers(student):
        q.eval()
    return losses


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits for ``images`` in eval mode, batched."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])


# --- pieces for methods that own their QAT loop (pipeline/synthesis/methods) ---


def make_optimizer(student: nn.Module, settings: QATSettings) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimiser every method's Q step uses (same as :func:`train_qat`): Adam, weights and ranges apart, cosine."""
    opt = torch.optim.Adam(_param_groups(student, settings))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / max(1, settings.steps))))
    return opt, sched


def start_training(student: nn.Module, teacher: nn.Module) -> None:
    """Teacher and student in eval (BN frozen, GDFQ/HAST), quantizers in train mode (EMA ranges move)."""
    teacher.eval()
    student.eval()
    for q in quantizers(student):
        q.train()


def step_ranges(student: nn.Module, settings: QATSettings, step: int) -> None:
    if settings.ema_freeze_step and step == settings.ema_freeze_step:
        for q in quantizers(student):
            q.ema_frozen = True


def finish_training(student: nn.Module) -> None:
    for q in quantizers(student):
        q.eval()
