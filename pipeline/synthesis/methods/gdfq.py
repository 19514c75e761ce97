"""GDFQ (ECCV 2020): a conditional generator trained jointly with the quantized model (docs/methods.md §2.3).

Generator loss ``CE(T(G(z, y)), y) + 0.1·BNS`` (batch statistics of every BN
input vs the running ones, MSE). It does not depend on the quantized model, so
GDFQ's warm-up (generator trained, Q frozen) runs in the synth stage; the pool it
returns is generator samples, used to initialise the quantizer ranges. In the
qat stage G and Q are trained alternately, one step each: each iteration draws a fresh batch, takes the G
step on it, then the Q step on the same images (detached), as GDFQ's trainer does:
``L_Q = α·T²·KL(batchmean) + CE(S, y)`` with α=1, T=20. The generator's Adam (lr 1e-3, betas (0.5, 0.999))
decays ×0.1 at generator steps 20,000/40,000/60,000 (epochs 100/200/300 of 200 iterations, warm-up included).

Deviations: GDFQ's ``nn.KLDivLoss()`` averages over classes too (÷10 here);
we use ``batchmean`` (docs/methods.md §5.6). GDFQ's BN eps=0.8 quirk is
``bn_eps=0.8``, off by default. The Q optimiser is the pipeline's (Adam, cosine) in the deploy profile;
the paper profile applies GDFQ's (:data:`PROTOCOL`). The generator's Adam moments restart when QAT continues
the warm-up (its weights and schedule position carry over, its optimiser state does not).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.models.card import ModelCard
from pipeline.progress import progress
from pipeline.quant.distill import kd_kl
from pipeline.train import engine
from pipeline.train.distributed import rank_seed, shard
from pipeline.synthesis.base import QATJob, RealData, Strategy, register_method
from pipeline.synthesis.dataset import SyntheticSet
from pipeline.synthesis.generator import (Generator, GeneratorSpec, Sampler, TeacherProbe, arrays_to_state,
                                          check_adam_schedule, generator_step, load_training_state, state_to_arrays,
                                          training_state)
from pipeline.synthesis.presets import FAST_COMMON, GEN_FAST, sgd_protocol
from pipeline.train.checkpoint import rank_state, set_rank_state
from runtimes import faults


@dataclass(frozen=True)
class GDFQConfig:
    latent_dim: int = 100
    gen_width: int = 128
    gen_lr: float = 1e-3
    gen_betas: tuple[float, float] = (0.5, 0.999)  # GDFQ's code
    # ×gen_lr_gamma at these generator steps, warm-up included: GDFQ's epochs 100/200/300 of 200 iterations
    gen_lr_milestones: tuple[int, ...] = (20000, 40000, 60000)
    gen_lr_gamma: float = 0.1
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
        check_adam_schedule(self)


# Budget presets (pipeline/synthesis/presets.py; docs/methods.md §3). paper: a 4-epoch generator warm-up of
# batch 200, then 400 epochs in all (79,200 Q steps of batch 200, G and Q alternating).
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {**FAST_COMMON, "synthesis.options": dict(GEN_FAST)},
    "paper": {"synthesis.options": {"warmup_steps": 800, "gen_batch_size": 200}, "qat.steps": 79200, "qat.batch_size": 200},
}
# GDFQ's training protocol (the paper profile): SGD-Nesterov lr 1e-4, wd 1e-4, ×0.1 at epochs 100/200/300 of the
# whole run (Q steps 19,200/39,200/59,200 after the 4 warm-up epochs). Ranges: the default ema_freeze_step 1 (moved
# during the warm-up, here by calibration on the warmed-up generator's samples, then frozen).
PROTOCOL: dict[str, Any] = sgd_protocol(1e-4, milestones_epochs=(100, 200, 300), first_q_epoch=4)


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
        torch.manual_seed(seed)  # the run's seed on every rank: data-parallel ranks start from one generator
        return self.placement.model(Generator(self.generator_spec(), card.input_shape, card.num_classes))

    def probe(self, teacher: torch.nn.Module) -> TeacherProbe:
        return TeacherProbe(teacher, self.name)

    def generator_loss(self, probe: TeacherProbe, sampler: Sampler, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The G step's loss on a fresh batch, and that batch (images, labels): the Q step after it trains on it."""
        x, y = sampler(self.cfg.gen_batch_size)
        return F.cross_entropy(probe(x), y) + self.cfg.bns_weight * probe.bns_loss(), x, y

    def generator_step(self, g: Generator, start: int = 0) -> engine.OptimizerStep:
        """The generator's optimiser and schedule, ``start`` generator steps in (QAT continues after the warm-up)."""
        c = self.cfg
        return generator_step(g, c.gen_lr, c.gen_betas, c.gen_lr_milestones, c.gen_lr_gamma, self.placement, start)

    def warmup(self, teacher: torch.nn.Module, card: ModelCard, seed: int, calib: RealData | None = None) -> Generator:
        """Train the generator with Q frozen; resumes from the synth stage's ``warmup`` checkpoint when there is one."""
        place = self.placement
        g = self.make_generator(card, seed)
        g.train()
        sampler = Sampler(g, card, rank_seed(seed, place.rank))  # each rank its own samples, gradients averaged
        step_g = self.generator_step(g)
        self.prepare(teacher, card, calib)
        steps, streams = self.cfg.warmup_steps, {"sampler": sampler.rng, **self.rng_streams()}
        ck = self.checkpoints.phase("warmup", steps, self.checkpoints.warmup_every, save_at_end=True)
        start = 0
        if (resumed := ck.resume()) is not None:
            load_training_state(g, step_g, resumed.state)
            set_rank_state(resumed.rank, streams)
            start = resumed.step
        with self.probe(teacher) as probe:
            for step in progress(range(start, steps), desc=f"{self.name} generator warm-up", initial=start):
                faults.point("synth.generator_step")
                with engine.step_scope():
                    with place.autocast():
                        loss, _, _ = self.generator_loss(probe, sampler, step)
                    step_g(loss)
                ck.maybe_save(step + 1, lambda: training_state(g, step_g), lambda: rank_state(streams))
        return g

    def rng_streams(self) -> dict[str, torch.Generator]:
        """The method's own random streams besides the sampler's (FDDA's noise), for checkpoints."""
        return {}

    def prepare(self, teacher: torch.nn.Module, card: ModelCard, calib: RealData | None) -> None:
        """Hook for subclasses needing per-run state before generator training (FDDA's centres)."""

    def synthesize(self, teacher: torch.nn.Module, card: ModelCard, num_images: int, seed: int,
                   calib: RealData | None = None) -> SyntheticSet:
        g = self.warmup(teacher, card, seed, calib)
        images, labels = Sampler(g, card, rank_seed(seed + 1, self.placement.rank)).pool(num_images)
        meta = {"config": asdict(self.cfg), "role": "samples of the warmed-up generator (range calibration)"}
        return SyntheticSet(images, labels, seed, self.name, meta, extras=state_to_arrays(g))

    def restore(self, job: QATJob) -> Generator:
        g = self.placement.model(Generator(self.generator_spec(), job.card.input_shape, job.card.num_classes))
        arrays_to_state(g, job.pool.extras)
        return g.train()

    # --- quantized model ---------------------------------------------------
    def student_loss(self, s_logits: torch.Tensor, t_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        loss = c.kd_weight * kd_kl(s_logits, t_logits, c.temperature)
        return loss + c.ce_weight * F.cross_entropy(s_logits.float(), y) if c.ce_weight else loss

    def q_batch(self, job: QATJob, sampler: Sampler, n: int, g_batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The Q step's ``n`` images (this rank's share of ``qat.batch_size``): the G step's batch (``g_batch``, drawn
        before the generator's update), as GDFQ trains Q on ``images.detach()``; fresh samples for what it lacks when
        ``gen_batch_size`` is smaller than the Q batch."""
        x, y = g_batch[0].detach()[:n], g_batch[1][:n]
        if len(y) < n:
            with torch.no_grad():
                xf, yf = sampler(n - len(y))
            x, y = torch.cat([x, xf.to(x.dtype)]), torch.cat([y, yf])
        return x, y

    def train(self, job: QATJob) -> list[float]:
        s = job.settings
        if not s.steps:
            return []
        place = self.placement
        g = self.restore(job)
        sampler = Sampler(g, job.card, rank_seed(job.seed + 7, place.rank))
        step_g = self.generator_step(g, start=self.warmup_steps_taken())
        self.prepare(job.teacher, job.card, self.real_data(job))
        with self.probe(job.teacher) as probe:
            recipe = GeneratorKD(self, job, probe, sampler, step_g)
            return engine.train(job.student, job.teacher, recipe, s, place, desc=f"{self.name} qat", checkpoint=job.checkpoint)

    def real_data(self, job: QATJob) -> RealData | None:
        return None

    def warmup_steps_taken(self) -> int:
        """Generator steps before QAT: the warm-up's (the schedule's position when QAT continues it)."""
        return self.cfg.warmup_steps


class GeneratorKD(engine.Recipe):
    """GDFQ's alternation as a recipe of the one loop: a generator step before each Q step, Q learns on its batch."""

    def __init__(self, method: GDFQ, job: QATJob, probe: TeacherProbe, sampler: Sampler, step_g: engine.OptimizerStep) -> None:
        self.m, self.job, self.probe, self.sampler, self.step_g = method, job, probe, sampler, step_g
        place = method.placement
        self.images_per_step = shard(job.settings.batch_size, place.rank, place.world_size)

    def before_step(self, step: int) -> None:
        with self.m.placement.autocast():  # the generator's own step count: the warm-up's, then this loop's
            loss_g, x, y = self.m.generator_loss(self.probe, self.sampler, self.m.warmup_steps_taken() + step)
        self.step_g(loss_g)
        self.g_batch = (x.detach(), y)

    def loss(self, step: int, backward: engine.Backward) -> torch.Tensor:
        x, y = self.m.q_batch(self.job, self.sampler, self.images_per_step, self.g_batch)
        with torch.no_grad():
            t_logits = self.job.teacher(x)
        loss = self.m.student_loss(self.job.student(x), t_logits, y)
        backward(loss)
        return loss.detach()

    def state_dict(self) -> dict:
        return training_state(self.sampler.g, self.step_g)

    def load_state_dict(self, state: dict) -> None:
        load_training_state(self.sampler.g, self.step_g, state)

    def rng_streams(self) -> dict[str, torch.Generator]:
        return {"sampler": self.sampler.rng, **self.m.rng_streams()}


register_method("gdfq", GDFQConfig, presets=PRESETS, protocol=PROTOCOL)(GDFQ)
