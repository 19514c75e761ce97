"""Generators for the generator-based methods (GDFQ, LRQ, ZAQ, FDDA, HAST's range warm-up).

:class:`Generator` is GDFQ's CIFAR generator (docs/methods.md §2.3), sized from the
model card: ``z ⊙ Embedding(y)`` (or ``z`` alone, unconditional, for ZAQ) →
Linear → 128×(H/4)×(W/4) → BN → ×2 → Conv3×3 → BN → LReLU(0.2) → ×2 → Conv3×3 →
BN → LReLU → Conv3×3 → tanh → BN(C, affine=False). The last BN makes the output
~N(0, 1) per channel, i.e. the *normalised* input space; :func:`to_pixels` maps
it back to the card's pixel range (the model normalises inside).

GDFQ writes ``nn.BatchNorm2d(C, 0.8)``, which sets eps=0.8, not momentum; that
quirk is ``bn_eps=0.8`` here, off by default (eps=1e-5).

``lka=True`` inserts a Large Kernel Attention block (VAN: depth-wise k×k →
dilated depth-wise → 1×1, output ⊙ input) after each up-sampling block: LRQ's
long-range generator (docs/methods.md §2.7; kernel sizes and placement are not published, see
:class:`pipeline.synthesis.methods.lrq.LRQConfig`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.card import ModelCard

if TYPE_CHECKING:
    from pipeline.train.engine import OptimizerStep


class LKA(nn.Module):
    """Large Kernel Attention: x ⊙ pw(dw_dilated(dw(x)))."""

    def __init__(self, channels: int, kernel: int = 5, dilated_kernel: int = 7, dilation: int = 3) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.dw_dilated = nn.Conv2d(channels, channels, dilated_kernel, padding=(dilated_kernel // 2) * dilation,
                                    dilation=dilation, groups=channels)
        self.pw = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.pw(self.dw_dilated(self.dw(x)))


@dataclass(frozen=True)
class GeneratorSpec:
    latent_dim: int = 100
    width: int = 128  # GDFQ: 128 → 128 → 64 channels
    conditional: bool = True
    bn_eps: float = 1e-5  # GDFQ's code: 0.8 (the eps quirk)
    lka: bool = False
    lka_kernel: int = 5
    lka_dilated_kernel: int = 7
    lka_dilation: int = 3


class Generator(nn.Module):
    def __init__(self, spec: GeneratorSpec, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        self.spec = spec
        c, h, w = input_shape
        self.out_hw = (h, w)
        self.init_hw = (math.ceil(h / 4), math.ceil(w / 4))
        wd = spec.width
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, spec.latent_dim) if spec.conditional else None
        self.fc = nn.Linear(spec.latent_dim, wd * self.init_hw[0] * self.init_hw[1])
        self.bn0 = nn.BatchNorm2d(wd)
        self.conv1 = nn.Conv2d(wd, wd, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(wd, eps=spec.bn_eps)
        self.conv2 = nn.Conv2d(wd, wd // 2, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(wd // 2, eps=spec.bn_eps)
        self.conv3 = nn.Conv2d(wd // 2, c, 3, 1, 1)
        self.bn_out = nn.BatchNorm2d(c, affine=False)
        if spec.lka:
            self.lka1: nn.Module = LKA(wd, spec.lka_kernel, spec.lka_dilated_kernel, spec.lka_dilation)
            self.lka2: nn.Module = LKA(wd // 2, spec.lka_kernel, spec.lka_dilated_kernel, spec.lka_dilation)
        else:
            self.lka1 = self.lka2 = nn.Identity()

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            z = z * self.embed(labels)
        x = self.bn0(self.fc(z).view(z.shape[0], -1, *self.init_hw))
        x = F.interpolate(x, scale_factor=2)
        x = self.lka1(F.leaky_relu(self.bn1(self.conv1(x)), 0.2))
        x = F.interpolate(x, scale_factor=2)
        x = self.lka2(F.leaky_relu(self.bn2(self.conv2(x)), 0.2))
        x = torch.tanh(self.conv3(x))
        if tuple(x.shape[-2:]) != self.out_hw:
            x = F.interpolate(x, size=self.out_hw, mode="bilinear", align_corners=False)
        return self.bn_out(x)


def to_pixels(g: torch.Tensor, card: ModelCard) -> torch.Tensor:
    """Normalised-space generator output → the card's pixel space, clipped to its range."""
    mean = torch.tensor(card.mean, dtype=g.dtype, device=g.device).view(1, -1, 1, 1)
    std = torch.tensor(card.std, dtype=g.dtype, device=g.device).view(1, -1, 1, 1)
    lo, hi = card.pixel_range
    return (mean + std * g).clamp(lo, hi)


