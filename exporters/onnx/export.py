"""Deployment spec → QDQ ONNX with int8 weights and the QAT scales; plus the FP32 export of the float model.

Recipe measured on this machine (docs/conversion.md §3, §7):

* activations as QuantizeLinear/DequantizeLinear in **uint8** (same grid as the
  training quantizer; with int8 activations ORT on x86 leaves half the convs and
  every residual add in float);
* weights symmetric per-channel, clamped to the b-bit grid and exported with the
  (-128, 127) range (the only signed range the exporter accepts) and the QAT scale;
* one ORT_ENABLE_BASIC pass folds Q(weight) into int8 initializers, so the file
  is int8-sized and still portable QDQ (OpenVINO reads it too);
* activations trained below 8 bits deploy as 8-bit inside the learned clipping range
  (the spec's activation grids already are).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from exporters.artifact import Artifact, IntegerCoverage, gate_artifact
from exporters.errors import ExportError
from exporters.spec import INPUT_NAME, OUTPUT_NAME, DeploymentSpec, IntConv2d, IntLinear, IOContract, lower
from runtimes.onnxruntime_coverage import onnxruntime_coverage, optimized_op_counts

OPSET = 17


class _QDQWeight(nn.Module):
    """An integer conv/linear whose weight passes QuantizeLinear/DequantizeLinear: int8 per channel, zero points 0.

    The (-128, 127) range because it is the only signed range the exporter accepts; the weights
    already lie in [-qmax, qmax] of their trained grid, so a 4-bit grid is stored exactly as int8.
    """

    def __init__(self, layer: IntConv2d | IntLinear) -> None:
        super().__init__()
        self.register_buffer("weight", layer.weight)
        self.register_buffer("bias", layer.bias)
        self.register_buffer("scale", torch.from_numpy(layer.grid.scale.copy()))
        self.register_buffer("zero_point", torch.zeros(layer.grid.scale.shape[0], dtype=torch.int32))
        self.conv = (layer.stride, layer.padding, layer.dilation, layer.groups) if isinstance(layer, IntConv2d) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.fake_quantize_per_channel_affine(self.weight, self.scale, self.zero_point, 0, -128, 127)
        if self.conv is None:
            return F.linear(x, w, self.bias)
        return F.conv2d(x, w, self.bias, *self.conv)


class _FloatIsland(nn.Module):
    """A float layer of the spec (``qat.float_layers``) whose input first passes ``max(x, x)``, an exact identity.

    Why: ONNX Runtime (1.20 on, its ``WeightBiasQuantization`` rewrite at every optimisation level) gives the float
    weights of any Conv/Gemm that reads a DequantizeLinear and leads to a QuantizeLinear int8 per-tensor weights of its
    own choosing: the float island would run as a QLinearConv that nobody trained (measured on 1.32: a float Conv
    between the activation Q/DQ became QLinearConv). The rewrite needs the layer's input to come straight from the
    DequantizeLinear; a Max in between, which no ORT rewrite removes (an Identity, a Mul by 1, an Add of 0 or a
    Reshape are all removed), keeps the layer a float Conv/Gemm on ORT, and OpenVINO (which converts this ONNX)
    runs it in f32 either way. The island's integer gate checks it on the executed graph.
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.maximum(x, x))


def qdq_graph(spec: DeploymentSpec) -> nn.Module:
    """The spec's graph in the ops ``torch.onnx.export`` writes as Q/DQ: activations already are, weights get wrapped,
    float layers stay float behind an ORT guard (:class:`_FloatIsland`)."""
    gm = lower(spec.graph, lambda m: _QDQWeight(m) if isinstance(m, (IntConv2d, IntLinear)) else None)
    for name in spec.float_layers:
        parent, _, attr = name.rpartition(".")
        owner = gm.get_submodule(parent) if parent else gm
        setattr(owner, attr, _FloatIsland(getattr(owner, attr)))
    return gm


# What to do when torch.onnx cannot export an op: both targets that go through it, and the one that does not.
_ADVICE = ("the onnx and openvino targets both export through torch.onnx: replace that op in the model's forward(), "
           "or drop those targets (e.g. --target tflite)")
_OP_IN_MESSAGE = re.compile(r"operator '([^']+)'")


