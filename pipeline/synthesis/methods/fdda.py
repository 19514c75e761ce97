"""FDDA (ECCV 2022): per-class BN-statistics centres from real images; **not data-free** (docs/methods.md §2.6).

Needs ``--calib-data`` with at least one real image per class. The per-class
"BNS centres" are the BN-input channel mean/var of that class's calibration
images (averaged when a class has several). A GDFQ generator is trained with

``L_G = 0.5·CE + 0.2·BNS_global + 0.9·D-BNS + 0.01·C-BNS + 0.5·CE_class``

where the last three use a batch of one random class l and only the deeper half
of the BN layers (``start = (L+1)//2 − 2``): C-BNS = MSE to the centre of l,
D-BNS = MSE to the centre plus fresh Gaussian noise (σ 0.5 on means, 1.0 on
variances). A class whose calibration images the teacher misclassifies has no
trustworthy centre: for the first 5 epochs (``misclassified_steps`` generator
steps) its batch gets D-BNS against fresh N(0, 1) targets over every BN layer
instead (×2, no C-BNS), and after that it is never the class l again, as in
FDDA's trainer. The ranges are calibrated on generated images only (FDDA's ranges
move during the warm-up, before any real image reaches Q). Q is trained on half
real calibration images, each randomly resized-cropped (scale (0.08, 1)) and
flipped as FDDA's loader does, half the G step's images, with KD (α=20, T=20,
batchmean) + CE.

Deviations: the pipeline's Adam/cosine optimiser for Q in the deploy profile (FDDA: SGD-Nesterov lr
1e-6, cosine with T_max 20,000 Q steps, which PyTorch lets rise again over the 70,000: the paper
profile's :data:`PROTOCOL` decays once over the run instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError
from pipeline.models.card import ModelCard
from pipeline.synthesis.base import QATJob, RealData, register_method
from pipeline.synthesis.bn_stats import BNStatHook, BNTargets, require_batchnorm
from pipeline.synthesis.dataset import SyntheticSet
from pipeline.synthesis.generator import Sampler, TeacherProbe
from pipeline.synthesis.methods.gdfq import GDFQ, GDFQConfig
from pipeline.synthesis import augment as aug
from pipeline.synthesis.presets import FAST_COMMON, GEN_FAST, sgd_protocol
from pipeline.train.distributed import rank_seed


@dataclass(frozen=True)
class FDDAConfig(GDFQConfig):
    gen_batch_size: int = 16  # ImageNet script: 16
    ce_weight_g: float = 0.5
    bns_weight: float = 0.2
    dbns_weight: float = 0.9
    cbns_weight: float = 0.01
    ce_class_weight: float = 0.5
    mean_noise: float = 0.5
    var_noise: float = 1.0
    kd_weight: float = 20.0
    temperature: float = 20.0
    ce_weight: float = 1.0
    real_fraction: float = 0.5  # of each Q batch: 16 real + 16 generated
    real_augment: bool = True  # FDDA's loader: RandomResizedCrop (scale 0.08-1) + flip on every real image
    misclassified_steps: int = 1000  # generator steps (5 epochs) in which misclassified classes get N(0, 1) targets

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.real_fraction < 1.0 or self.mean_noise < 0 or self.var_noise < 0 or self.misclassified_steps < 0:
            raise ValueError("real_fraction in [0, 1), mean_noise >= 0, var_noise >= 0 and misclassified_steps >= 0 are required")


# Budget presets (pipeline/synthesis/presets.py; docs/methods.md §3). fast: GDFQ's with the generator batch of
# the ImageNet script (16). paper: a 50-epoch generator warm-up of batch 16, then 350 epochs of 16 real + 16
# generated images.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {**FAST_COMMON, "synthesis.options": {**GEN_FAST, "gen_batch_size": 16}},
    "paper": {"synthesis.options": {"warmup_steps": 10000, "gen_batch_size": 16}, "qat.steps": 70000, "qat.batch_size": 32},
}
# FDDA's training protocol (the paper profile; trainer_DBNS_CBNS.py): Q by SGD-Nesterov lr 1e-6, wd 1e-4, cosine.
PROTOCOL: dict[str, Any] = {**sgd_protocol(1e-6), "qat.lr_schedule": "cosine"}


def deeper_half(num_bn: int) -> slice:
    """FDDA's layer subset: BN layers from ``(L + 1)//2 − 2`` on (at least the last one)."""
    return slice(min(max(0, (num_bn + 1) // 2 - 2), num_bn - 1), None)


@torch.no_grad()
def class_centres(teacher: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[BNTargets]:
    """Per class: the mean over its images of each BN input's per-image channel mean and variance."""
    bns = require_batchnorm(teacher, "fdda")
    teacher.eval()
    with BNStatHook(bns, per_sample=True) as hook:
        teacher(images)
        means, vars_ = list(hook.means), list(hook.vars)
    return [BNTargets([m[labels == k].mean(0) for m in means], [v[labels == k].mean(0) for v in vars_]) for k in range(num_classes)]


@torch.no_grad()
def correctly_classified(teacher: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[int]:
    """The classes whose calibration images the teacher classifies as their class (most of them, when several)."""
    teacher.eval()
    hits = (teacher(images).argmax(1) == labels).float()
    return [k for k in range(num_classes) if bool((labels == k).any()) and float(hits[labels == k].mean()) > 0.5]


def noise_target_loss(hook: BNStatHook, gen: torch.Generator) -> torch.Tensor:
    """FDDA's D-BNS for a class without a centre: every BN layer's batch mean and variance against fresh N(0, 1)
    targets, 2 × the average over the layers."""
    total = torch.zeros((), device=gen.device)
    for mu, var in zip(hook.means, hook.vars):
        total = total + F.mse_loss(mu, torch.randn(mu.shape, generator=gen, device=gen.device))
        total = total + F.mse_loss(var, torch.randn(var.shape, generator=gen, device=gen.device))
    return 2.0 * total / max(1, len(hook.means))


def centre_losses(hook: BNStatHook, centre: BNTargets, layers: slice, mean_noise: float, var_noise: float,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(C-BNS, D-BNS) of the last forward pass over ``layers``: MSE to the centre, and to the centre + noise."""
    device = centre.means[0].device
    c_bns, d_bns = torch.zeros((), device=device), torch.zeros((), device=device)
    idx = list(range(len(hook.bns)))[layers]
    for i in idx:
        mu, var = hook.means[i], hook.vars[i]
        tm, tv = centre.means[i], centre.vars[i]
        c_bns = c_bns + F.mse_loss(mu, tm) + F.mse_loss(var, tv)
        nm = tm + mean_noise * torch.randn(tm.shape, generator=gen, device=gen.device)
        nv = tv + var_noise * torch.randn(tv.shape, generator=gen, device=gen.device)
        d_bns = d_bns + F.mse_loss(mu, nm) + F.mse_loss(var, nv)
    return c_bns / max(1, len(idx)), d_bns / max(1, len(idx))


class FDDA(GDFQ):
    name = "fdda"
    needs_calib_data = True
    cfg: FDDAConfig

    def prepare(self, teacher: torch.nn.Module, card: ModelCard, calib: RealData | None) -> None:
        if calib is None:
            raise ConfigError("fdda is not data-free: it needs --calib-data with at least 1 real image per class")
        missing = sorted(set(range(card.num_classes)) - set(np.asarray(calib.labels).tolist()))
        if missing:
            raise ConfigError(f"fdda needs at least 1 calibration image per class; --calib-data has none for class(es) "
                              f"{', '.join(map(str, missing[:10]))}{' ...' if len(missing) > 10 else ''}")
        device = self.placement.device
        images, labels = torch.from_numpy(calib.images).to(device), torch.from_numpy(calib.labels).to(device)
        self.centres = class_centres(teacher, images, labels, card.num_classes)
        self.correct = correctly_classified(teacher, images, labels, card.num_classes)
        self.layers = deeper_half(len(require_batchnorm(teacher, self.name)))
        self.noise = self.placement.generator(rank_seed(12345, self.placement.rank))

    def rng_streams(self) -> dict[str, torch.Generator]:
        return {"noise": self.noise}

    def generator_loss(self, probe: TeacherProbe, sampler: Sampler, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.cfg
        x, y = sampler(c.gen_batch_size)
        loss = c.ce_weight_g * F.cross_entropy(probe(x), y) + c.bns_weight * probe.bns_loss()
        cls = self.pick_class(sampler, step)
        xc, yc = sampler(c.gen_batch_size, sampler.labels(c.gen_batch_size, cls))
        ce_class = F.cross_entropy(probe(xc), yc)
        if cls in self.correct:
            c_bns, d_bns = centre_losses(probe.hook, self.centres[cls], self.layers, c.mean_noise, c.var_noise, self.noise)
        else:  # no trustworthy centre (the first misclassified_steps only): N(0, 1) targets, no centre term
            c_bns, d_bns = torch.zeros((), device=x.device), noise_target_loss(probe.hook, self.noise)
        return loss + c.dbns_weight * d_bns + c.cbns_weight * c_bns + c.ce_class_weight * ce_class, x, y

    def pick_class(self, sampler: Sampler, step: int) -> int:
        """The class l of this G step: any class for the first ``misclassified_steps`` generator steps, then only the
        correctly classified ones (FDDA redraws until it hits one: the same uniform choice among them). A host read."""
        k = int(torch.randint(0, sampler.card.num_classes, (), generator=sampler.rng, device=sampler.device))
        if step < self.cfg.misclassified_steps or not self.correct or k in self.correct:
            return k
        return self.correct[int(torch.randint(0, len(self.correct), (), generator=sampler.rng, device=sampler.device))]

    def synthesize(self, teacher: torch.nn.Module, card: ModelCard, num_images: int, seed: int,
                   calib: RealData | None = None) -> SyntheticSet:
        out = super().synthesize(teacher, card, num_images, seed, calib)
        out.extras["calib_images"] = np.asarray(calib.images, dtype=np.float32)
        out.extras["calib_labels"] = np.asarray(calib.labels, dtype=np.int64)
        out.meta["calib_images"] = int(len(calib.labels))
        return out

    def real_data(self, job: QATJob) -> RealData:
        return RealData(job.pool.extras["calib_images"], job.pool.extras["calib_labels"])

    def q_batch(self, job: QATJob, sampler: Sampler, n: int, g_batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``real_fraction`` of the ``n`` images real (drawn with replacement), the rest the G step's batch (GDFQ's)."""
        n_real = int(round(n * self.cfg.real_fraction))
        if getattr(self, "_real", None) is None:  # the real images once on the device, not copied every step
            self._real = (torch.from_numpy(job.pool.extras["calib_images"]).to(sampler.device),
                          torch.from_numpy(job.pool.extras["calib_labels"]).to(sampler.device))
        real_x, real_y = self._real
        idx = torch.randint(0, len(real_y), (n_real,), generator=sampler.rng, device=sampler.device)
        real = real_x[idx]
        if self.cfg.real_augment:
            real = aug.apply([aug.RandomResizedCrop(1.0, scale=(0.08, 1.0)), aug.RandomFlip()], real, sampler.rng)
        xg, yg = super().q_batch(job, sampler, n - n_real, g_batch)
        return torch.cat([real, xg.to(real.dtype)]), torch.cat([real_y[idx], yg])


register_method("fdda", FDDAConfig, presets=PRESETS, protocol=PROTOCOL)(FDDA)
