"""Direct image optimisation against the teacher's BN statistics (ZeroQ / DeepInversion / IntraQ core).

Images start as Gaussian noise around the model card's pixel mean and are
optimised with Adam so that, batch by batch, (1) each BN layer's input
statistics match its running statistics, (2) the teacher classifies them as
their target labels, (3) image priors keep them smooth and in range.
Augmentations are applied at every step (jitter, flip, random resized crop) so
the images do not overfit one view of the network. Labels are balanced over
classes. The label loss is pluggable (``label_loss``): plain CE, or HAST's
focal re-weighting ``(1 - p)^γ · CE`` toward hard samples.

A killed run resumes after the last finished batch it checkpointed (the synth stage's ``inversion``
checkpoint: the images so far and the random stream, :mod:`pipeline.train.checkpoint`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.card import ModelCard
from pipeline.progress import progress
from pipeline.synthesis import augment as aug
from pipeline.synthesis.base import RealData, Strategy, register_method
from pipeline.synthesis.bn_stats import BNStatHook, BNTargets, bn_statistics_loss, require_batchnorm
from pipeline.synthesis.dataset import SyntheticSet
from pipeline.synthesis.presets import EPOCH, FAST_COMMON, INV_FAST, sgd_protocol
from pipeline.synthesis.priors import l2_norm, total_variation
from pipeline.train import distributed
from pipeline.train.checkpoint import rank_state, set_rank_state
from runtimes import faults

LABEL_LOSSES = ("ce", "focal", "none")
INVERSION_SCHEDULES = ("cosine", "plateau")


@dataclass(frozen=True)
class InversionConfig:
    batch_size: int = 128
    iterations: int = 200
    lr: float = 0.1
    bn_weight: float = 1.0
    stat_loss: str = "mse"
    first_bn_weight: float = 1.0
    label_loss: str = "ce"
    label_weight: float = 1.0
    focal_gamma: float = 2.0  # HAST: γ=2 on CIFAR
    tv_weight: float = 1e-4
    l2_weight: float = 1e-5
    jitter: int = 2
    flip: bool = True
    rrc_p: float = 0.0  # IntraQ/HAST use 0.5 on ImageNet
    init_std: float = 1.0  # in units of the card's pixel std
    # The image optimiser: Adam with these betas (DeepInversion's (0.5, 0.9); ZeroQ, IntraQ and HAST keep Adam's
    # (0.9, 0.999)), lr decayed by cosine to 1 % (the pipeline's: it converges within a short budget) or
    # ReduceLROnPlateau on the batch's loss (the papers': ×0.1 after ``plateau_patience`` steps without a new best, to
    # ``plateau_min_lr`` × lr; reads the loss every step)
    betas: tuple[float, float] = (0.5, 0.9)
    lr_schedule: str = "cosine"
    plateau_patience: int = 100
    plateau_min_lr: float = 2e-4  # of lr: ZeroQ's min_lr 1e-4 at lr 0.5

    def __post_init__(self) -> None:
        from pipeline.synthesis.bn_stats import STAT_KINDS

        if self.stat_loss not in STAT_KINDS:
            raise ValueError(f"stat_loss must be one of {', '.join(STAT_KINDS)}")
        if self.label_loss not in LABEL_LOSSES:
            raise ValueError(f"label_loss must be one of {', '.join(LABEL_LOSSES)}")
        if self.batch_size < 2 or self.iterations < 1:
            raise ValueError("batch_size must be >= 2 and iterations >= 1")
        if self.lr_schedule not in INVERSION_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(INVERSION_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.plateau_patience < 0 or not 0 < self.plateau_min_lr <= 1:
            raise ValueError("plateau_patience >= 0 and plateau_min_lr in (0, 1] (a fraction of lr) are required")
        from pipeline.synthesis.generator import check_adam_schedule

        check_adam_schedule(self, prefix="")


# Budget presets (pipeline/synthesis/presets.py; docs/methods.md §3). paper: the IntraQ budget, 5,120 images of
# batch 256 at 1,000 iterations each, then 151 epochs × 200 Q steps of batch 64.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {**FAST_COMMON, "synthesis.options": dict(INV_FAST)},
    "paper": {"synthesis.num_images": 5120, "synthesis.options": {"batch_size": 256, "iterations": 1000},
              "qat.steps": 30200, "qat.batch_size": 64},
}
# The paper profile's training protocol: IntraQ's, whose budget the paper preset borrows (no generator, so Q trains
# from epoch 0 while the EMA ranges move for 4 epochs): SGD-Nesterov lr 1e-4, wd 1e-4, ×0.1 at epochs 20/40/60.
PROTOCOL: dict[str, Any] = {**sgd_protocol(1e-4, milestones_epochs=(20, 40, 60)), "qat.ema_freeze_step": 4 * EPOCH}


def label_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str, gamma: float) -> torch.Tensor:
    if kind == "none":
        return torch.zeros((), device=logits.device)
    ce = F.cross_entropy(logits.float(), labels, reduction="none")  # fp32 even when the forward ran in bf16
    if kind == "focal":
        p = torch.exp(-ce)  # probability of the target class
        return ((1 - p).pow(gamma) * ce).mean()
    return ce.mean()


def image_schedule(opt: torch.optim.Optimizer, cfg: InversionConfig):
    """The image optimiser's schedule over one batch's ``cfg.iterations`` steps (see ``InversionConfig.lr_schedule``)."""
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=cfg.plateau_patience,
                                                          min_lr=cfg.lr * cfg.plateau_min_lr)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.iterations, eta_min=cfg.lr * 0.01)


def balanced_labels(n: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    labels = torch.arange(n, device=gen.device) % num_classes
    return labels[torch.randperm(n, generator=gen, device=gen.device)]


class BNInversion(Strategy):
    """Shared core; methods built on direct inversion subclass or configure it."""

    name = "bn-inversion"

    def __init__(self, cfg: InversionConfig) -> None:
        self.cfg = cfg

    def inversion_config(self, card: ModelCard) -> InversionConfig:
        return self.cfg

    def extra_loss(self, x: torch.Tensor, card: ModelCard) -> torch.Tensor:
        """Hook for subclasses: a term added to the inversion loss (ZeroQ: input statistics)."""
        return torch.zeros((), device=x.device)

    def synthesize(self, teacher: nn.Module, card: ModelCard, num_images: int, seed: int,
                   calib: RealData | None = None) -> SyntheticSet:
        cfg = self.inversion_config(card)
        bns = require_batchnorm(teacher, self.name)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        from pipeline.train.engine import step_scope

        place = self.placement
        device = place.device
        gen = place.generator(distributed.rank_seed(seed, place.rank))  # each rank inverts its own shard from its own stream
        labels = balanced_labels(num_images, card.num_classes, gen)
        augs: list[aug.Augmentation] = []
        if cfg.jitter:
            augs.append(aug.RandomJitter(cfg.jitter))
        if cfg.flip:
            augs.append(aug.RandomFlip())
        if cfg.rrc_p > 0:
            augs.append(aug.RandomResizedCrop(cfg.rrc_p))
        targets = BNTargets.running(bns)
        lo, hi = card.pixel_range
        mean = torch.tensor(card.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(card.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        out = torch.empty((num_images, *card.input_shape), device=device)
        n_batches = math.ceil(num_images / cfg.batch_size)
        # a checkpoint after every finished batch; ranks whose shard has a batch fewer take part in the last save too
        n_all = max(distributed.gather(n_batches)) if place.world_size > 1 else n_batches
        ck = self.checkpoints.phase("inversion", n_all, 1 if self.checkpoints.every else 0, unit="batch", save_at_end=True)
        # Each batch of images is optimised from noise on its own, so the loss starts high again at every batch: the bar
        # says which batch it is on and labels the loss as that batch's, or a new batch would look like divergence.
        bar = progress(total=n_batches * cfg.iterations, desc=f"synth seed {seed}")
        final_losses: list[torch.Tensor] = []
        start = 0
        if (resumed := ck.resume()) is not None:
            start, done = resumed.step, resumed.rank
            out[: len(done["images"])] = done["images"].to(device)
            final_losses = list(done["losses"].to(device).unbind(0)) if done["losses"] is not None else []
            set_rank_state(done["rng"], {"images": gen})
            bar.update(min(start, n_batches) * cfg.iterations)
            bar.set_postfix_str(f"batch {min(start, n_batches)}/{n_batches} done (resumed)")

        def so_far(b: int) -> dict:
            """This rank's images and losses after batch ``b`` and its random stream (a checkpoint's rank part)."""
            n = min(num_images, min(b + 1, n_batches) * cfg.batch_size)
            return {"images": out[:n].cpu(), "losses": torch.stack(final_losses).cpu() if final_losses else None,
                    "rng": rank_state({"images": gen})}

        with BNStatHook(bns, per_sample=cfg.stat_loss == "per-sample") as hook:
            for b in range(start, n_all):
                if b >= n_batches:  # this rank's shard is done: only the checkpoint below
                    ck.maybe_save(b + 1, dict, lambda: so_far(b))
                    continue
                faults.point("synth.batch")
                sl = slice(b * cfg.batch_size, min(num_images, (b + 1) * cfg.batch_size))
                y = labels[sl]
                x = (mean + cfg.init_std * std * torch.randn((y.shape[0], *card.input_shape), generator=gen, device=device)).clamp(lo, hi)
                x = place.images(x).requires_grad_(True)
                bar.set_postfix_str(f"batch {b + 1}/{n_batches}")
                opt = torch.optim.Adam([x], lr=cfg.lr, betas=cfg.betas)
                sched = image_schedule(opt, cfg)
                for it in range(cfg.iterations):
                    with step_scope():
                        with place.autocast():
                            logits = teacher(aug.apply(augs, x, gen))
                        loss = cfg.bn_weight * bn_statistics_loss(hook, targets, cfg.stat_loss, cfg.first_bn_weight)
                        loss = loss + cfg.label_weight * label_loss(logits, y, cfg.label_loss, cfg.focal_gamma)
                        loss = loss + cfg.tv_weight * total_variation(x) + cfg.l2_weight * l2_norm(x, mean)
                        loss = loss + self.extra_loss(x, card)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        sched.step(loss.item()) if cfg.lr_schedule == "plateau" else sched.step()
                        with torch.no_grad():
                            x.clamp_(lo, hi)
                    bar.update(1)
                    if (it + 1) % 25 == 0 or it + 1 == cfg.iterations:  # a host read of the loss every 25 steps, not every step
                        bar.set_postfix_str(f"batch {b + 1}/{n_batches}, this batch's loss {loss.item():.3f}")
                final_losses.append(loss.detach())
                out[sl] = x.detach()
                ck.maybe_save(b + 1, dict, lambda: so_far(b))
        bar.close()
        for p in teacher.parameters():
            p.requires_grad_(True)
        meta = {"config": dict(self.cfg.__dict__), "final_loss_per_batch": [float(v) for v in torch.stack(final_losses).cpu()]}
        return SyntheticSet(out.cpu().numpy(), labels.cpu().numpy().astype(np.int64), seed, self.name, meta)


register_method("bn-inversion", InversionConfig, presets=PRESETS, protocol=PROTOCOL)(BNInversion)