@contextlib.contextmanager
def _native_output_muted() -> Iterator[None]:
    """Discard what C++ code writes to fds 1 and 2 meanwhile.

    torch.onnx (2.13) switches its C++ log on for every export (``setup_onnx_logging`` tests a function object,
    which is always true) and then prints the whole TorchScript graph to stderr when an export fails: pages of
    IR above the one-line error. Python's ``redirect_stdout`` cannot reach C++ streams, so the fds are swapped.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = (os.dup(1), os.dup(2))
    except (OSError, ValueError):  # no fds to swap (closed, or replaced streams): leave the output as it is
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _torch_export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """``torch.onnx.export`` (TorchScript exporter, :data:`OPSET`); what it cannot export is one :class:`ExportError`."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _native_output_muted():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, do_constant_folding=True,
            )
    except torch.onnx.errors.UnsupportedOperatorError as exc:
        match = _OP_IN_MESSAGE.search(str(exc))
        op = match.group(1) if match else str(exc).splitlines()[0]
        raise ExportError(f"cannot write {Path(path).name}: torch.onnx has no ONNX export for {op!r} at opset {OPSET}; {_ADVICE}") from exc
    except RuntimeError as exc:  # the tracer and the symbolic functions (torch.onnx.errors.* are RuntimeErrors)
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        raise ExportError(f"cannot write {Path(path).name}: torch.onnx failed ({type(exc).__name__}: {lines[0] if lines else ''}); "
                          f"{_ADVICE}") from exc


# Traced ops the exporter's graph passes erase before it looks up symbolic functions: the number-type casts that
# tracing records around Python ints (``torch.arange(x.shape[-1])`` traces an aten::ScalarImplicit).
_ERASED_BEFORE_EXPORT = frozenset({"aten::ScalarImplicit", "aten::Int", "aten::Float", "aten::IntImplicit", "aten::FloatImplicit"})


def _registered_ops() -> Callable[[str], object | None]:
    """The TorchScript exporter's symbolic-function lookup (``aten::op`` → its functions by opset), all opsets loaded."""
    from torch.onnx._internal.torchscript_exporter import registration
    from torch.onnx._internal.torchscript_exporter.utils import _trigger_symbolic_function_registration

    _trigger_symbolic_function_registration()
    return registration.registry.get_function_group


def unsupported_ops(ops: dict[str, str]) -> dict[str, str]:
    """``{op: why}`` for the traced ops (``aten::fft_rfft``, from ``torch.jit.trace``) torch.onnx cannot export at :data:`OPSET`.

    The exporter's own table: it translates each traced op by the symbolic function registered for it at the
    opset and fails on one that has none, so an op missing here is exactly an op the export would fail on.
    Private API: when a torch release moves it, no op is reported (the export still fails with a clear line).
    """
    try:
        lookup = _registered_ops()
    except (ImportError, AttributeError):  # pragma: no cover - depends on the torch version
        return {}
    out = {}
    for op in ops:
        if op in _ERASED_BEFORE_EXPORT:
            continue
        name = op[:-1] if op.endswith("_") else op  # as the exporter does: in-place relu_ is exported as relu
        group = lookup(name)
        if group is not None and group.get(OPSET) is not None:
            continue
        since = group.get_min_supported() if group is not None else None
        out[op] = (f"has no ONNX export at opset {OPSET}" + (f" (torch.onnx supports it from opset {since})" if since else "")
                   + f"; {_ADVICE}")
    return out


def export_fp32(model: nn.Module, contract: IOContract, path: Path) -> Artifact:
    """FP32 ONNX of the float model."""
    path = Path(path)
    _torch_export(model.eval(), contract.example(), path)
    ins, outs = contract.edges()
    return Artifact(path, "onnx", "fp32", ins, outs, path.stat().st_size)


def export_qdq(spec: DeploymentSpec, path: Path) -> Artifact:
    """QDQ ONNX of the deployment spec, with int8 weight initializers (one ORT basic pass folds Q(weight))."""
    import tempfile

    from runtimes.onnxruntime_backend import OrtPredictor

    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # beside the artifact: inside the staging folder, swept if killed
        raw = Path(tmp) / "raw.onnx"
        _torch_export(qdq_graph(spec), spec.contract.example(), raw)
        OrtPredictor(raw, opt_level="basic", optimized_path=path)  # folds Q(weight) → int8 initializers
    ins, outs = spec.contract.edges()
    notes = {"activations": "uint8 per-tensor asymmetric", "weights": "int8 per-channel symmetric", "opset": OPSET}
    if spec.float_layers:
        notes["float_layers_onnx"] = ("float Conv/Gemm between DequantizeLinear and QuantizeLinear, input through Max(x, x) so "
                                      "onnxruntime does not quantize their weights itself")
    return Artifact(path, "onnx", spec.precision, ins, outs, path.stat().st_size, notes=notes)


def check_integer(artifact: Artifact, sample: np.ndarray, min_share: float = 1.0, optimized_path: Path | None = None) -> IntegerCoverage:
    """Read ORT's optimized graph and profiled run on ``sample``; fail naming the ops that would run float MACs, or any op the reader does not recognise."""
    x = np.ascontiguousarray(np.asarray(sample, dtype=np.float32)[:1])
    cov = onnxruntime_coverage(artifact.path, x)
    if optimized_path is not None:
        counts = optimized_op_counts(artifact.path, optimized_path)
        artifact.notes["ort_optimized_graph"] = optimized_path.name
        artifact.notes["ort_optimized_op_counts"] = dict(sorted(counts.items()))
    artifact.coverage = cov
    gate_artifact(artifact, cov, min_share)
    return cov
