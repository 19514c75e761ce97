"""FDDA (ECCV 2022): per-class BN-statistics centres from real images; **not data-free** (docs/methods.md §2.6).

Needs ``--calib-data`` with at least one real image per class. The per-class
"BNS centres" are the BN-input channel mean/var of that class's calibration
images (averaged when a class has several). A GDFQ generator is trained with

``L_G = 0.5·CE + 0.2·BNS_global + 0.9·D-BNS + 0.01·C-BNS + 0.5·CE_class``

where the last three use a batch of one random class l and only the deeper half
of the BN layers (``start = (L+1)//2 − 2``): C-BNS = MSE to the centre of l,
D-BNS = MSE to the centre plus fresh Gaussian noise (σ 0.5 on means, 1.0 on
variances). Q is trained on half real calibration images, half generated, with
KD (α=20, T=20, batchmean) + CE.

Deviations: FDDA gives classes whose calibration image the teacher
misclassifies N(0, 1) targets for the first 5 epochs; here their centre terms
are simply used from the start. The pipeline's Adam/cosine optimiser for Q.
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
from pipeline.synthesis.presets import FAST_COMMON, GEN_FAST
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.real_fraction < 1.0 or self.mean_noise < 0 or self.var_noise < 0:
            raise ValueError("real_fraction in [0, 1), mean_noise >= 0 and var_noise >= 0 are required")


# Budget presets (pipeline/synthesis/presets.py; docs/methods.md §3). fast: GDFQ's with the generator batch of
# the ImageNet script (16). paper: a 50-epoch generator warm-up of batch 16, then 350 epochs of 16 real + 16
# generated images.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {**FAST_COMMON, "synthesis.options": {**GEN_FAST, "gen_batch_size": 16}},
    "paper": {"synthesis.options": {"warmup_steps": 10000, "gen_batch_size": 16}, "qat.steps": 70000,
              "qat.batch_size": 32, "qat.ema_freeze_step": 1},
}


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
        self.centres = class_centres(teacher, torch.from_numpy(calib.images).to(device), torch.from_numpy(calib.labels).to(device),
                                     card.num_classes)
        self.layers = deeper_half(len(require_batchnorm(teacher, self.name)))
        self.noise = self.placement.generator(rank_seed(12345, self.placement.rank))

    def rng_streams(self) -> dict[str, torch.Generator]:
        return {"noise": self.noise}

    def generator_loss(self, probe: TeacherProbe, sampler: Sampler, step: int) -> torch.Tensor:
        c = self.cfg
        x, y = sampler(c.gen_batch_size)
        loss = c.ce_weight_g * F.cross_entropy(probe(x), y) + c.bns_weight * probe.bns_loss()
        cls = int(torch.randint(0, sampler.card.num_classes, (), generator=sampler.rng, device=sampler.device))  # a host read: the class picks the centre
        xc, yc = sampler(c.gen_batch_size, sampler.labels(c.gen_batch_size, cls))
        ce_class = F.cross_entropy(probe(xc), yc)
        c_bns, d_bns = centre_losses(probe.hook, self.centres[cls], self.layers, c.mean_noise, c.var_noise, self.noise)
        return loss + c.dbns_weight * d_bns + c.cbns_weight * c_bns + c.ce_class_weight * ce_class

    def synthesize(self, teacher: torch.nn.Module, card: ModelCard, num_images: int, seed: int,
                   calib: RealData | None = None) -> SyntheticSet:
        out = super().synthesize(teacher, card, num_images, seed, calib)
        out.extras["calib_images"] = np.asarray(calib.images, dtype=np.float32)
        out.extras["calib_labels"] = np.asarray(calib.labels, dtype=np.int64)
        out.meta["calib_images"] = int(len(calib.labels))
        return out

    def real_data(self, job: QATJob) -> RealData:
        return RealData(job.pool.extras["calib_images"], job.pool.extras["calib_labels"])

    def calibrate(self, job: QATJob) -> None:
        from pipeline.quant.calibrate import calibrate

        real = torch.from_numpy(job.pool.extras["calib_images"])
        x = torch.cat([real, torch.from_numpy(job.pool.images)])[: max(job.calib_images, len(real))].to(self.placement.device)
        calibrate(job.student, [x[i : i + 64] for i in range(0, len(x), 64)], act_init=job.act_init)

    def q_batch(self, job: QATJob, sampler: Sampler, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_real = int(round(n * self.cfg.real_fraction))
        if getattr(self, "_real", None) is None:  # the real images once on the device, not copied every step
            self._real = (torch.from_numpy(job.pool.extras["calib_images"]).to(sampler.device),
                          torch.from_numpy(job.pool.extras["calib_labels"]).to(sampler.device))
        real_x, real_y = self._real
        idx = torch.randint(0, len(real_y), (n_real,), generator=sampler.rng, device=sampler.device)
        with torch.no_grad():
            xg, yg = sampler(n - n_real)
        return torch.cat([real_x[idx], xg]), torch.cat([real_y[idx], yg])


register_method("fdda", FDDAConfig, presets=PRESETS)(FDDA)
