"""BatchNorm-statistics matching: the loss every inversion and generator method shares.

Hooks read each BN layer's *input* during the forward pass and compare its
batch statistics with the layer's running statistics (or with other targets,
e.g. FDDA's per-class centres). The variants the papers use are options here,
not copies (docs/methods.md §5.3):

* ``kind="mse"``: MSE(μ_b, μ) + MSE(σ²_b, σ²), batch statistics (GDFQ, IntraQ, HAST);
* ``kind="l2"``: ‖μ_b − μ‖₂ + ‖σ²_b − σ²‖₂, un-squared (DeepInversion);
* ``kind="per-sample"``: per-image channel mean/std against μ/σ (ZeroQ).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.errors import ModelLoadError

STAT_KINDS = ("mse", "l2", "per-sample")


def batchnorm_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def require_batchnorm(model: nn.Module, method: str) -> list[nn.BatchNorm2d]:
    bns = batchnorm_layers(model)
    if not bns:
        from pipeline.synthesis.base import no_batchnorm_message  # the same words as the preflight check's

        raise ModelLoadError(no_batchnorm_message())
    return bns


@dataclass
class BNTargets:
    """Per-layer target statistics; default: the layers' running mean/var."""

    means: list[torch.Tensor]
    vars: list[torch.Tensor]

    @classmethod
    def running(cls, bns: list[nn.BatchNorm2d]) -> "BNTargets":
        return cls([b.running_mean.detach().clone() for b in bns], [b.running_var.detach().clone() for b in bns])


class BNStatHook:
    """Records the statistics of every BN layer's input on each forward pass."""

    def __init__(self, bns: list[nn.BatchNorm2d], per_sample: bool = False) -> None:
        self.bns = bns
        self.per_sample = per_sample
        self.means: list[torch.Tensor | None] = [None] * len(bns)
        self.vars: list[torch.Tensor | None] = [None] * len(bns)
        self._handles = [bn.register_forward_pre_hook(self._make(i)) for i, bn in enumerate(bns)]

    def _make(self, i: int):
        def hook(_mod: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            if x.dtype != torch.float32:  # under autocast: the statistics are taken in fp32
                x = x.float()
            if self.per_sample:  # N×C statistics over H, W
                self.means[i] = x.mean((2, 3))
                self.vars[i] = x.var((2, 3), unbiased=False)
            else:
                self.means[i] = x.mean((0, 2, 3))
                self.vars[i] = x.var((0, 2, 3), unbiased=False)

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def __enter__(self) -> "BNStatHook":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def bn_statistics_loss(
    hook: BNStatHook,
    targets: BNTargets,
    kind: str = "mse",
    first_layer_weight: float = 1.0,
    layers: slice | None = None,
) -> torch.Tensor:
    """Average over the selected layers of the statistics mismatch (see module docstring for ``kind``)."""
    if kind not in STAT_KINDS:
        raise ValueError(f"unknown BN statistics loss {kind!r}; choose one of {', '.join(STAT_KINDS)}")
    idx = list(range(len(hook.bns)))[layers or slice(None)]
    total = torch.zeros((), device=targets.means[0].device)
    for i in idx:
        mu, var = hook.means[i], hook.vars[i]
        if mu is None:
            raise RuntimeError("BN hook saw no forward pass")
        tmu, tvar = targets.means[i], targets.vars[i]
        if kind == "mse":
            term = (mu - tmu).pow(2).mean() + (var - tvar).pow(2).mean()
        elif kind == "l2":
            term = torch.linalg.vector_norm(mu - tmu) + torch.linalg.vector_norm(var - tvar)
        else:
            term = (mu - tmu).pow(2).sum(1).mean() + (var.clamp_min(1e-8).sqrt() - tvar.sqrt()).pow(2).sum(1).mean()
        total = total + term * (first_layer_weight if i == 0 else 1.0)
    return total / max(1, len(idx))
