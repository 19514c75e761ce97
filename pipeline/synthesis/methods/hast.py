"""HAST (CVPR 2023): hard samples, feature alignment, sample-difficulty promotion (docs/methods.md §2.5).

Stage 1 (synth): direct inversion of a fixed pool with
``L = BNS(MSE mean + MSE var) + β·mean_i (1 − p_i)^γ·CE_i`` (β=10, γ=2 on
CIFAR), init N(0, 1), Adam lr 0.5 (normalised units), no priors, no
augmentation on CIFAR. A GDFQ
generator (CE + 0.1·BNS, batch 16) is also trained, Q frozen, *only* to
calibrate the activation ranges; its weights ride along in the pool's extras.

Stage 2 (qat): Q trained on the fixed pool, every image cropped (RandomResizedCrop,
scale (0.5, 1), ratio (3/4, 4/3), its own box) and flipped with p=0.5, as HAST's
dataset does; ``L_S = α·T²·KL_batchmean(S‖T) + λ·FA`` (α=20, T=20, λ=1000 on
CIFAR-10; CE computed in HAST's code but unused, so left out), FA = Σ_l
mean((a_q − a_fp)²) with a = L2-normalised per-sample channel attention at
every residual body output; plus the FGSM copy ``x' = x + ε·sign(∇_x L_S)``
(ε=0.01 in normalised units; the gradient flows through the teacher and the
student, as in HAST's code; not clipped) and the loss on both.

Deviations: in the deploy profile, the pipeline's Adam/cosine optimiser instead of SGD-Nesterov lr
1e-5 (Adam is scale-free, so the 8000 KD coefficient only sets the ratio to λ·FA), and the pipeline's
image optimiser for the inversion, Adam betas (0.5, 0.9) with cosine decay, instead of HAST's Adam
defaults (0.9, 0.999) with ReduceLROnPlateau(patience 50): within the ``fast`` budget's 200 iterations
HAST's betas left a pool on which four QAT variants reached 80.8–91.0 % at W4A4 (seed 0), against 90.8
and 91.1 % on the pipeline's (``benchmarks/hast_pool.py``; its table is in benchmarks/RESULTS.md). The paper
profile applies HAST's (:data:`PROTOCOL`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from pipeline.models.card import ModelCard
from pipeline.quant.calibrate import calibrate
from pipeline.quant.distill import feature_alignment, kd_kl
from pipeline.quant.features import FeaturePair
from pipeline.train import engine
from pipeline.train.distributed import rank_seed, shard
from pipeline.synthesis import augment as aug
from pipeline.synthesis.base import QATJob, RealData, Strategy, register_method
from pipeline.synthesis.dataset import SyntheticSet
from pipeline.synthesis.generator import Sampler, check_adam_schedule, state_to_arrays
from pipeline.synthesis.inversion import BNInversion, InversionConfig
from pipeline.synthesis.methods.gdfq import GDFQ, GDFQConfig
from pipeline.synthesis.presets import FAST_COMMON, FAST_SYNTH_STEPS, INV_FAST, sgd_protocol


@dataclass(frozen=True)
class HASTConfig:
    # stage 1: hard-sample inversion
    batch_size: int = 256
    iterations: int = 1000
    lr: float = 0.5  # normalised-input units
    # the image optimiser: the pipeline's (DeepInversion's betas, cosine); HAST's distill_data.py keeps Adam's own
    # betas (0.9, 0.999) with plateau (patience 50, min_lr 1e-4): the paper profile's
    betas: tuple[float, float] = (0.5, 0.9)
    lr_schedule: str = "cosine"
    plateau_patience: int = 50
    beta: float = 10.0  # CIFAR; ImageNet 0.1
    gamma: float = 2.0  # CIFAR; ImageNet 0.5
    rrc_p: float = 0.0  # inversion-time RandomResizedCrop (+flip): ImageNet 0.5, CIFAR 0
    # range-calibration generator (GDFQ, Q frozen)
    gen_warmup_steps: int = 800  # 4 epochs × 200 iterations
    gen_batch_size: int = 16
    gen_width: int = 128
    latent_dim: int = 100
    # stage 2: QAT
    kd_weight: float = 20.0  # α
    temperature: float = 20.0
    fa_weight: float = 1000.0  # λ: CIFAR-10 1000, CIFAR-100 2000, ImageNet 4000
    fgsm_eps: float = 0.01  # CIFAR-100: 0.02
    qat_rrc_p: float = 1.0  # HAST crops every image
    qat_flip: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.iterations < 1 or self.gen_batch_size < 2 or self.gen_warmup_steps < 0:
            raise ValueError("batch_size >= 2, iterations >= 1, gen_batch_size >= 2, gen_warmup_steps >= 0")
        if self.temperature <= 0 or self.fgsm_eps < 0 or self.fa_weight < 0:
            raise ValueError("temperature > 0, fgsm_eps >= 0 and fa_weight >= 0 are required")
        check_adam_schedule(self, prefix="")


# Budget presets (pipeline/synthesis/presets.py; docs/methods.md §3). fast: the inversion budget, and the range
# generator warmed up as long. paper: BN inversion's IntraQ budget plus a 4-epoch generator for ranges, then
# 147 epochs × 200 Q steps of batch 64 (HAST's 151 epochs, of which the first 4 only calibrate the ranges).
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {**FAST_COMMON, "synthesis.options": {**INV_FAST, "gen_warmup_steps": FAST_SYNTH_STEPS,
                                                  "gen_batch_size": 16, "gen_width": 64}},
    "paper": {"synthesis.num_images": 5120, "synthesis.options": {"batch_size": 256, "iterations": 1000, "gen_warmup_steps": 800},
              "qat.steps": 29400, "qat.batch_size": 64},
}
# HAST's training protocol (the paper profile; config/cifar10_resnet20.hocon, trainer_direct.py): SGD-Nesterov lr 1e-5,
# wd 1e-4, ×0.1 at epochs 20/40/60 counted from the range epochs (Q steps 3,200/7,200/11,200); the inversion's
# Adam betas (0.9, 0.999) and ReduceLROnPlateau(patience 50).
PROTOCOL: dict[str, Any] = {**sgd_protocol(1e-5, milestones_epochs=(20, 40, 60), first_q_epoch=4),
                            "synthesis.options": {"betas": [0.9, 0.999], "lr_schedule": "plateau"}}


class HAST(Strategy):
    name = "hast"

    def __init__(self, cfg: HASTConfig) -> None:
        self.cfg = cfg

    def _inversion(self, card: ModelCard) -> BNInversion:
        c = self.cfg
        std = sum(card.std) / len(card.std)
        inv = BNInversion(InversionConfig(batch_size=c.batch_size, iterations=c.iterations, lr=c.lr * std, stat_loss="mse",
                                          label_loss="focal", label_weight=c.beta, focal_gamma=c.gamma, tv_weight=0.0,
                                          l2_weight=0.0, jitter=0, flip=c.rrc_p > 0, rrc_p=c.rrc_p, betas=c.betas,
                                          lr_schedule=c.lr_schedule, plateau_patience=c.plateau_patience))
        inv.placement, inv.checkpoints = self.placement, self.checkpoints
        return inv

    def _gdfq(self) -> GDFQ:
        c = self.cfg
        g = GDFQ(GDFQConfig(latent_dim=c.latent_dim, gen_width=c.gen_width, gen_batch_size=c.gen_batch_size,
                            warmup_steps=c.gen_warmup_steps))
        g.placement, g.checkpoints = self.placement, self.checkpoints
        return g

    def synthesize(self, teacher: torch.nn.Module, card: ModelCard, num_images: int, seed: int,
                   calib: RealData | None = None) -> SyntheticSet:
        pool = self._inversion(card).synthesize(teacher, card, num_images, seed)
        g = self._gdfq().warmup(teacher, card, seed + 1)
        pool.method, pool.meta["config"] = self.name, asdict(self.cfg)
        pool.extras = state_to_arrays(g)
        return pool

    def calibrate(self, job: QATJob) -> None:
        """Ranges from the warm-up generator's samples (HAST epochs 0–3), not from the hard-sample pool."""
        g = self._gdfq().restore(job)
        images, _ = Sampler(g, job.card, job.seed + 3).pool(job.calib_images, batch_size=64)  # same on every rank
        x = torch.from_numpy(images).to(self.placement.device)
        calibrate(job.student, [x[i : i + 64] for i in range(0, len(x), 64)], act_init=job.act_init)

    def student_loss(self, pair: FeaturePair, x: torch.Tensor) -> torch.Tensor:
        """α·T²·KL + λ·FA on ``x``; when ``x`` requires grad (the FGSM direction), the teacher's forward keeps its graph
        too, so ∇_x goes through both networks as in HAST's code (the teacher copy's weights are frozen)."""
        c = self.cfg
        with torch.set_grad_enabled(x.requires_grad):
            t_logits, t_feats = pair.teacher(x)
        s_logits, s_feats = pair.student(x)
        return c.kd_weight * kd_kl(s_logits, t_logits, c.temperature) + c.fa_weight * feature_alignment(s_feats, t_feats)

    def train(self, job: QATJob) -> list[float]:
        if not job.settings.steps:
            return []
        return engine.train(job.student, job.teacher, HardSampleKD(self, job), job.settings, self.placement, desc="hast qat",
                            checkpoint=job.checkpoint)


