"""Teacher → student losses for QAT.

The KD reduction is ``batchmean`` on purpose: GDFQ's ``nn.KLDivLoss()`` default
(element-wise mean) is the same loss divided by the number of classes, which
silently changes the effective learning rate (docs/methods.md §5.6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.train.placement import fp32_op


@fp32_op
def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch (not over classes)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1), reduction="batchmean", log_target=True) * t * t


@fp32_op
def dkd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
        alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR'22): α·TCKD + β·NCKD, each T²·KL, batchmean.

    TCKD is the KL between the binary (target, non-target) distributions;
    NCKD the KL between the distributions over the non-target classes only
    (the target logit is masked out by subtracting 1000 before the softmax,
    as the reference implementation does).
    """
    t = temperature
    gt = F.one_hot(labels, student_logits.shape[1]).to(student_logits.dtype)
    p_s, p_t = F.softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], 1).clamp_min(1e-12)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], 1).clamp_min(1e-12)
    tckd = F.kl_div(b_s.log(), b_t, reduction="batchmean") * t * t
    log_nt_s = F.log_softmax(student_logits / t - 1000.0 * gt, 1)
    nt_t = F.softmax(teacher_logits / t - 1000.0 * gt, 1)
    nckd = F.kl_div(log_nt_s, nt_t, reduction="batchmean") * t * t
    return alpha * tckd + beta * nckd


def channel_attention(f: torch.Tensor) -> torch.Tensor:
    """HAST's per-sample channel attention: L2-normalise(mean over H, W of f²), N×C."""
    return F.normalize(f.pow(2).mean((2, 3)), dim=1)


@fp32_op
def feature_alignment(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor]) -> torch.Tensor:
    """HAST FA = Σ_l mean((a_q − a_fp)²) over the tapped block outputs."""
    total = torch.zeros((), device=student_feats[0].device)
    for fs, ft in zip(student_feats, teacher_feats, strict=True):
        total = total + (channel_attention(fs) - channel_attention(ft)).pow(2).mean()
    return total


def spatial_relation(x: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """ZAQ's spatial relation map: self-attention over positions, γ-residual (B×C×H×W → same)."""
    b, c, h, w = x.shape
    v = x.reshape(b, c, h * w)
    attn = torch.softmax(torch.bmm(v.transpose(1, 2), v), -1)  # B×HW×HW
    return (gamma * torch.bmm(v, attn.transpose(1, 2))).reshape(b, c, h, w) + x


def channel_relation(x: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """ZAQ's channel relation map: softmax(max − energy) over channels, γ-residual."""
    b, c, h, w = x.shape
    v = x.reshape(b, c, h * w)
    energy = torch.bmm(v, v.transpose(1, 2))  # B×C×C
    attn = torch.softmax(energy.max(-1, keepdim=True).values - energy, -1)
    return (gamma * torch.bmm(attn, v)).reshape(b, c, h, w) + x


@fp32_op
def scrm(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor], gamma: float = 0.1) -> torch.Tensor:
    """ZAQ's two-level discrepancy: per level, channel-L2-normalise, then L1 of spatial + channel relation maps."""
    total = torch.zeros((), device=student_feats[0].device)
    for fs, ft in zip(student_feats, teacher_feats, strict=True):
        fs, ft = F.normalize(fs, dim=1), F.normalize(ft, dim=1)
        total = total + F.l1_loss(spatial_relation(fs, gamma), spatial_relation(ft, gamma))
        total = total + F.l1_loss(channel_relation(fs, gamma), channel_relation(ft, gamma))
    return total
