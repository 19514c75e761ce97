"""Integer coverage of an OpenVINO IR as the CPU plugin (or the device asked for: AUTO, GPU...) executes it.

Compile on CPU (or that device) under an explicit ``INFERENCE_PRECISION_HINT`` (so no float leftover silently
runs in bf16/f16: ARM's default is f16), run one input, walk the runtime (executed) graph and
read each op's ``layerType`` and ``runtimePrecision``: u8/i8 on Convolution / FullyConnected
is integer. MACs come from the runtime graph's shapes.

Deny by default (:mod:`runtimes.coverage`): a runtime layer on none of the lists below that runs
in float counts as a float MAC op and is named, and so does a float ``Subgraph`` or ``Eltwise``
the plugin built from a multiply-accumulate op of the IR (snippets tokenize attention and MLP
blocks, MatMul included, into one ``Subgraph``): the IR is read to see which ops each layer came from.
"""

from __future__ import annotations

from collections import Counter
from math import prod
from pathlib import Path

import numpy as np

from runtimes.coverage import IntegerCoverage, attention_macs, einsum_macs, elementwise_macs, matmul_macs, rnn_macs, rnn_macs_from_io

# CPU-plugin layer types that do the multiply-accumulates
CONV_LAYERS = {"Convolution", "GroupConvolution", "BinaryConvolution", "DeformableConvolution"}
DECONV_LAYERS = {"Deconvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData"}
MATMUL_LAYERS = {"FullyConnected", "MatMul", "Gemm", "FullyConnectedCompressed", "LLMMLP", "QKVProjection"}
RNN_LAYERS = {"RNNSeq", "RNNCell"}
ATTENTION_LAYERS = {"MHA", "ScaledAttn", "ScaledDotProductAttention", "PagedAttention", "ScaledDotProductAttentionWithKVCache"}
EINSUM_LAYERS = {"Einsum"}
MAC_LAYERS = CONV_LAYERS | DECONV_LAYERS | MATMUL_LAYERS | RNN_LAYERS | ATTENTION_LAYERS | EINSUM_LAYERS
# IR (opset) op types that multiply-accumulate: a float runtime layer made from one of them is a float MAC op
MAC_IR_OPS = {"Convolution", "GroupConvolution", "BinaryConvolution", "DeformableConvolution", "ConvolutionBackpropData",
              "GroupConvolutionBackpropData", "MatMul", "Einsum", "LSTMSequence", "GRUSequence", "RNNSequence", "LSTMCell",
              "GRUCell", "RNNCell", "AUGRUSequence", "AUGRUCell", "ScaledDotProductAttention", "TensorIterator", "Loop"}
# known layers without MACs: data movement, elementwise, quantization, pooling, normalisation, shapes
KNOWN_LAYERS = {"Reorder", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Eltwise", "Subgraph", "FakeQuantize", "Pooling",
                "AdaptivePooling", "Reduce", "Concatenation", "Split", "Gather", "GatherND", "GatherElements", "Broadcast",
                "ShapeOf", "StridedSlice", "Pad", "Tile", "Interpolate", "Softmax", "LogSoftmax", "MVN", "Normalize", "RMS",
                "Convert", "Range", "Select", "Math", "Lrn", "DepthToSpace", "SpaceToDepth", "ShuffleChannels", "TopK", "NonZero",
                "ScatterUpdate", "ScatterElementsUpdate", "ScatterNDUpdate", "Roll", "ReverseSequence", "OneHot", "BatchToSpace",
                "SpaceToBatch", "Eye", "Unique", "Bucketize", "Memcpy"}
# known layers that can absorb a MAC op of the IR (snippets' MHA/MLP tokenization, a K=1 MatMul turned into a multiply)
FUSING_LAYERS = {"Subgraph", "Eltwise"}
NOT_OPS = {"Input", "Output", "Const", "Parameter", "Result", "Constant"}  # graph edges and constants, not kernels
INT_PRECISIONS = {"u8", "i8"}
FLOAT_PRECISIONS = {"f32", "bf16", "f16", "f64"}
NOT_FLOAT_PRECISIONS = {"i32", "i64", "u32", "u64", "i16", "u16", "boolean", "u1", "i4", "u4"}  # index/shape arithmetic


def _dims(shape) -> list[int] | None:
    """Static dims of a runtime-graph shape, the dynamic batch counted as 1 (MACs per image); None if anything else is dynamic."""
    if shape.rank.is_dynamic:
        return None
    dims = []
    for i, d in enumerate(shape):
        if d.is_static:
            dims.append(d.get_length())
        elif i == 0:
            dims.append(1)
        else:
            return None
    return dims


def _macs(layer: str, out: list[int] | None, w: list[int] | None, ins: list[list[int] | None] | None = None) -> int | None:
    """MACs of one op from its output shape and weight shape (all input shapes for RNN/attention/einsum); None where they don't say."""
    ins = ins or []
    x = ins[0] if ins else None
    if layer in RNN_LAYERS:  # X [B, T, I], H0 [B, D, H], (C0), lengths, W [D, G·H, I], R [D, G·H, H], B [D, G·H]
        return _rnn_macs(x, ins[1:], out)
    if layer in ATTENTION_LAYERS:
        return attention_macs(x, ins[1] if len(ins) > 1 else None, out)
    if layer in EINSUM_LAYERS:
        return einsum_macs(ins, out)
    if not out or not w or len(out) < 2:
        return None
    if layer in CONV_LAYERS:
        grouped = len(w) == len(out) + 1  # [G, O/G, I/G, k...]
        return prod(out) * prod(w[2:] if grouped else w[1:])
    if layer in DECONV_LAYERS:  # weight [I, O, k...] or [G, I/G, O/G, k...]: every input element is spread over O/G · k... outputs
        grouped = x is not None and len(w) == len(x) + 1
        return prod(x) * prod(w[2:] if grouped else w[1:]) if x else None
    cout = out[-1]
    if len(w) >= 2 and w[-2] == cout:  # FullyConnected weight [O, I]
        return prod(out) * w[-1]
    if w[-1] == cout:  # MatMul B [K, N]
        return prod(out) * w[-2] if len(w) >= 2 else None
    return matmul_macs(x, w, out)


