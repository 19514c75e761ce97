"""Integer coverage of a .tflite model, read by the LiteRT interpreter itself, per accelerator (runtimes/accelerators.py).

The interpreter is built without its default delegate so the op list is the
model's own, with no ``DELEGATE`` node appended (with XNNPACK applied, the model's
ops stay listed and one DELEGATE node per partition is added). For each op, ``_get_ops_details()`` gives its operand tensors and
``get_tensor_details()`` their types and quantization: a MAC op counts as integer
when its activation input, weight and output are int8 (bias int32); ADD, MEAN,
pooling and CONCATENATION are the structural ops that must be int8 too for the
model to be full-integer. Known elementwise and data-movement ops that run in float (the input
normalisation's SUB/MUL between the int8 input's DEQUANTIZE and the first
QUANTIZE, say) are listed under ``other_float_ops``. MACs come from the tensor shapes (NHWC activations,
OHWI filters, [1, kh, kw, C·m] depth-wise filters, [O, I] fully-connected weights).

Per accelerator (``litert:xnnpack``, the default, and ``litert:none``): both run an op on int8
tensors in integer kernels, so the share is the model's own; what differs, and what
:func:`accelerator_view` shows, is which ops XNNPACK took (walked from each DELEGATE node's
boundary tensors) and which stay on built-in kernels. ``litert:gpu`` computes in float whatever
the tensor types, and an NPU's compiled graph is invisible: every MAC op counts as float there.

Deny by default (:mod:`runtimes.coverage`): an op on none of the lists below (a fused
``UNIDIRECTIONAL_SEQUENCE_LSTM`` is on the MAC list; a float ``CUMSUM`` or ``CUSTOM`` op is on
none) that touches a float tensor counts as a float MAC op and is named.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import numpy as np

from runtimes.coverage import IntegerCoverage, elementwise_macs, matmul_macs

MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL"}
# recurrent ops the converter may keep fused: every step multiplies by their rank-2 weight matrices
RNN_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
           "BIDIRECTIONAL_SEQUENCE_RNN", "RNN", "SVDF"}
STABLEHLO_MAC_OPS = {"STABLEHLO_DOT_GENERAL", "STABLEHLO_CONVOLUTION"}
STRUCTURAL_OPS = {"ADD", "MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}  # no MACs, but must be int8 too
EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}  # (re)quantization: int8→int8 is a requantize, float↔int8 only at the edges
# known ops without MACs: data movement, shapes, comparisons, elementwise maths, normalisation, resize
KNOWN_OPS = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "PAD", "PADV2", "MIRROR_PAD", "SLICE", "STRIDED_SLICE", "GATHER",
             "GATHER_ND", "SPLIT", "SPLIT_V", "PACK", "UNPACK", "TILE", "BROADCAST_TO", "BROADCAST_ARGS", "SHAPE", "CAST", "FILL",
             "ZEROS_LIKE", "ONES_LIKE", "RANGE", "SELECT", "SELECT_V2", "WHERE", "EQUAL", "NOT_EQUAL", "LESS", "LESS_EQUAL",
             "GREATER", "GREATER_EQUAL", "LOGICAL_AND", "LOGICAL_OR", "LOGICAL_NOT", "ARG_MAX", "ARG_MIN", "TOPK_V2",
             "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "REVERSE_V2", "SCATTER_ND", "ONE_HOT",
             "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM", "POW", "ABS", "NEG", "EXP", "LOG", "SQRT", "RSQRT",
             "SQUARE", "SIN", "COS", "FLOOR", "CEIL", "ROUND", "SIGN", "FLOOR_DIV", "FLOOR_MOD", "RELU", "RELU6", "RELU_N1_TO_1",
             "RELU_0_TO_1", "LEAKY_RELU", "PRELU", "ELU", "LOGISTIC", "TANH", "HARD_SWISH", "GELU", "SOFTMAX", "LOG_SOFTMAX",
             "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL", "L2_NORMALIZATION",
             "LOCAL_RESPONSE_NORMALIZATION", "L2_POOL_2D", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "ADD_N"}
INT_TYPES = {np.int8, np.uint8, np.int16}
FLOAT_TYPES = {np.float32, np.float16, np.float64}
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


def _dims(t: dict | None) -> list[int] | None:
    return None if t is None else [int(d) for d in t["shape"]]


def _estimate(g: TfliteGraph, op: dict) -> int:
    """MACs of a recurrent or StableHLO contraction op from its shapes; one per output element for anything else."""
    name = op["op_name"]
    ins = [_dims(g.tensor(i)) for i in op["inputs"]]
    out = _dims(g.tensor(op["outputs"][0])) if len(op["outputs"]) else None
    x = ins[0] if ins else None
    if name in RNN_OPS and x:  # every step (time × batch rows of x) multiplies by each weight matrix (states add a little)
        mats = sum(prod(s) for s in ins[1:] if s and len(s) == 2)
        return max(prod(x[:-1]) * mats, elementwise_macs(out))
    if name == "STABLEHLO_DOT_GENERAL" and len(ins) > 1:
        return matmul_macs(x, ins[1], out) or elementwise_macs(out)
    if name == "STABLEHLO_CONVOLUTION" and len(ins) > 1 and ins[1] and out:  # each output sums a kernel's worth, but one channel dim
        return prod(out) * prod(ins[1]) // max(ins[1])
    return elementwise_macs(out)


def _floating(g: TfliteGraph, op: dict) -> bool:
    """Whether the op reads or writes a float tensor (so it computes in float)."""
    tensors = [g.tensor(i) for i in list(op["inputs"]) + list(op["outputs"])]
    return any(_dtype(t) in FLOAT_TYPES for t in tensors if t is not None)


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


def tflite_coverage(g: TfliteGraph, computes_in_float: str | None = None) -> IntegerCoverage:
    """Classify every op of ``g``: integer / float MAC ops (with MACs), integer or float structural and known ops, unknown ops
    that touch a float tensor as float MAC ops. ``computes_in_float``: why the accelerator runs every op in float whatever
    its tensor types (LiteRT's GPU), named on each op."""
    cov = IntegerCoverage("litert", 0, 0)
    for op in g.ops:
        name = op["op_name"]
        if name in NOT_KERNELS:
            continue
        if computes_in_float is not None:
            if name in MAC_OPS or name in RNN_OPS or name in STABLEHLO_MAC_OPS or name in STRUCTURAL_OPS:
                macs = _macs(g, op) or _estimate(g, op) if name not in STRUCTURAL_OPS else 0
                cov.tally(name, False, macs, f"{_op_name(g, op)} ({computes_in_float})")
            elif name not in EDGE_OPS:
                cov.tally(name, False, other=True)
            continue
        integer = _is_integer(g, op)
        if name in MAC_OPS:  # shapes that do not say: at least one MAC per output, never zero
            cov.tally(name, integer, _macs(g, op) or _estimate(g, op), _op_name(g, op))
        elif name in RNN_OPS or name in STABLEHLO_MAC_OPS:
            cov.tally(name, integer, _estimate(g, op), _op_name(g, op))
        elif name in STRUCTURAL_OPS:
            cov.tally(name, integer, node=_op_name(g, op))
        elif name in EDGE_OPS or (integer and name in KNOWN_OPS):
            cov.tally(name, True)
        elif name in KNOWN_OPS:
            if _floating(g, op):
                cov.tally(name, False, other=True)
        elif integer:  # not recognised, but integer in and out: an integer kernel, listed as not recognised
            cov.tally(name, True)
            cov.unrecognised[name] = cov.unrecognised.get(name, 0) + 1
        else:
            cov.tally_unknown(name, _floating(g, op), _estimate(g, op), _op_name(g, op))
    return cov



# What the reader can see of each accelerator's precision: XNNPACK and the built-in kernels run an op on int8 tensors in
# integer kernels (XNNPACK's QS8/QC8 operators), so the model's own tensor types say it; the GPU computes in fp16/fp32 on
# dequantized weights whatever the types; an NPU's vendor-compiled graph is not visible at all (deny by default: float).
IN_FLOAT = {"gpu": "LiteRT's GPU accelerator computes in fp16/fp32 on dequantized int8 weights",
            "npu": "inside the NPU's vendor-compiled graph, which the reader cannot see: counted as float"}


def litert_coverage(path: Path, sample: np.ndarray | None = None, threads: int = 1, accelerator: str | None = None) -> IntegerCoverage:
    """The coverage of the .tflite at ``path`` as ``accelerator`` runs it (default ``xnnpack``): read from the flatbuffer's
    op types and the accelerator's known precision (:data:`IN_FLOAT`), so ``sample`` and ``threads`` are not needed."""
    del sample, threads
    return tflite_coverage(read_graph(path), IN_FLOAT.get(accelerator or "xnnpack"))


def delegate_partitions(path: Path, threads: int = 1) -> dict:
    """Which ops the default delegate (XNNPACK) took, read from the interpreter that applied it.

    With a delegate applied, ``_get_ops_details()`` still lists the model's ops and appends one ``DELEGATE`` node per
    partition, whose inputs and outputs are the partition's boundary tensors: the ops inside are those reached walking
    back from its outputs to its inputs. The rest run on the interpreter's built-in kernels.
    """
    from runtimes.litert_backend import interpreter_class

    it = interpreter_class()(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    ops = list(it._get_ops_details())
    producer = {int(t): o for o in ops if o["op_name"] != "DELEGATE" for t in o["outputs"]}
    inside: set[int] = set()
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    for d in delegates:
        stop = {int(t) for t in d["inputs"]}
        todo = [int(t) for t in d["outputs"]]
        while todo:
            t = todo.pop()
            op = producer.get(t)
            if t in stop or op is None or op["index"] in inside:
                continue
            inside.add(op["index"])
            todo += [int(i) for i in op["inputs"] if int(i) >= 0]
    kernels = [o for o in ops if o["op_name"] not in NOT_KERNELS]
    left = Counter(o["op_name"] for o in kernels if o["index"] not in inside)
    return {"partitions": len(delegates), "ops_delegated": len(inside), "ops_builtin": sum(left.values()),
            "builtin_ops": dict(sorted(left.items()))}


def accelerator_view(path: Path, sample: np.ndarray | None, threads: int, accelerator: str) -> dict:
    """What the reader can see of ``accelerator`` beyond op types: XNNPACK's partitions (which ops it took, which stay on
    built-in kernels), or that the built-in kernels run everything, or that a CompiledModel accelerator took the whole
    graph (it is compiled for it alone) with the precision the reader assumes for it."""
    if accelerator == "xnnpack":
        return {"delegate": "XNNPACK", **delegate_partitions(path, threads)}
    if accelerator == "none":
        ops = sum(1 for o in read_graph(path).ops if o["op_name"] not in NOT_KERNELS)
        return {"delegate": None, "partitions": 0, "ops_delegated": 0, "ops_builtin": ops}
    return {"delegate": f"LiteRT {accelerator.upper()} accelerator (whole graph)", "precision": IN_FLOAT.get(accelerator)}
