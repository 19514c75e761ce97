"""The deployment spec: what an exporter is given instead of the training model.

``pipeline/`` produces it once from the QAT model (:func:`pipeline.quant.deploy.deployment_spec`);
every format consumes it. It holds the numbers the artifact must compute with, already
in their deployed form, so no exporter needs to know how training represented them:

* per quantized conv/linear a :class:`WeightGrid`: the integer weights (int8 storage,
  values in ``[-qmax, qmax]`` of the trained bit width), one scale per output channel,
  zero points 0, and the float bias;
* per activation quantizer an :class:`ActGrid`: scale and zero point on the unsigned
  grid the runtime executes (activations trained below 8 bits deploy at 8 bits inside
  their learned clipping range, docs/conversion.md §5);
* the artifact's I/O contract (:class:`IOContract`): names, shapes, pixel range and
  where normalisation happens;
* the float graph (a ``torch.fx.GraphModule``) in which each quantizer and quantized
  layer is one of the neutral modules below (:class:`ActPoint`, :class:`IntConv2d`,
  :class:`IntLinear`). Their forward is the float simulation of the integer model;
  an exporter swaps them for the ops its converter lowers (:func:`lower`), so the
  ONNX route and the TFLite route do the same thing the same way;
* what was trained per layer: each quantized layer's bits (``layer_bits``) and the
  layers kept in float (``float_layers``, "float islands"), which stay plain
  ``nn.Conv2d`` / ``nn.Linear`` in the graph between two activation quantizers. Every
  format must run them in float (:class:`FloatIsland` records their MACs, from torch's
  shapes, for the integer gate, ``exporters.artifact.require_integer``).

This module depends on torch and numpy only: never on ``pipeline``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from exporters.errors import ExportError

INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass(frozen=True)
class IOContract:
    """What a caller feeds and gets back: one NCHW float image batch in, one logits batch out."""

    model: str
    input_shape: tuple[int, int, int]  # C, H, W (batch excluded)
    num_classes: int
    pixel_range: tuple[float, float] = (0.0, 1.0)
    normalization_inside: bool = True  # the model normalises its raw pixels itself

    def example(self) -> torch.Tensor:
        """A random input of the right shape, for tracing (the values do not matter)."""
        return torch.rand(1, *self.input_shape)

    def edges(self) -> tuple[list[dict], list[dict]]:
        """The float edges, as every artifact index records them; formats with integer or NHWC edges update these."""
        c, h, w = self.input_shape
        inp = {"name": INPUT_NAME, "shape": ["batch", c, h, w], "layout": "NCHW", "dtype": "float32", "scale": None, "zero_point": None,
               "pixel_range": list(self.pixel_range), "normalization": "inside the model" if self.normalization_inside else "caller"}
        out = {"name": OUTPUT_NAME, "shape": ["batch", self.num_classes], "layout": "NC", "dtype": "float32", "scale": None,
               "zero_point": None, "meaning": "logits"}
        return [inp], [out]


@dataclass(frozen=True)
class ActGrid:
    """One activation quantizer as deployed: per tensor, real = (q - zero_point) * scale, q in [0, 2^bits - 1]."""

    scale: float
    zero_point: int
    bits: int = 8  # deployed
    trained_bits: int = 8

    def __post_init__(self) -> None:
        if not self.scale > 0 or not 0 <= self.zero_point <= 2**self.bits - 1:
            raise ExportError(f"bad activation grid (scale {self.scale}, zero point {self.zero_point}, {self.bits} bits)")

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1

    def signed(self) -> tuple[float, int]:
        """The same grid on the signed range [-2^(b-1), 2^(b-1) - 1] (zero point moved by -2^(b-1)), as TFLite stores it."""
        return self.scale, self.zero_point - 2 ** (self.bits - 1)


@dataclass(frozen=True, eq=False)
class WeightGrid:
    """One layer's weights as deployed: per output channel symmetric, ``values`` * ``scale`` (zero points 0)."""

    values: np.ndarray  # int8, each in [-qmax, qmax]
    scale: np.ndarray  # float32, one per output channel
    bits: int
    qmax: int

    def __post_init__(self) -> None:
        if self.values.dtype != np.int8 or self.scale.dtype != np.float32 or self.scale.shape != (self.values.shape[0],):
            raise ExportError("a weight grid needs int8 values and one float32 scale per output channel")
        if int(np.abs(self.values.astype(np.int16)).max(initial=0)) > self.qmax:
            raise ExportError(f"weights outside their grid ±{self.qmax}")

    def dequantized(self) -> torch.Tensor:
        """The float weights the integer ones stand for (exactly representable: each is an int times its channel scale)."""
        shape = (-1,) + (1,) * (self.values.ndim - 1)
        return torch.from_numpy(self.values.astype(np.float32)) * torch.from_numpy(self.scale).view(shape)


class ActPoint(nn.Module):
    """Where the runtime quantizes an activation; ``grid`` None is a quantizer the model switched off (identity)."""

    def __init__(self, grid: ActGrid | None) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grid is None:
            return x
        g = self.grid
        return torch.fake_quantize_per_tensor_affine(x, g.scale, g.zero_point, 0, g.qmax)


class _IntLayer(nn.Module):
    """A conv or linear layer with integer weights; ``weight`` holds their float value, ``bias`` stays float."""

    def __init__(self, grid: WeightGrid, bias: np.ndarray | None) -> None:
        super().__init__()
        self.grid = grid
        self.register_buffer("weight", grid.dequantized())
        self.register_buffer("bias", None if bias is None else torch.from_numpy(np.asarray(bias, dtype=np.float32)))


