"""Integer coverage of an ONNX model as ONNX Runtime executes it.

Two readings, both from ORT itself: the fully optimised graph (saved next to
the artifact as proof, op types counted) and a profiled run, whose per-node
records give the executed kernel and its tensor shapes, hence its MACs. The
profiled session keeps its weights unpacked (``session.disable_prepacking``):
a pre-packed weight drops out of the profile's shapes, and a QLinearConv's MACs
cannot be read without its filter. The kernels ORT picks are the same either way.

Deny by default (:mod:`runtimes.coverage`): an executed op on none of the lists below that
touches a float tensor counts as a float MAC op and is named.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import numpy as np

from runtimes.coverage import (IntegerCoverage, attention_macs, einsum_macs, elementwise_macs, matmul_macs, rnn_macs,
                               rnn_macs_from_io)

# multiply-accumulate kernels → index of their weight input
INT_MAC_OPS = {"QLinearConv": 3, "QGemm": 3, "QLinearMatMul": 3, "ConvInteger": 1, "MatMulInteger": 1, "MatMulIntegerToFloat": 1,
               "NhwcQLinearConv": 3, "DynamicQuantizeMatMul": 1}
FLOAT_MAC_OPS = {"Conv": 1, "FusedConv": 1, "NhwcFusedConv": 1, "Gemm": 1, "FusedGemm": 1, "MatMul": 1, "FusedMatMul": 1,
                 "TransposeMatMul": 1, "ConvTranspose": 1, "MatMulNBits": 1, "MatMulBnb4": 1, "Einsum": 1,
                 "LSTM": 1, "GRU": 1, "RNN": 1, "DynamicQuantizeLSTM": 1,
                 "Attention": 1, "QAttention": 1, "MultiHeadAttention": 1, "GroupQueryAttention": 1, "PackedAttention": 1,
                 "PackedMultiHeadAttention": 1, "DecoderMaskedMultiHeadAttention": 1, "DecoderMaskedSelfAttention": 1,
                 "SparseAttention": 1, "LongformerAttention": 1}
CONV_OPS = {"QLinearConv", "NhwcQLinearConv", "ConvInteger", "Conv", "FusedConv", "NhwcFusedConv"}
RNN_GATES = {"LSTM": 4, "DynamicQuantizeLSTM": 4, "GRU": 3, "RNN": 1}
ATTENTION_OPS = {op for op in FLOAT_MAC_OPS if "Attention" in op}
# integer kernels without MACs (requantize, integer pooling/elementwise), counted as integer
INT_OTHER_OPS = {"QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat", "QLinearSigmoid",
                 "QLinearLeakyRelu", "QLinearSoftmax", "QuantizeLinear", "DequantizeLinear", "NhwcMaxPool", "QLinearReduceMean",
                 "QLinearWhere", "DynamicQuantizeLinear"}
# known float compute without MACs (elementwise, normalisation, pooling, resize): listed under other_float_ops when run in float
FLOAT_OTHER_OPS = {"Add", "Mul", "Sub", "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Abs", "Neg", "Floor", "Ceil", "Round",
                   "Sign", "Min", "Max", "Mean", "Sum", "Mod", "Sin", "Cos", "Erf", "Tanh", "Sigmoid", "HardSigmoid", "HardSwish",
                   "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "FastGelu", "BiasGelu", "QuickGelu", "Softplus",
                   "Softsign", "Mish", "ThresholdedRelu", "Clip", "BiasAdd", "BatchNormalization", "InstanceNormalization",
                   "LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
                   "SkipSimplifiedLayerNormalization", "GroupNorm", "MeanVarianceNormalization", "LpNormalization", "LRN",
                   "Softmax", "LogSoftmax", "Hardmax", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                   "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "GlobalAveragePool", "GlobalMaxPool",
                   "AveragePool", "MaxPool", "LpPool", "Resize", "Upsample", "Concat"}
# data movement, shapes, indexing, comparisons and casts: no arithmetic on the values, ignored
NEUTRAL_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Shape", "Size", "Gather", "GatherElements",
               "GatherND", "Slice", "Split", "Expand", "Tile", "Pad", "ConstantOfShape", "Range", "Cast", "CastLike", "Where",
               "DepthToSpace", "SpaceToDepth", "ScatterND", "ScatterElements", "Scatter", "Compress", "NonZero", "TopK", "ArgMax",
               "ArgMin", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf",
               "Dropout", "ReverseSequence", "Trilu", "OneHot", "EyeLike", "MemcpyFromHost", "MemcpyToHost", "ReorderInput",
               "ReorderOutput", "Constant"}


def _is_float(dtype: str) -> bool:
    return "float" in dtype.lower() or dtype.lower() in ("double", "bfloat16")


def _at(shapes: list[list[int]], i: int) -> list[int] | None:
    return shapes[i] if len(shapes) > i else None


def _mac_estimate(op: str, ins: list[list[int]], outs: list[list[int]]) -> int | None:
    """MACs of one multiply-accumulate kernel from its profiled shapes (None where they do not say)."""
    x, out = _at(ins, 0), _at(outs, 0)
    w = _at(ins, INT_MAC_OPS.get(op, FLOAT_MAC_OPS.get(op, 1)))
    if op in CONV_OPS:  # filter [O, I/groups, k...]: every output element sums I/groups · k... products
        return prod(out) * prod(w[1:]) if out and w and len(w) >= 3 else None
    if op == "ConvTranspose":  # filter [I, O/groups, k...]: every input element is spread over O/groups · k... outputs
        return prod(x) * prod(w[1:]) if x and w and len(w) >= 3 else None
    if op in RNN_GATES:
        macs = rnn_macs(x, w, _at(ins, 2))
        if macs is None and x and out:
            directions = prod(out[:-1]) // max(prod(x[:-1]), 1) if len(out) == 4 else 1  # Y [T, D, B, H]
            macs = rnn_macs_from_io(x, out[-1], RNN_GATES[op], max(directions, 1))
        return macs
    if op in ATTENTION_OPS:
        return attention_macs(x, w, out, w if op in ("Attention", "QAttention") else None)
    if op == "Einsum":
        return einsum_macs(ins, out)
    if op in ("MatMulNBits", "MatMulBnb4"):  # packed blocks of 4-bit weights: K is the activation's last dim
        return prod(out) * x[-1] if x and out else None
    return matmul_macs(x, w, out)


def optimized_op_counts(model_path: Path, optimized_path: Path, threads: int = 1) -> Counter:
    """Save ORT's ORT_ENABLE_ALL graph for ``model_path`` and count its op types."""
    import onnx

    from runtimes.onnxruntime_backend import OrtPredictor

    OrtPredictor(model_path, threads=threads, opt_level="all", optimized_path=optimized_path)
    model = onnx.load(str(optimized_path))
    return Counter(n.op_type for n in model.graph.node)


