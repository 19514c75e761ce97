"""Augmentation hooks applied to images during synthesis (each iteration) and QAT.

Each augmentation is a callable ``(x, generator) -> x``; a list of them is the hook. Draws come from the
generator on its device (the images' device). Jitter needs its shift on the host, and a crop with ``p < 1``
its coin: one small read per call, not per image.
"""

from __future__ import annotations

import math
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
    """torchvision's RandomResizedCrop on every image of the batch, each its own box, with probability ``p`` per call.

    Each box has an area in ``scale`` (of the image) and an aspect ratio log-uniform in ``ratio``, resized back to
    the image size (bilinear). HAST crops every training image (``p=1``, scale (0.5, 1), ratio (3/4, 4/3)); IntraQ and
    HAST crop the whole batch's images with p=0.5 per inversion step on ImageNet. Boxes that do not fit are
    clipped to the image (torchvision retries, then falls back to a centre crop). Vectorised as one affine
    ``grid_sample`` per batch: no per-image loop, one draw per image from ``gen``.
    """

    p: float = 0.5
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.p < 1 and float(torch.rand((), generator=gen, device=gen.device)) >= self.p:
            return x
        n, h, w = x.shape[0], *x.shape[-2:]
        u = torch.rand(n, 4, generator=gen, device=gen.device)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0]
        log_r = math.log(self.ratio[0]) + (math.log(self.ratio[1]) - math.log(self.ratio[0])) * u[:, 1]
        aspect = torch.exp(log_r)  # width / height of the box
        bw = torch.sqrt(area * aspect * (h / w)).clamp(max=1.0)  # box sides as fractions of the image's
        bh = torch.sqrt(area / aspect * (w / h)).clamp(max=1.0)
        cx = (1 - bw) * (2 * u[:, 2] - 1)  # box centre in [-1, 1] coordinates, the box inside the image
        cy = (1 - bh) * (2 * u[:, 3] - 1)
        theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = bw.to(x.dtype), cx.to(x.dtype), bh.to(x.dtype), cy.to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def apply(augs: Sequence[Augmentation], x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    for a in augs:
        x = a(x, gen)
    return x