def _rnn_macs(x: list[int] | None, rest: list[list[int] | None], out: list[int] | None) -> int | None:
    """An RNN/LSTM/GRU layer: W and R are the two rank-3 inputs with the most rows (G·H); W ends in the input size."""
    mats = [s for s in rest if s and len(s) == 3]
    rows = max((s[-2] for s in mats), default=0)
    mats = [s for s in mats if s[-2] == rows]
    w = next((s for s in mats if x and s[-1] == x[-1]), None)
    r = next((s for s in mats if s is not w), None)
    macs = rnn_macs(x, w, r)
    return macs if macs is not None else rnn_macs_from_io(x, out[-1] if out else None, 4)  # unknown weights: as an LSTM


def _fused_macs(from_macs: list[str], ins: list[list[int] | None], out: list[int] | None) -> int:
    """MACs of a fused layer built from MAC ops of the IR: attention over its first two inputs (Q, K) or a product of them."""
    macs = None
    if "ScaledDotProductAttention" in from_macs and len(ins) > 1:
        macs = attention_macs(ins[0], ins[1], out)
    elif "MatMul" in from_macs and len(ins) > 1:
        macs = matmul_macs(ins[0], ins[1], out)
    return max(macs or 0, elementwise_macs(out))


def _ir_op_types(path: Path) -> dict[str, str]:
    """Friendly name → op type of every op in the IR at ``path``, to see which IR ops a runtime layer was built from."""
    from runtimes.openvino_backend import core

    return {op.get_friendly_name(): op.get_type_name() for op in core().read_model(str(path)).get_ordered_ops()}


def classify(pred, sample: np.ndarray) -> tuple[IntegerCoverage, Counter]:
    pred.run({pred.inputs[0].name: sample})  # the runtime graph must execute, not just compile
    ir_types = _ir_op_types(pred.path)
    cov = IntegerCoverage("openvino", 0, 0)
    layers: Counter = Counter()
    for op in pred.runtime_layers():
        layer, prec = op["layer_type"], op["precision"].lower()
        if layer in NOT_OPS:
            continue
        key = f"{layer}:{prec}"
        layers[key] += 1
        ins = [_dims(s) for s in op["inputs"]]
        out = _dims(op["outputs"][0]) if op["outputs"] else None
        from_macs = sorted({ir_types[n] for n in op["original"].split(",") if ir_types.get(n) in MAC_IR_OPS})
        if layer in MAC_LAYERS:
            macs = _macs(layer, out, ins[1] if len(ins) > 1 else None, ins)
            cov.tally(key, prec in INT_PRECISIONS, elementwise_macs(out) if macs is None else macs, f"{op['name']} ({key})")
        elif prec in INT_PRECISIONS:
            cov.tally(key, True)
            if layer not in KNOWN_LAYERS:  # integer, so no float to deny, but listed as not recognised
                cov.unrecognised[key] = cov.unrecognised.get(key, 0) + 1
        elif from_macs and layer in FUSING_LAYERS and prec not in NOT_FLOAT_PRECISIONS:  # MACs hidden in a fused float layer
            cov.tally(key, False, _fused_macs(from_macs, ins, out), f"{op['name']} ({key}, from {'/'.join(from_macs)})")
        elif layer in KNOWN_LAYERS:
            if prec in FLOAT_PRECISIONS:
                cov.tally(key, False, other=True)
        else:
            cov.tally_unknown(key, prec not in NOT_FLOAT_PRECISIONS, elementwise_macs(out), op["name"])
    return cov, layers


def openvino_coverage(xml_path: Path, sample: np.ndarray, threads: int = 1, precision_hint: str = "f32",
                      accelerator: str | None = None) -> IntegerCoverage:
    """Compile on ``accelerator`` (default CPU; explicit precision hint), run ``sample`` once, classify every executed MAC op
    by its runtime precision. The runtime graph is the device's own (AUTO: the device it picked)."""
    from runtimes.openvino_backend import OvPredictor

    pred = OvPredictor(Path(xml_path), threads=threads, precision_hint=precision_hint, accelerator=accelerator or "CPU")
    return classify(pred, np.ascontiguousarray(sample, dtype=np.float32))[0]


def accelerator_view(xml_path: Path, sample: np.ndarray, threads: int, accelerator: str) -> dict:
    """The device(s) OpenVINO compiled ``xml_path`` for (``EXECUTION_DEVICES``: what AUTO picked) and its runtime graph's
    primitives per MAC layer: what the coverage above was read from."""
    from runtimes.openvino_backend import OvPredictor

    pred = OvPredictor(Path(xml_path), threads=threads, accelerator=accelerator)
    return {"executes_on": pred.executes_on, "primitives": pred.kernels()["primitives"]}