@dataclass(frozen=True)
class TraceKernel:
    """One kernel execution in ORT's profile trace: a ``Node`` event named ``<node>_kernel_time``.

    The one reader of ORT's trace format, shared by the integer-coverage reader here (op types and
    shapes) and the per-op latency profile (:mod:`runtimes.profiling`: durations, providers).
    """

    node: str  # the node's name in the executed (optimised) graph
    op: str  # its op type as ORT names it (QLinearConv, FusedConv, ...)
    provider: str | None  # the execution provider that ran it (CPUExecutionProvider, ...)
    ts_us: int  # start, microseconds since the session was created
    dur_us: int  # the kernel's wall time
    inputs: list[tuple[str, list[int]]] = field(default_factory=list)  # (element type, shape) per input
    outputs: list[tuple[str, list[int]]] = field(default_factory=list)


def _typed_shapes(entries: list[dict]) -> list[tuple[str, list[int]]]:
    return [next(iter(t.items())) for t in entries if t]


def trace_kernels(events: list[dict]) -> list[TraceKernel]:
    """The kernel executions of an ORT profile trace (the JSON ``end_profiling`` writes), in trace order."""
    out = []
    for ev in events:
        args = ev.get("args", {})
        if ev.get("cat") != "Node" or "op_name" not in args or not ev.get("name", "").endswith("_kernel_time"):
            continue
        out.append(TraceKernel(ev["name"].removesuffix("_kernel_time"), args["op_name"], args.get("provider"),
                               int(ev.get("ts", 0)), int(ev.get("dur", 0)), _typed_shapes(args.get("input_type_shape", [])),
                               _typed_shapes(args.get("output_type_shape", []))))
    return out


