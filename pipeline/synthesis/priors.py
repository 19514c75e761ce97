"""Image priors for direct inversion (DeepInversion): smoothness and magnitude."""

from __future__ import annotations

import torch


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels (the TV-L2 prior)."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).mean()
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).mean()
    return dh + dw


def l2_norm(x: torch.Tensor, center: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Mean squared distance from ``center`` (the pixel mean), keeping images in a plausible range."""
    return (x - center).pow(2).mean()
