"""Label/hardness shaping for synthesis losses (docs/methods.md §5.5).

* :func:`focal_ce`: HAST's hard-sample weighting ``(1 − p_y)^γ · CE``, pushing
  synthesis toward samples the teacher is unsure about;
* :func:`angular_margin_logits`: LRQ's Adversarial Margin Add, ArcFace's
  additive angular margin ``s·cos(θ_y + m)`` on the teacher's own classifier,
  which makes the generator's CE harder to satisfy (larger intra-class angles).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.train.placement import fp32_op


def focal_weight(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """(1 − p_y)^γ per sample, p_y the softmax probability of the target class."""
    p = F.softmax(logits, 1).gather(1, labels[:, None]).squeeze(1)
    return (1 - p).pow(gamma)


@fp32_op
def focal_ce(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """mean_i (1 − p_i)^γ · CE_i (the weight is part of the graph, as in HAST's code)."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    return ((1 - torch.exp(-ce)).pow(gamma) * ce).mean()


def angular_margin_logits(features: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                          margin: float, scale: float) -> torch.Tensor:
    """ArcFace logits: s·cos θ_j for j ≠ y and s·cos(θ_y + m) for the target, θ_j = ∠(f, W_j).

    ArcFace's large-angle fallback: where θ_y + m would pass π (cos θ_y ≤ cos(π − m)), cos(θ_y + m) stops falling
    with θ_y and the margin would reward a worse angle; there the target logit is cos θ_y − m·sin(π − m) instead,
    which keeps falling (the reference implementations' ``th``/``mm``)."""
    cos = F.linear(F.normalize(features, dim=1), F.normalize(weight, dim=1)).clamp(-1 + 1e-7, 1 - 1e-7)
    theta = torch.acos(cos)
    target = F.one_hot(labels, weight.shape[0]).bool()
    th, mm = math.cos(math.pi - margin), math.sin(math.pi - margin) * margin
    phi = torch.where(cos > th, torch.cos(theta + margin), cos - mm)
    return scale * torch.where(target, phi, cos)


@fp32_op
def angular_margin_ce(features: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                      margin: float, scale: float) -> torch.Tensor:
    return F.cross_entropy(angular_margin_logits(features, weight, labels, margin, scale), labels)