class Sampler:
    """Draws (images in pixel space, labels) from a generator with a seeded torch.Generator on the generator's device."""

    def __init__(self, generator: Generator, card: ModelCard, seed: int) -> None:
        self.g, self.card = generator, card
        self.device = next(generator.parameters()).device
        self.rng = torch.Generator(device=self.device).manual_seed(seed)

    def labels(self, n: int, cls: int | None = None) -> torch.Tensor:
        if cls is not None:
            return torch.full((n,), cls, dtype=torch.long, device=self.device)
        return torch.randint(0, self.card.num_classes, (n,), generator=self.rng, device=self.device)

    def __call__(self, n: int, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.labels(n) if labels is None else labels
        z = torch.randn(n, self.g.spec.latent_dim, generator=self.rng, device=self.device)
        return to_pixels(self.g(z, y if self.g.embed is not None else None), self.card), y

    @torch.no_grad()
    def pool(self, n: int, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """``n`` images with balanced labels, sampled in train mode (batch statistics, as during training)."""
        y = torch.arange(n, device=self.device) % self.card.num_classes
        y = y[torch.randperm(n, generator=self.rng, device=self.device)]
        out = [self(len(y[i : i + batch_size]), y[i : i + batch_size])[0] for i in range(0, n, batch_size)]
        return torch.cat(out).float().cpu().numpy(), y.cpu().numpy().astype(np.int64)


def generator_optimizer(g: Generator, lr: float = 1e-3, betas: tuple[float, float] = (0.5, 0.999)) -> torch.optim.Optimizer:
    """Adam at ``lr`` with ``betas``: GDFQ's code passes (0.5, 0.999), ZAQ's keeps Adam's own (0.9, 0.999); each
    method's config holds its value (``gen_betas``)."""
    return torch.optim.Adam(g.parameters(), lr=lr, betas=tuple(betas))


def generator_step(g: Generator, lr: float, betas: tuple[float, float], milestones: tuple[int, ...], gamma: float,
                   placement, start: int = 0) -> "OptimizerStep":
    """The generator's optimiser step with its schedule: ``lr`` times ``gamma`` once per milestone passed, counted in
    generator steps from the first warm-up step (GDFQ's MultiStepLR at epochs 100/200/300 is one schedule over
    warm-up and QAT). ``start``: the generator steps already taken (the warm-up's, when QAT continues it)."""
    from pipeline.train.engine import OptimizerStep, schedule_factor

    opt = generator_optimizer(g, lr, betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: schedule_factor(start + i, "multistep", 0, tuple(milestones), gamma))
    return OptimizerStep(opt, placement, sched)


def check_adam_schedule(cfg: Any, prefix: str = "gen_") -> None:
    """Normalise and check a frozen method config's ``{prefix}betas`` and multistep schedule, in place.

    YAML gives lists; the configs hold tuples (hashable, and a preset compares equal to a parsed YAML value), the
    milestones sorted. A wrong value is a ValueError that names the key (the config layer makes it one line). A config
    without ``{prefix}lr_milestones`` (the inversion's cosine/plateau schedules) has only its betas checked.
    """
    betas = tuple(float(b) for b in getattr(cfg, f"{prefix}betas"))
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"{prefix}betas must be two numbers in [0, 1), e.g. [0.9, 0.999], got {list(betas)}")
    object.__setattr__(cfg, f"{prefix}betas", betas)
    if not hasattr(cfg, f"{prefix}lr_milestones"):
        return
    milestones = tuple(sorted(getattr(cfg, f"{prefix}lr_milestones")))
    if any(int(m) != m or m < 1 for m in milestones):
        raise ValueError(f"{prefix}lr_milestones must be step counts >= 1, got {list(milestones)}")
    object.__setattr__(cfg, f"{prefix}lr_milestones", milestones)
    gamma = getattr(cfg, f"{prefix}lr_gamma")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"{prefix}lr_gamma must be in (0, 1], got {gamma}")


def training_state(g: nn.Module, step: "OptimizerStep") -> dict:
    """A generator in training, for a checkpoint: its weights and BN statistics, and its optimiser's state."""
    return {"generator": g.state_dict(), "optimizer": step.state_dict()}


def load_training_state(g: nn.Module, step: "OptimizerStep", state: dict) -> None:
    g.load_state_dict(state["generator"])
    step.load_state_dict(state["optimizer"])


def state_to_arrays(g: nn.Module, prefix: str = "generator.") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().cpu().numpy() for k, v in g.state_dict().items()}


def arrays_to_state(g: nn.Module, arrays: dict[str, np.ndarray], prefix: str = "generator.") -> None:
    state = {k[len(prefix):]: torch.from_numpy(np.asarray(v)) for k, v in arrays.items() if k.startswith(prefix)}
    g.load_state_dict(state)


class TeacherProbe:
    """The frozen teacher as a generator's critic: logits, BN input statistics and (optionally) penultimate features.

    Use as a context manager: the teacher's parameters stop requiring gradients
    inside (gradients still reach the images) and are restored on exit.
    """

    def __init__(self, teacher: nn.Module, method: str, per_sample: bool = False, penultimate: bool = False) -> None:
        from pipeline.synthesis.bn_stats import BNStatHook, BNTargets, require_batchnorm

        self.teacher = teacher.eval()
        self.bns = require_batchnorm(teacher, method)
        self.hook = BNStatHook(self.bns, per_sample=per_sample)
        self.running = BNTargets.running(self.bns)
        self.features: torch.Tensor | None = None
        self.fc: nn.Linear | None = None
        self._handles = []
        if penultimate:
            linears = [m for m in teacher.modules() if isinstance(m, nn.Linear)]
            if not linears:
                from pipeline.errors import ModelLoadError

                raise ModelLoadError(f"{method} needs a final nn.Linear classifier (its angular margin uses the class weights)")
            self.fc = linears[-1]
            self._handles.append(self.fc.register_forward_pre_hook(self._grab))
        self._grad_flags = [p.requires_grad for p in teacher.parameters()]
        for p in teacher.parameters():
            p.requires_grad_(False)

    def _grab(self, _m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self.features = inputs[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x)

    def bns_loss(self, targets=None, layers: slice | None = None) -> torch.Tensor:
        from pipeline.synthesis.bn_stats import bn_statistics_loss

        return bn_statistics_loss(self.hook, targets or self.running, "mse", layers=layers)

    def close(self) -> None:
        self.hook.remove()
        for h in self._handles:
            h.remove()
        for p, flag in zip(self.teacher.parameters(), self._grad_flags):
            p.requires_grad_(flag)

    def __enter__(self) -> "TeacherProbe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
