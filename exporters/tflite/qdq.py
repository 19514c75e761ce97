"""The deployment spec's graph rewritten in ``quantized_decomposed`` q/dq ops, the form litert-torch lowers to int8 TFLite.

litert-torch has no lowering for ``torch.fake_quantize_*`` (docs/conversion.md §2.1), but
in its STATIC q/dq mode it turns the ops that ``convert_pt2e`` emits into integer
kernels and keeps their scales. So every neutral module of the spec's graph
(:mod:`exporters.spec`) is swapped for those ops, carrying the QAT-learned numbers unchanged:

* an :class:`~exporters.spec.ActPoint` becomes ``dequantize(quantize(x))`` per tensor,
  int8 in [-128, 127]: the unsigned deployed grid [0, 255] with the zero point moved
  by -128, the same grid (activations trained below 8 bits already deploy at 8 bits
  inside their learned clipping range in the spec, docs/conversion.md §5);
* each :class:`~exporters.spec.IntConv2d` / :class:`~exporters.spec.IntLinear` weight
  becomes q/dq per output channel, symmetric (zero points 0), its learned scale; its
  values already lie in [-qmax, qmax], so a 4- or 3-bit grid is stored exactly as int8;
* scales and zero points are registered buffers, zero points int64: computed in
  ``forward`` they crash the converter (``KeyError: _to_copy``, docs/conversion.md §2.1).

:class:`EdgeModel` then fixes the artifact's edges: NHWC input (the permute at the
graph input lets the converter's layout pass drop every TRANSPOSE), an optional
int8 quantizer on the raw pixels where the student's first op is not a quantizer
(input normalisation inside the model), and the names ``input`` / ``logits``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from exporters.errors import ExportError
from exporters.spec import INPUT_NAME, OUTPUT_NAME, ActPoint, IntConv2d, IntLinear, lower
INT8_MIN, INT8_MAX = -128, 127


def _qd():
    """``torch.ops.quantized_decomposed``; importing torchao's pt2e module registers it."""
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401

    return torch.ops.quantized_decomposed


@dataclass(frozen=True)
class TensorQParams:
    """Per-tensor int8 quantization of one edge or activation: real = (q - zero_point) * scale."""

    scale: float
    zero_point: int

    def __post_init__(self) -> None:
        # The flatbuffer stores scales as float32; the converter compares the scales on both sides of
        # scale-preserving ops (PAD, pooling) in that precision, so keep every scale float32-exact.
        object.__setattr__(self, "scale", float(np.float32(self.scale)))
        if not self.scale > 0 or not INT8_MIN <= self.zero_point <= INT8_MAX:
            raise ExportError(f"bad int8 quantization parameters (scale {self.scale}, zero point {self.zero_point})")

    @classmethod
    def pixels(cls, pixel_range: tuple[float, float]) -> "TensorQParams":
        """The 8-bit pixel grid of ``pixel_range``: exact for images stored as 8-bit codes."""
        lo, hi = float(pixel_range[0]), float(pixel_range[1])
        scale = (hi - lo) / 255.0
        return cls(scale, int(round(INT8_MIN - lo / scale)))


class QDQAct(nn.Module):
    """Per-tensor int8 q/dq with fixed parameters (what an ActPoint lowers to)."""

    def __init__(self, qp: TensorQParams) -> None:
        super().__init__()
        self.qp = qp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qd = _qd()
        s, z = self.qp.scale, self.qp.zero_point
        return qd.dequantize_per_tensor(qd.quantize_per_tensor(x, s, z, INT8_MIN, INT8_MAX, torch.int8), s, z, INT8_MIN, INT8_MAX,
                                        torch.int8)