class IntConv2d(_IntLayer):
    def __init__(self, grid: WeightGrid, bias: np.ndarray | None, stride: tuple, padding: tuple, dilation: tuple, groups: int) -> None:
        super().__init__(grid, bias)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class IntLinear(_IntLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


@dataclass(frozen=True)
class FloatIsland:
    """A layer the run keeps in float ("float island"): its name, kind and multiply-accumulates for one image."""

    name: str
    kind: str  # conv | linear
    macs: int


def layer_macs(graph: fx.GraphModule, example: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates of every conv/linear layer of ``graph`` (integer or float) for one image, from the shapes
    one forward pass of ``example`` produces: the same count the runtimes' coverage readers make from theirs."""
    found: dict[str, int] = {}

    def count(name: str, mod: nn.Module, out: torch.Tensor) -> None:
        if isinstance(mod, (IntConv2d, nn.Conv2d)):
            w = mod.weight
            found[name] = found.get(name, 0) + int(out[0].numel() * w.shape[1] * w.shape[2] * w.shape[3])
        else:
            found[name] = found.get(name, 0) + int(out[0].numel() * mod.weight.shape[1])

    hooks = [m.register_forward_hook(lambda mod, _i, out, n=n: count(n, mod, out)) for n, m in graph.named_modules()
             if isinstance(m, (_IntLayer, nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            graph(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return found


@dataclass
class DeploymentSpec:
    """Everything the exporters need to write the integer artifacts of one QAT model."""

    graph: fx.GraphModule  # the float graph with ActPoint / IntConv2d / IntLinear in place of the training modules
    contract: IOContract
    precision: str  # what the runtimes execute, e.g. w4a8 (activations below 8 bits deploy at 8)
    trained_bits: str  # what QAT trained, e.g. w4a4
    weight_grid: str  # the weight grid in words, as the report states it
    overflow_safe: bool  # 8-bit weights on ±63 (u8×s8 kernels without VNNI cannot saturate)
    notes: dict = field(default_factory=dict)
    layer_bits: dict[str, str] = field(default_factory=dict)  # each quantized layer's trained wXaY, network order
    float_layers: tuple[str, ...] = ()  # layers kept in float: plain nn.Conv2d / nn.Linear in ``graph``

    def __post_init__(self) -> None:
        named = dict(self.graph.named_modules())
        wrong = [n for n in self.float_layers if not isinstance(named.get(n), (nn.Conv2d, nn.Linear))]
        if wrong:
            raise ExportError(f"float layer(s) {', '.join(wrong)} are not float nn.Conv2d / nn.Linear modules of the deployment graph")

    def layers(self) -> dict[str, _IntLayer]:
        return {n: m for n, m in self.graph.named_modules() if isinstance(m, _IntLayer)}

    @functools.cached_property
    def _macs(self) -> dict[str, int]:
        return layer_macs(self.graph, self.contract.example())

    def layer_macs(self) -> dict[str, int]:
        """MACs of every conv/linear layer for one image (torch's shapes), computed once."""
        return dict(self._macs)

    def float_islands(self) -> list[FloatIsland]:
        """The declared float layers with their MACs, network order."""
        macs = self.layer_macs()
        named = dict(self.graph.named_modules())
        return [FloatIsland(n, "linear" if isinstance(named[n], nn.Linear) else "conv", macs.get(n, 0)) for n in self.float_layers]

    def activations(self) -> dict[str, ActPoint]:
        return {n: m for n, m in self.graph.named_modules() if isinstance(m, ActPoint)}

    @property
    def weight_qmax(self) -> int:
        """Largest |integer weight| any layer may hold: a device tells from it whether its u8×s8 kernels can saturate."""
        return max((m.grid.qmax for m in self.layers().values()), default=0)

    @property
    def output_scale(self) -> float | None:
        """Scale of the activation grid on the model output: the unit of 'LSB' in the parity checks."""
        out = next(n for n in self.graph.graph.nodes if n.op == "output")
        src = out.args[0]
        if getattr(src, "op", None) == "call_module":
            mod = self.graph.get_submodule(src.target)
            if isinstance(mod, ActPoint) and mod.grid is not None:
                return mod.grid.scale
        return None

    def training_notes(self) -> dict:
        """What the artifact was trained as, for its index entry: bits, weight grid, the output LSB; with per-layer bits
        or float layers, each layer's bits and the float layers with their MACs and share of all conv/linear MACs
        (the integer gate reads them back: ``exporters.artifact.require_integer``)."""
        notes = {"trained_bits": self.trained_bits, "output_scale": self.output_scale, "weight_grid": self.weight_grid,
                 "overflow_safe": self.overflow_safe, "weight_qmax": self.weight_qmax}
        if len(set(self.layer_bits.values())) > 1 or self.float_layers:
            notes["layer_bits"] = dict(self.layer_bits)
        if self.float_layers:
            total = sum(self.layer_macs().values()) or 1
            notes["float_layers"] = [{"name": i.name, "kind": i.kind, "macs": i.macs, "share": round(i.macs / total, 6)}
                                     for i in self.float_islands()]
            notes["layer_macs"] = total
        return notes


def lower(graph: fx.GraphModule, rewrite: Callable[[nn.Module], nn.Module | None]) -> fx.GraphModule:
    """A copy of ``graph`` with each module that ``rewrite`` maps to a new one swapped (``graph`` is untouched).

    How a format turns the neutral modules into the ops its converter understands.
    """
    if not isinstance(graph, fx.GraphModule):
        raise ExportError("a deployment graph must be a torch.fx.GraphModule (made by pipeline.quant.deploy.deployment_spec)")
    gm = copy.deepcopy(graph).eval()
    for name, mod in list(gm.named_modules()):
        new = rewrite(mod)
        if new is None:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, attr, new)
    gm.recompile()
    return gm
