"""Integer coverage of a .tflite model, read by the LiteRT interpreter itself.

The interpreter is built without its default delegate so the op list is the
model's own (with XNNPACK applied, the delegated ops collapse into one DELEGATE
node). For each op, ``_get_ops_details()`` gives its operand tensors and
``get_tensor_details()`` their types and quantization: a MAC op counts as integer
when its activation input, weight and output are int8 (bias int32); ADD, MEAN,
pooling and CONCATENATION are the structural ops that must be int8 too for the
model to be full-integer. Anything else that runs in float (the input
normalisation's SUB/MUL between the int8 input's DEQUANTIZE and the first
QUANTIZE, say) is listed under ``other_float_ops``. MACs come from the tensor shapes (NHWC activations,
OHWI filters, [1, kh, kw, C·m] depth-wise filters, [O, I] fully-connected weights).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import numpy as np

from runtimes.coverage import IntegerCoverage

MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL"}
STRUCTURAL_OPS = {"ADD", "MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}  # no MACs, but must be int8 too
EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}  # (re)quantization: int8→int8 is a requantize, float↔int8 only at the edges
INT_TYPES = {np.int8, np.uint8, np.int16}
NOT_KERNELS = {"DELEGATE"}


@dataclass
class TfliteGraph:
    """A .tflite file as the interpreter reads it: op list, tensor details, edges."""

    ops: list[dict]
    tensors: dict[int, dict]
    inputs: list[dict]
    outputs: list[dict]
    signatures: dict = field(default_factory=dict)

    @property
    def histogram(self) -> dict[str, int]:
        return dict(sorted(Counter(o["op_name"] for o in self.ops if o["op_name"] not in NOT_KERNELS).items()))

    def tensor(self, idx: int) -> dict | None:
        return self.tensors.get(int(idx)) if idx >= 0 else None


def read_graph(path: Path) -> TfliteGraph:
    """Load ``path`` in the interpreter (no delegate) and collect its ops and tensors."""
    from runtimes.litert_backend import interpreter_class, no_delegate_kwargs

    Interpreter = interpreter_class()
    it = Interpreter(model_path=str(path), num_threads=1, **no_delegate_kwargs())
    it.allocate_tensors()
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    sigs = it._get_full_signature_list() if hasattr(it, "_get_full_signature_list") else {}
    return TfliteGraph(list(it._get_ops_details()), tensors, it.get_input_details(), it.get_output_details(), sigs or {})


def _dtype(t: dict | None):
    return None if t is None else np.dtype(t["dtype"]).type


def _op_name(g: TfliteGraph, op: dict) -> str:
    out = g.tensor(op["outputs"][0]) if len(op["outputs"]) else None
    label = out["name"].split(";")[0] if out else ""
    return f"{op['op_name']}#{op['index']}" + (f" ({label})" if label else "")


def _macs(g: TfliteGraph, op: dict) -> int:
    """Multiply-accumulates of one MAC op from its tensor shapes (batch included, as the model is built)."""
    ins = [g.tensor(i) for i in op["inputs"]]
    out = g.tensor(op["outputs"][0])
    if out is None or len(ins) < 2 or ins[1] is None:
        return 0
    o, w = [int(d) for d in out["shape"]], [int(d) for d in ins[1]["shape"]]
    name = op["op_name"]
    if name in ("CONV_2D", "CONV_3D"):  # filter [O, kh, kw, I/groups]
        return prod(o) * prod(w[1:])
    if name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, C*m]: one input channel per output channel
        return prod(o) * prod(w[1:-1])
    if name == "FULLY_CONNECTED":  # weight [O, I]
        return prod(o) * w[-1]
    if name == "TRANSPOSE_CONV":  # inputs: output shape, filter [O, kh, kw, I], input
        x = g.tensor(op["inputs"][2])
        return prod(int(d) for d in x["shape"]) * prod(w[:-1]) if x is not None else 0
    if name == "BATCH_MATMUL":
        a = [int(d) for d in ins[0]["shape"]]
        return prod(o) * a[-1]
    return 0


def _is_integer(g: TfliteGraph, op: dict) -> bool:
    """int8 activations, weights and outputs; a bias, if any, int32."""
    name = op["op_name"]
    ins = [g.tensor(i) for i in op["inputs"]]
    outs = [g.tensor(i) for i in op["outputs"]]
    if any(_dtype(t) not in INT_TYPES for t in outs):
        return False
    if name in MAC_OPS:
        acts = ins[2:3] if name == "TRANSPOSE_CONV" else ins[:1]
        weights = ins[1:2]
        bias = [t for t in (ins[3:4] if name == "TRANSPOSE_CONV" else ins[2:3]) if t is not None]
        return all(_dtype(t) in INT_TYPES for t in acts + weights) and all(_dtype(t) in (np.int32, np.int64) for t in bias)
    # structural ops: every non-constant input is integer (axes / shapes are int32 constants)
    data = [t for t in ins if t is not None and _dtype(t) != np.int32]
    return all(_dtype(t) in INT_TYPES for t in data)


def tflite_coverage(g: TfliteGraph) -> IntegerCoverage:
    """Classify every op of ``g``: integer / float MAC ops (with MACs), integer or float structural and other ops."""
    cov = IntegerCoverage("litert", 0, 0)
    for op in g.ops:
        name = op["op_name"]
        if name in NOT_KERNELS:
            continue
        integer = _is_integer(g, op)
        if name in MAC_OPS:
            cov.tally(name, integer, _macs(g, op), _op_name(g, op))
        elif name in STRUCTURAL_OPS:
            cov.tally(name, integer, node=_op_name(g, op))
        elif name in EDGE_OPS or integer:
            cov.tally(name, True)
        else:
            cov.tally(name, False, other=True)
    return cov



def litert_coverage(path: Path, sample: np.ndarray | None = None, threads: int = 1) -> IntegerCoverage:
    """The coverage of the .tflite at ``path``: read from the flatbuffer's op types, so ``sample`` and ``threads`` are not needed."""
    del sample, threads
    return tflite_coverage(read_graph(path))