class HardSampleKD(engine.Recipe):
    """HAST's Q step: augmented pool images, KD + feature alignment, then the same on their FGSM copy (two backwards)."""

    def __init__(self, method: HAST, job: QATJob) -> None:
        c, place = method.cfg, method.placement
        self.m, self.c = method, c
        self.images = place.images(torch.from_numpy(job.pool.images))
        self.gen = place.generator(rank_seed(job.seed, place.rank))
        self.augs: list[aug.Augmentation] = []
        if c.qat_rrc_p > 0:
            self.augs.append(aug.RandomResizedCrop(c.qat_rrc_p, scale=(0.5, 1.0)))
        if c.qat_flip:
            self.augs.append(aug.RandomFlip())
        self.pair = FeaturePair(job.teacher, job.student, "blocks", self.images[:2])
        self.eps = c.fgsm_eps * torch.tensor(job.card.std, dtype=self.images.dtype, device=place.device).view(1, -1, 1, 1)
        self.images_per_step = min(shard(job.settings.batch_size, place.rank, place.world_size), len(self.images))

    def loss(self, step: int, backward: engine.Backward) -> torch.Tensor:
        idx = torch.randint(0, len(self.images), (self.images_per_step,), generator=self.gen, device=self.images.device)
        x = aug.apply(self.augs, self.images[idx], self.gen).requires_grad_(self.c.fgsm_eps > 0)
        loss = self.m.student_loss(self.pair, x)
        backward(loss)
        if self.c.fgsm_eps <= 0:
            return loss.detach()
        # sample-difficulty promotion: the FGSM copy (not clipped to the pixel range, as in HAST), loss on both
        x_adv = (x + self.eps * x.grad.sign()).detach()
        loss_adv = self.m.student_loss(self.pair, x_adv)
        backward(loss_adv)
        return torch.stack([loss.detach(), loss_adv.detach()])

    def rng_streams(self) -> dict[str, torch.Generator]:
        return {"batches": self.gen}


register_method("hast", HASTConfig, presets=PRESETS, protocol=PROTOCOL)(HAST)
