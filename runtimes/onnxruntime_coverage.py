"""Integer coverage of an ONNX model as ONNX Runtime executes it.

Two readings, both from ORT itself: the fully optimised graph (saved next to
the artifact as proof, op types counted) and a profiled run, whose per-node
records give the executed kernel and its tensor shapes, hence its MACs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from runtimes.coverage import IntegerCoverage

# kernel → index of its weight input
INT_MAC_OPS = {"QLinearConv": 3, "QGemm": 3, "QLinearMatMul": 3, "ConvInteger": 1, "MatMulInteger": 1, "MatMulIntegerToFloat": 1,
               "NhwcQLinearConv": 3, "DynamicQuantizeMatMul": 1}
FLOAT_MAC_OPS = {"Conv": 1, "FusedConv": 1, "NhwcFusedConv": 1, "Gemm": 1, "FusedGemm": 1, "MatMul": 1, "FusedMatMul": 1,
                 "ConvTranspose": 1}
INT_OTHER_OPS = {"QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat", "QLinearSigmoid",
                 "QLinearLeakyRelu", "QLinearSoftmax", "QuantizeLinear", "DequantizeLinear", "NhwcMaxPool", "QLinearReduceMean"}
FLOAT_OTHER_OPS = {"Add", "Mul", "Sub", "Div", "GlobalAveragePool", "AveragePool", "MaxPool", "Concat", "HardSwish", "Sigmoid",
                   "Relu", "Clip", "BatchNormalization", "ReduceMean", "Resize", "Softmax"}


def _macs(out_shape: list[int], w_shape: list[int]) -> int:
    if not out_shape or not w_shape:
        return 0
    out = int(np.prod(out_shape))
    w = int(np.prod(w_shape))
    for cout in (out_shape[1] if len(out_shape) > 1 else None, out_shape[-1]):
        if cout and cout in (w_shape[0], w_shape[-1]):
            return out // cout * w
    return out * w // max(w_shape[0], 1)


def optimized_op_counts(model_path: Path, optimized_path: Path, threads: int = 1) -> Counter:
    """Save ORT's ORT_ENABLE_ALL graph for ``model_path`` and count its op types."""
    import onnx

    from runtimes.onnxruntime_backend import OrtPredictor

    OrtPredictor(model_path, threads=threads, opt_level="all", optimized_path=optimized_path)
    model = onnx.load(str(optimized_path))
    return Counter(n.op_type for n in model.graph.node)


def onnxruntime_coverage(model_path: Path, sample: np.ndarray, threads: int = 1) -> IntegerCoverage:
    """Run ``sample`` once under ORT's profiler and classify every executed kernel."""
    from runtimes.onnxruntime_backend import OrtPredictor

    with tempfile.TemporaryDirectory() as tmp:
        pred = OrtPredictor(model_path, threads=threads, opt_level="all", profile_prefix=os.path.join(tmp, "ort"))
        pred.run({pred.inputs[0].name: sample})
        trace = json.loads(Path(pred.end_profiling()).read_text())
    cov = IntegerCoverage("onnxruntime", 0, 0)
    for ev in trace:
        args = ev.get("args", {})
        if ev.get("cat") != "Node" or "op_name" not in args or not ev.get("name", "").endswith("_kernel_time"):
            continue
        op = args["op_name"]
        node = ev["name"].removesuffix("_kernel_time")
        ins = [next(iter(t.values())) for t in args.get("input_type_shape", [])]
        outs = [next(iter(t.values())) for t in args.get("output_type_shape", [])]
        if op in INT_MAC_OPS or op in FLOAT_MAC_OPS:
            widx = INT_MAC_OPS.get(op, FLOAT_MAC_OPS.get(op))
            macs = _macs(outs[0] if outs else [], ins[widx] if len(ins) > widx else [])
            cov.tally(op, op in INT_MAC_OPS, macs, f"{node} ({op})")
        elif op in INT_OTHER_OPS:
            cov.tally(op, True)
        elif op in FLOAT_OTHER_OPS:
            cov.tally(op, False, other=True)
    return cov