class _QDQWeight(nn.Module):
    """A weight on its learned symmetric per-channel grid, as constant buffers the converter folds to int8."""

    def __init__(self, layer: IntConv2d | IntLinear) -> None:
        super().__init__()
        scale = torch.from_numpy(layer.grid.scale.copy())
        self.register_buffer("weight", layer.weight.clone())
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", torch.zeros(scale.numel(), dtype=torch.int64))
        self.register_buffer("bias", None if layer.bias is None else layer.bias.clone())
        self.bits = layer.grid.bits

    def qdq_weight(self) -> torch.Tensor:
        # The int8 range, not ±qmax: the clamp above already keeps the values in [-qmax, qmax], and a
        # narrower range would make the converter read a 4-bit weight as int4 storage (3× slower, docs/conversion.md §5).
        qd = _qd()
        args = (self.scale, self.zero_point, 0, -INT8_MAX, INT8_MAX, torch.int8)
        return qd.dequantize_per_channel(qd.quantize_per_channel(self.weight, *args), *args)


class QDQConv2d(_QDQWeight):
    def __init__(self, layer: IntConv2d) -> None:
        super().__init__(layer)
        self.stride, self.padding, self.dilation, self.groups = layer.stride, layer.padding, layer.dilation, layer.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.qdq_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class QDQLinear(_QDQWeight):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.qdq_weight(), self.bias)


def _rewrite(mod: nn.Module) -> nn.Module | None:
    if isinstance(mod, ActPoint):
        return QDQAct(TensorQParams(*mod.grid.signed())) if mod.grid is not None else nn.Identity()
    if isinstance(mod, IntConv2d):
        return QDQConv2d(mod)
    if isinstance(mod, IntLinear):
        return QDQLinear(mod)
    return None


def to_qdq(graph: fx.GraphModule) -> fx.GraphModule:
    """A copy of the spec's graph with every neutral module swapped for its q/dq form (the spec is untouched)."""
    if not any(isinstance(m, (ActPoint, IntConv2d, IntLinear)) for m in graph.modules()):
        raise ExportError("the model has no quantizers: nothing to export as an integer TFLite model")
    return lower(graph, _rewrite)


def input_quantizer(gm: fx.GraphModule) -> TensorQParams | None:
    """The int8 quantizer the model input meets first, if that is all it feeds (the converter then makes the input int8).

    Reads both forms: a :class:`QDQAct` (QAT student) or a ``quantize_per_tensor`` call (a PT2E-calibrated graph).
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder" and n.users]
    if len(placeholders) != 1:
        raise ExportError(f"the tflite exporter handles single-input models, this one has {len(placeholders)} inputs")
    # torch.export adds a shape-guard call on the input (``_guards_fn``): not a consumer of its values
    users = [u for u in placeholders[0].users if not (u.op == "call_module" and str(u.target).startswith("_guards"))]
    if len(users) != 1:
        return None
    user = users[0]
    if user.op == "call_module" and isinstance(mod := gm.get_submodule(user.target), QDQAct):
        return mod.qp
    if user.op == "call_function" and "quantize_per_tensor" in str(user.target) and "dequantize" not in str(user.target):
        scale, zp = (_literal(gm, a) for a in user.args[1:3])
        return TensorQParams(float(scale), int(zp))
    return None


def _literal(gm: fx.GraphModule, arg) -> float:
    """A q/dq argument: a number, or a constant the exported graph holds as an attribute."""
    if isinstance(arg, fx.Node) and arg.op == "get_attr":
        return float(getattr(gm, arg.target))
    return float(arg)


class EdgeModel(nn.Module):
    """The artifact's edges around a body: NHWC input named ``input``, optional int8 pixel quantizer, ``logits`` out.

    NHWC because LiteRT's kernels are NHWC: with the permute at the graph input the
    converter's layout pass removes every TRANSPOSE instead of adding one per edge.
    """

    def __init__(self, body: nn.Module, pixel_qp: TensorQParams | None = None) -> None:
        super().__init__()
        self.body = body
        self.pixel_q = QDQAct(pixel_qp) if pixel_qp is not None else None

    def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: A002  (the signature name the artifact exposes)
        x = input.permute(0, 3, 1, 2)
        if self.pixel_q is not None:
            x = self.pixel_q(x)
        return {OUTPUT_NAME: self.body(x)}
