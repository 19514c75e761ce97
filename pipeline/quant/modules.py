"""Quantized conv / linear layers: the float weight, its (folded) bias and a weight quantizer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.quant.quantizers import WeightQuantizer


class QConv2d(nn.Module):
    """A Conv2d whose weight passes through a :class:`WeightQuantizer` (BN already folded in deploy)."""

    def __init__(self, conv: nn.Conv2d, bits: int, symmetric: bool = True, learn_scale: bool = True, qmax: int | None = None) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("only zero padding given as integers is supported")
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.in_channels, self.out_channels, self.kernel_size = conv.in_channels, conv.out_channels, conv.kernel_size
        self.weight = nn.Parameter(conv.weight.detach().clone())
        bias = conv.bias.detach().clone() if conv.bias is not None else None
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.wq = WeightQuantizer(self.out_channels, bits, symmetric, learn_scale, qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.wq(self.weight), self.bias, self.stride, self.padding, self.dilation, self.groups)

    def macs(self, out_hw: int) -> int:
        k = self.kernel_size[0] * self.kernel_size[1]
        return out_hw * self.out_channels * (self.in_channels // self.groups) * k


class QLinear(nn.Module):
    def __init__(self, fc: nn.Linear, bits: int, symmetric: bool = True, learn_scale: bool = True, qmax: int | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = fc.in_features, fc.out_features
        self.weight = nn.Parameter(fc.weight.detach().clone())
        self.bias = nn.Parameter(fc.bias.detach().clone()) if fc.bias is not None else None
        self.wq = WeightQuantizer(self.out_features, bits, symmetric, learn_scale, qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.wq(self.weight), self.bias)


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d computing bn(conv(x)) in eval mode: w' = w·γ/σ, b' = (b - μ)·γ/σ + β."""
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups, bias=True
    )
    with torch.no_grad():
        inv_std = torch.rsqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_mean)
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        factor = gamma * inv_std
        fused.weight.copy_(conv.weight * factor.view(-1, 1, 1, 1))
        b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((b - bn.running_mean) * factor + beta)
    return fused