def trace_runs(events: list[dict]) -> list[tuple[int, int]]:
    """(start, end) in microseconds of every ``InferenceSession.run`` of a trace (its ``model_run`` events), in order."""
    runs = [(int(ev["ts"]), int(ev["ts"]) + int(ev.get("dur", 0))) for ev in events
            if ev.get("cat") == "Session" and ev.get("name") == "model_run" and "ts" in ev]
    return sorted(runs)


def _profile(model_path: Path, sample: np.ndarray, threads: int, provider: str = "CPUExecutionProvider") -> list[dict]:
    """ORT's profile of one run of ``sample`` at ORT_ENABLE_ALL on ``provider`` (runtimes/accelerators.py), weights not
    pre-packed (their shapes stay in the records)."""
    import onnxruntime as ort

    from runtimes.onnxruntime_backend import session_options

    with tempfile.TemporaryDirectory(dir=Path(model_path).parent) as tmp:  # beside the artifact (a staging folder)
        so = session_options(threads, "all", profile_prefix=os.path.join(tmp, "ort"))
        so.add_session_config_entry("session.disable_prepacking", "1")
        session = ort.InferenceSession(str(model_path), so, providers=[provider])
        session.run(None, {session.get_inputs()[0].name: sample})
        return json.loads(Path(session.end_profiling()).read_text())


def onnxruntime_coverage(model_path: Path, sample: np.ndarray, threads: int = 1, accelerator: str | None = None) -> IntegerCoverage:
    """Run ``sample`` once under ORT's profiler (on execution provider ``accelerator``, default CPU) and classify every
    executed kernel, unknown ones as float."""
    cov = IntegerCoverage("onnxruntime", 0, 0)
    for k in trace_kernels(_profile(model_path, sample, threads, accelerator or "CPUExecutionProvider")):
        op, node = k.op, k.node
        ins, outs = [shape for _, shape in k.inputs], [shape for _, shape in k.outputs]
        dtypes = [dtype for dtype, _ in k.inputs + k.outputs]
        floating = any(_is_float(d) for d in dtypes) or not dtypes  # no types recorded: assume float
        if op in INT_MAC_OPS or op in FLOAT_MAC_OPS:
            macs = _mac_estimate(op, ins, outs)
            cov.tally(op, op in INT_MAC_OPS, elementwise_macs(_at(outs, 0)) if macs is None else macs, f"{node} ({op})")
        elif op in INT_OTHER_OPS:
            cov.tally(op, True)
        elif op in FLOAT_OTHER_OPS:
            if floating:
                cov.tally(op, False, other=True)
        elif op not in NEUTRAL_OPS:
            cov.tally_unknown(op, floating, elementwise_macs(_at(outs, 0)), node)
    return cov


def accelerator_view(model_path: Path, sample: np.ndarray, threads: int, accelerator: str) -> dict:
    """Which execution provider ran how many kernels, from the profile (a provider ORT cannot place a node on leaves it
    to the CPU provider): the share of the graph an accelerator really took."""
    kernels = trace_kernels(_profile(model_path, sample, threads, accelerator))
    return {"executed_by": dict(Counter(k.provider or "?" for k in kernels))}

