"""GDFQ (ECCV 2020): a conditional generator trained jointly with the quantized model (docs/methods.md §2.3).

Generator loss ``CE(T(G(z, y)), y) + 0.1·BNS`` (batch statistics of every BN
input vs the running ones, MSE). It does not depend on the quantized model, so
GDFQ's warm-up (generator trained, Q frozen) runs in the synth stage; the pool it
returns is generator samples, used to initialise the quantizer ranges. In the
qat stage G and Q are trained alternately, one step each, on fresh samples:
``L_Q = α·T²·KL(batchmean) + CE(S, y)`` with α=1, T=20.

Deviations: GDFQ's ``nn.KLDivLoss()`` averages over classes too (÷10 here);
we use ``batchmean`` (docs/methods.md §5.6). GDFQ's BN eps=0.8 quirk is
``bn_eps=0.8``, off by default. The Q optimiser is the pipeline's (Adam,
cosine; SGD-Nesterov in the paper), the same for every method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.models.card import ModelCard
from pipeline.progress import progress
from pipeline.quant.distill import kd_kl
from pipeline.quant.qat import finish_training, make_optimizer, start_training, step_ranges
from pipeline.synthesis.base import QATJob, RealData, Strategy, register_method
from pipeline.synthesis.dataset import SyntheticSet
from pipeline.synthesis.generator import (Generator, GeneratorSpec, Sampler, TeacherProbe, arrays_to_state,
                                          generator_optimizer, state_to_arrays)
from pipeline.synthesis.presets import FAST_COMMON, GEN_FAST


@dataclass(frozen=True)
class GDFQConfig:
    latent_dim: int = 100
    gen_width: int = 128
    gen_lr: float = 1e-3
    gen_batch_size: int = 200  # CIFAR: 200
    warmup_steps: int = 800  # Q frozen: 4 epochs × 200 iterations (CIFAR)
    bns_weight: float = 0.1
    bn_eps: float = 1e-5  # 0.8 reproduces GDFQ's BatchNorm2d(C, 0.8) quirk
    kd_weight: float = 1.0  # α
    temperature: float = 20.0
    ce_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.latent_dim < 1 or self.gen_width < 2 or self.gen_batch_size < 2 or self.warmup_steps < 0:
            raise ValueError("latent_dim, gen_width >= 2, gen_batch_size >= 2 and warmup_steps >= 0 are required")
        if self.temperature <= 0 or self.bn_eps <= 0:
            raise ValueError("temperature and bn_eps must be > 0")


# Budget presets (pipeline/synthesis/presets.py; docs/methods.md §3). paper: a 4-epoch generator warm-up of
# batch 200, then 400 epochs in all (79,200 Q steps of batch 200, G and Q alternating).
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {**FAST_COMMON, "synthesis.options": dict(GEN_FAST)},
    "paper": {"synthesis.options": {"warmup_steps": 800, "gen_batch_size": 200}, "qat.steps": 79200,
              "qat.batch_size": 200, "qat.ema_freeze_step": 1},
}


class GDFQ(Strategy):
    name = "gdfq"
    conditional = True

    def __init__(self, cfg: GDFQConfig) -> None:
        self.cfg = cfg

    # --- generator -------------------------------------------------------
    def generator_spec(self) -> GeneratorSpec:
        c = self.cfg
        return GeneratorSpec(latent_dim=c.latent_dim, width=c.gen_width, conditional=self.conditional, bn_eps=c.bn_eps)

    def make_generator(self, card: ModelCard, seed: int) -> Generator:
        torch.manual_seed(seed)
        return Generator(self.generator_spec(), card.input_shape, card.num_classes)

    def probe(self, teacher: torch.nn.Module) -> TeacherProbe:
        return TeacherProbe(teacher, self.name)

    def generator_loss(self, probe: TeacherProbe, sampler: Sampler, step: int) -> torch.Tensor:
        x, y = sampler(self.cfg.gen_batch_size)
        return F.cross_entropy(probe(x), y) + self.cfg.bns_weight * probe.bns_loss()

    def warmup(self, teacher: torch.nn.Module, card: ModelCard, seed: int, calib: RealData | None = None) -> Generator:
        g = self.make_generator(card, seed)
        g.train()
        sampler = Sampler(g, card, seed)
        opt = generator_optimizer(g, self.cfg.gen_lr)
        self.prepare(teacher, card, calib)
        with self.probe(teacher) as probe:
            for step in progress(range(self.cfg.warmup_steps), desc=f"{self.name} generator warm-up"):
                loss = self.generator_loss(probe, sampler, step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return g

    def prepare(self, teacher: torch.nn.Module, card: ModelCard, calib: RealData | None) -> None:
        """Hook for subclasses needing per-run state before generator training (FDDA's centres)."""

    def synthesize(self, teacher: torch.nn.Module, card: ModelCard, num_images: int, seed: int,
                   calib: RealData | None = None) -> SyntheticSet:
        g = self.warmup(teacher, card, seed, calib)
        images, labels = Sampler(g, card, seed + 1).pool(num_images)
        meta = {"config": asdict(self.cfg), "role": "samples of the warmed-up generator (range calibration)"}
        return SyntheticSet(images, labels, seed, self.name, meta, extras=state_to_arrays(g))

    def restore(self, job: QATJob) -> Generator:
        g = Generator(self.generator_spec(), job.card.input_shape, job.card.num_classes)
        arrays_to_state(g, job.pool.extras)
        return g.train()

    # --- quantized model ---------------------------------------------------
    def student_loss(self, s_logits: torch.Tensor, t_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        loss = c.kd_weight * kd_kl(s_logits, t_logits, c.temperature)
        return loss + c.ce_weight * F.cross_entropy(s_logits, y) if c.ce_weight else loss

    def q_batch(self, job: QATJob, sampler: Sampler) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return sampler(job.settings.batch_size)

    def train(self, job: QATJob) -> list[float]:
        s = job.settings
        if not s.steps:
            return []
        g = self.restore(job)
        sampler = Sampler(g, job.card, job.seed + 7)
        opt_g = generator_optimizer(g, self.cfg.gen_lr)
        opt_q, sched = make_optimizer(job.student, s)
        start_training(job.student, job.teacher)
        self.prepare(job.teacher, job.card, self.real_data(job))
        losses = []
        with self.probe(job.teacher) as probe:
            for step in progress(range(s.steps), desc=f"{self.name} qat"):
                step_ranges(job.student, s, step)
                loss_g = self.generator_loss(probe, sampler, step)
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                x, y = self.q_batch(job, sampler)
                with torch.no_grad():
                    t_logits = job.teacher(x)
                loss = self.student_loss(job.student(x), t_logits, y)
                opt_q.zero_grad(set_to_none=True)
                loss.backward()
                opt_q.step()
                sched.step()
                losses.append(loss.item())
        finish_training(job.student)
        return losses

    def real_data(self, job: QATJob) -> RealData | None:
        return None


register_method("gdfq", GDFQConfig, presets=PRESETS)(GDFQ)
