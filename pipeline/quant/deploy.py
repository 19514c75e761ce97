"""The QAT model → the neutral deployment spec the exporters consume (:mod:`exporters.spec`).

The one place where training's representation (learned scales as parameters, fake-quant
modules, activation ranges trained at low bit widths) becomes deployed numbers: integer
weights on their grid, per-channel scales, activation grids at the deployed bit width.
Exporters never see :class:`~pipeline.quant.quantizers.ActQuantizer` or
:class:`~pipeline.quant.modules.QConv2d`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import fx, nn

from exporters.errors import ExportError
from exporters.spec import ActGrid, ActPoint, DeploymentSpec, IntConv2d, IntLinear, IOContract, WeightGrid, lower
from pipeline.models.card import ModelCard
from pipeline.quant.modules import QConv2d, QLinear
from pipeline.quant.quantizers import ActQuantizer
from pipeline.quant.scheme import BitScheme


def io_contract(card: ModelCard) -> IOContract:
    """The artifact's I/O contract from the model card."""
    return IOContract(card.name, tuple(card.input_shape), card.num_classes, tuple(card.pixel_range), card.normalization_inside)


def act_grid(q: ActQuantizer) -> ActGrid:
    """The deployed grid of one activation quantizer: the deployed bit width inside its learned clipping range."""
    if not bool(q.initialized):
        raise ExportError("activation ranges are not calibrated: run the qat stage before export")
    bits = BitScheme.deployed_act_bits(q.bits)
    scale, zp = q.qparams(bits)
    return ActGrid(float(scale.detach()), int(zp.detach()), bits, q.bits)


@torch.no_grad()
def weight_grid(layer: QConv2d | QLinear) -> WeightGrid:
    """A layer's integer weights: clamp to ±qmax·scale, then round(w / scale) (exact: the values are on the grid)."""
    wq = layer.wq
    if not wq.symmetric:
        raise ExportError("integer artifacts need symmetric per-channel weights: quantize with qat.profile=deploy")
    scale = wq.channel_scale(layer.weight).detach().float()
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    bound = wq.qmax * scale.view(shape)
    clamped = torch.maximum(torch.minimum(layer.weight.detach(), bound), -bound)
    values = torch.clamp(torch.round(clamped / scale.view(shape)), -wq.qmax, wq.qmax).to(torch.int8)
    return WeightGrid(values.numpy(), scale.numpy().astype(np.float32), wq.bits, wq.qmax)


def _neutral(mod: nn.Module) -> nn.Module | None:
    if isinstance(mod, ActQuantizer):
        return ActPoint(act_grid(mod) if mod.enabled else None)
    if isinstance(mod, QConv2d):
        return IntConv2d(weight_grid(mod), None if mod.bias is None else mod.bias.detach().numpy().copy(),
                         mod.stride, mod.padding, mod.dilation, mod.groups)
    if isinstance(mod, QLinear):
        return IntLinear(weight_grid(mod), None if mod.bias is None else mod.bias.detach().numpy().copy())
    return None


def deployment_spec(student: nn.Module, card: ModelCard, scheme: BitScheme | None = None) -> DeploymentSpec:
    """The spec of a calibrated (or trained) fake-quant model built by :func:`pipeline.quant.prepare.quantize_model`.

    Per-layer bits and float layers come from the student itself (``zsq_meta``, what the surgery built): each layer's
    grid is its own, the float layers stay ``nn.Conv2d`` / ``nn.Linear`` (BN folded) and the spec names them, and the
    weight grid in words covers every width the layers use.
    """
    if not isinstance(student, fx.GraphModule) or not hasattr(student, "zsq_meta"):
        raise ExportError("integer export needs the fake-quant model built by pipeline.quant.prepare.quantize_model")
    meta = student.zsq_meta
    if scheme is None:
        patterns = meta.get("layer_patterns") or {}
        scheme = BitScheme.parse(meta["bits"], meta.get("first_last_bits"), bool(meta.get("overflow_safe")),
                                 patterns.get("layer_bits"), patterns.get("float_layers"))
    gm = lower(student, _neutral)  # a copy: the student is untouched
    if not any(isinstance(m, (ActPoint, IntConv2d, IntLinear)) for m in gm.modules()):
        raise ExportError("the model has no quantizers: nothing to export as an integer model")
    widths = [m.grid.bits for m in gm.modules() if isinstance(m, (IntConv2d, IntLinear))]
    return DeploymentSpec(gm, io_contract(card), scheme.deployed_name, scheme.name, scheme.describe_weight_grid(widths),
                          scheme.overflow_safe, layer_bits=dict(meta.get("layer_bits") or {}),
                          float_layers=tuple(meta.get("float_layers") or ()))
