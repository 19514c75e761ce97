"""ZAQ (CVPR 2021): an unconditional generator trained adversarially against the quantized model (docs/methods.md §2.4).

Per iteration: 5 Q steps, then 1 G step, on fresh samples.
``L_Q = L1(q_logit, p_logit) + α·SCRM(f_q, f_p)``; ``L_G = −L1 − α·SCRM −
β·mean|f_p^last|`` (α=1, β=0.1, γ=0.1 relation residual), SCRM on the output of
each stage (the last block at each resolution). ``qat.steps`` counts Q steps.

ZAQ has no warm-up: the pool (used to initialise the ranges) is samples of the
freshly initialised generator, which is what ZAQ's running min/max ranges see
first. The generator's optimiser is ZAQ's: Adam lr 1e-3 with Adam's own betas
(0.9, 0.999), ×0.1 at epochs 100 and 200 (60 generator steps an epoch).

Deviations: the pipeline's Adam/cosine optimiser for Q in the deploy profile (ZAQ: SGD lr 0.1, m 0.9,
wd 5e-4, ×0.1 at epochs 100/200: :data:`PROTOCOL`, which the paper profile applies); Q's BN stays
frozen (ZAQ's code trains Q in ``train()`` mode, so its BN statistics adapt; in ``deploy`` BN is folded
anyway).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.models.card import ModelCard
from pipeline.quant.distill import scrm
from pipeline.quant.features import FeaturePair
from pipeline.train import engine
from pipeline.train.distributed import rank_seed, shard
from pipeline.synthesis.base import QATJob, RealData, Strategy, register_method
from pipeline.synthesis.dataset import SyntheticSet
from pipeline.synthesis.generator import (Generator, GeneratorSpec, Sampler, arrays_to_state, check_adam_schedule,
                                          generator_step, load_training_state, state_to_arrays, training_state)
from pipeline.synthesis.presets import FAST_COMMON, sgd_protocol


@dataclass(frozen=True)
class ZAQConfig:
    latent_dim: int = 256
    gen_width: int = 128
    gen_lr: float = 1e-3
    gen_betas: tuple[float, float] = (0.9, 0.999)  # ZAQ's code leaves Adam's defaults
    gen_lr_milestones: tuple[int, ...] = (6000, 12000)  # generator steps: epochs 100/200 of 60 iterations
    gen_lr_gamma: float = 0.1
    q_steps_per_gen_step: int = 5
    alpha: float = 1.0
    beta: float = 0.1
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.latent_dim < 1 or self.gen_width < 2 or self.q_steps_per_gen_step < 1:
            raise ValueError("latent_dim >= 1, gen_width >= 2 and q_steps_per_gen_step >= 1 are required")
        check_adam_schedule(self)


# Budget presets (pipeline/synthesis/presets.py; docs/methods.md §3). Adversarial from the first step, so no
# warm-up to budget. paper: 300 epochs × 60 iterations × 5 Q steps per G step, batch 256.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {**FAST_COMMON, "synthesis.options": {"gen_width": 64}},
    "paper": {"qat.steps": 90000, "qat.batch_size": 256},
}
# ZAQ's training protocol (the paper profile; main.py): Q by SGD lr 0.1, momentum 0.9 (no Nesterov), wd 5e-4, ×0.1 at
# epochs 100/200 (300 Q steps an epoch: Q steps 30,000/60,000). Its generator's optimiser is ZAQConfig's defaults.
PROTOCOL: dict[str, Any] = sgd_protocol(0.1, milestones_epochs=(100, 200), weight_decay=5e-4, nesterov=False, steps_per_epoch=300)


def discrepancy(pair: FeaturePair, x: torch.Tensor, alpha: float, gamma: float,
                teacher_grad: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """L1(q, p) + α·SCRM and the teacher's features (for the G step's magnitude term)."""
    with torch.set_grad_enabled(teacher_grad):
        t_logits, t_feats = pair.teacher(x)
    s_logits, s_feats = pair.student(x)
    return F.l1_loss(s_logits.float(), t_logits.float()) + alpha * scrm(s_feats, t_feats, gamma), t_feats


class ZAQ(Strategy):
    name = "zaq"

    def __init__(self, cfg: ZAQConfig) -> None:
        self.cfg = cfg

    def spec(self) -> GeneratorSpec:
        return GeneratorSpec(latent_dim=self.cfg.latent_dim, width=self.cfg.gen_width, conditional=False)

    def synthesize(self, teacher: torch.nn.Module, card: ModelCard, num_images: int, seed: int,
                   calib: RealData | None = None) -> SyntheticSet:
        device = self.placement.device
        torch.manual_seed(seed)  # one initial generator on every rank
        g = self.placement.model(Generator(self.spec(), card.input_shape, card.num_classes)).train()
        images, labels = Sampler(g, card, rank_seed(seed, self.placement.rank)).pool(num_images)
        with torch.no_grad():
            labels = torch.cat([teacher(torch.from_numpy(images[i : i + 128]).to(device)).argmax(1).cpu()
                                for i in range(0, len(images), 128)])
        meta = {"config": asdict(self.cfg), "role": "samples of the initial generator (range calibration)",
                "labels": "teacher's predictions (ZAQ is unconditional)"}
        return SyntheticSet(images, labels.numpy(), seed, self.name, meta, extras=state_to_arrays(g))

    def train(self, job: QATJob) -> list[float]:
        if not job.settings.steps:
            return []
        return engine.train(job.student, job.teacher, Adversarial(self, job), job.settings, self.placement, desc="zaq qat",
                            checkpoint=job.checkpoint)


class Adversarial(engine.Recipe):
    """ZAQ's Q step (L1 + α·SCRM on fresh samples) and, every k Q steps, the generator step that maximises it."""

    def __init__(self, method: ZAQ, job: QATJob) -> None:
        place = method.placement
        self.c = method.cfg
        g = place.model(Generator(method.spec(), job.card.input_shape, job.card.num_classes))
        arrays_to_state(g, job.pool.extras)
        g.train()
        self.sampler = Sampler(g, job.card, rank_seed(job.seed + 7, place.rank))
        self.pair = FeaturePair(job.teacher, job.student, "stages", torch.from_numpy(job.pool.images[:2]).to(place.device))
        c = self.c
        self.step_g = generator_step(g, c.gen_lr, c.gen_betas, c.gen_lr_milestones, c.gen_lr_gamma, place)
        self.place = place
        self.images_per_step = shard(job.settings.batch_size, place.rank, place.world_size)

    def loss(self, step: int, backward: engine.Backward) -> torch.Tensor:
        with torch.no_grad():
            x, _ = self.sampler(self.images_per_step)
        loss, _ = discrepancy(self.pair, x, self.c.alpha, self.c.gamma)
        backward(loss)
        return loss.detach()

    def after_step(self, step: int) -> None:
        c = self.c
        if (step + 1) % c.q_steps_per_gen_step:
            return
        with self.place.autocast():  # the teacher copy in ``pair`` is frozen; the G step's gradients on Q are discarded
            x, _ = self.sampler(self.images_per_step)
            d, t_feats = discrepancy(self.pair, x, c.alpha, c.gamma, teacher_grad=True)
            loss_g = -d - c.beta * t_feats[-1].float().abs().mean()
        self.step_g(loss_g)

    def state_dict(self) -> dict:
        return training_state(self.sampler.g, self.step_g)

    def load_state_dict(self, state: dict) -> None:
        load_training_state(self.sampler.g, self.step_g, state)

    def rng_streams(self) -> dict[str, torch.Generator]:
        return {"sampler": self.sampler.rng}


register_method("zaq", ZAQConfig, presets=PRESETS, protocol=PROTOCOL)(ZAQ)
