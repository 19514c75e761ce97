"""LRQ (arXiv 2211.06816): long-range generator, Adversarial Margin Add, decoupled KD (docs/methods.md §2.7).

No public code exists, so every unpublished value is a parameter:

* generator: GDFQ's, with a VAN Large Kernel Attention block (depth-wise k×k →
  dilated depth-wise → 1×1, ⊙ input) after each up-sampling block. Kernel
  sizes are not published: the defaults are VAN's decomposition of a 21×21
  kernel (5×5, then 7×7 with dilation 3), which covers the whole 7×7/14×14
  feature maps of a 28×28 input;
* AMA: the generator's CE is computed on ArcFace logits of the teacher's own
  classifier, ``s·cos(θ_y + m)`` for the target and ``s·cos θ_j`` otherwise,
  with θ the angle between the penultimate feature and the class weight; s, m
  are not published: ArcFace's published defaults s=64, m=0.5;
* Q: decoupled KD ``α·TCKD + β·NCKD`` on the generator's labels; LRQ's α, β, T
  are not published: DKD's CIFAR defaults α=1, β=8, T=4; plus GDFQ's CE(S, y).

The generator loss keeps GDFQ's 0.1·BNS. The rest (warm-up, alternation,
optimisers) is GDFQ's, see :mod:`pipeline.synthesis.methods.gdfq`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.quant.distill import dkd
from pipeline.synthesis.base import register_method
from pipeline.synthesis.generator import GeneratorSpec, Sampler, TeacherProbe
from pipeline.synthesis.hardness import angular_margin_ce
from pipeline.synthesis.methods.gdfq import GDFQ, GDFQConfig
from pipeline.synthesis.methods.gdfq import PRESETS as GDFQ_PRESETS
from pipeline.synthesis.methods.gdfq import PROTOCOL as GDFQ_PROTOCOL


@dataclass(frozen=True)
class LRQConfig(GDFQConfig):
    lka_kernel: int = 5
    lka_dilated_kernel: int = 7
    lka_dilation: int = 3
    margin: float = 0.5  # ArcFace default (LRQ: n/r)
    scale: float = 64.0  # ArcFace default (LRQ: n/r)
    dkd_alpha: float = 1.0  # DKD CIFAR default (LRQ: n/r)
    dkd_beta: float = 8.0
    dkd_temperature: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.lka_kernel, self.lka_dilated_kernel) < 1 or self.lka_kernel % 2 == 0 or self.lka_dilated_kernel % 2 == 0:
            raise ValueError("LKA kernel sizes must be odd and >= 1")
        if self.lka_dilation < 1 or self.scale <= 0 or self.dkd_temperature <= 0:
            raise ValueError("lka_dilation >= 1, scale > 0 and dkd_temperature > 0 are required")


# Budget presets and training protocol: GDFQ's (same schedule, docs/methods.md §3; LRQ publishes no optimiser).
PRESETS: dict[str, dict[str, Any]] = {budget: dict(preset) for budget, preset in GDFQ_PRESETS.items()}
PROTOCOL: dict[str, Any] = dict(GDFQ_PROTOCOL)


class LRQ(GDFQ):
    name = "lrq"
    cfg: LRQConfig

    def generator_spec(self) -> GeneratorSpec:
        c = self.cfg
        return GeneratorSpec(latent_dim=c.latent_dim, width=c.gen_width, conditional=True, bn_eps=c.bn_eps, lka=True,
                             lka_kernel=c.lka_kernel, lka_dilated_kernel=c.lka_dilated_kernel, lka_dilation=c.lka_dilation)

    def probe(self, teacher: torch.nn.Module) -> TeacherProbe:
        return TeacherProbe(teacher, self.name, penultimate=True)

    def generator_loss(self, probe: TeacherProbe, sampler: Sampler, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = sampler(self.cfg.gen_batch_size)
        probe(x)
        ama = angular_margin_ce(probe.features, probe.fc.weight, y, self.cfg.margin, self.cfg.scale)
        return ama + self.cfg.bns_weight * probe.bns_loss(), x, y

    def student_loss(self, s_logits: torch.Tensor, t_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        loss = dkd(s_logits, t_logits, y, c.dkd_alpha, c.dkd_beta, c.dkd_temperature)
        return loss + c.ce_weight * F.cross_entropy(s_logits, y) if c.ce_weight else loss


register_method("lrq", LRQConfig, presets=PRESETS, protocol=PROTOCOL)(LRQ)
