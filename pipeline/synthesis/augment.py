"""Augmentation hooks applied to images during synthesis (each iteration) and QAT.

Each augmentation is a callable ``(x, generator) -> x``; a list of them is the hook. Draws come from the
generator on its device (the images' device). Jitter and crop need their geometry on the host, so each
reads a few numbers back per call: one small sync per synthesis step, not per image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class RandomFlip:
    p: float = 0.5

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        flip = torch.rand(x.shape[0], generator=gen, device=gen.device) < self.p
        return torch.where(flip[:, None, None, None], x.flip(3), x)


@dataclass(frozen=True)
class RandomJitter:
    """Roll the batch by up to ``pixels`` in each direction (DeepInversion's jitter)."""

    pixels: int = 2

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.pixels <= 0:
            return x
        dx, dy = (torch.randint(-self.pixels, self.pixels + 1, (2,), generator=gen, device=gen.device)).tolist()
        return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


@dataclass(frozen=True)
class RandomResizedCrop:
    """With probability ``p``, crop a random area in ``scale`` and resize back (IntraQ/HAST, per batch)."""

    p: float = 0.5
    scale: tuple[float, float] = (0.5, 1.0)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if float(torch.rand((), generator=gen, device=gen.device)) >= self.p:
            return x
        h, w = x.shape[-2:]
        area = float(torch.empty((), device=gen.device).uniform_(*self.scale, generator=gen))
        ch, cw = max(1, round(h * area**0.5)), max(1, round(w * area**0.5))
        top = int(torch.randint(0, h - ch + 1, (), generator=gen, device=gen.device))
        left = int(torch.randint(0, w - cw + 1, (), generator=gen, device=gen.device))
        crop = x[:, :, top : top + ch, left : left + cw]
        return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


def apply(augs: Sequence[Augmentation], x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    for a in augs:
        x = a(x, gen)
    return x
