"""Integer coverage of an OpenVINO IR as the CPU plugin executes it.

Compile on CPU under an explicit ``INFERENCE_PRECISION_HINT`` (so no float leftover silently
runs in bf16/f16: ARM's default is f16), run one input, walk the runtime (executed) graph and
read each op's ``layerType`` and ``runtimePrecision``: u8/i8 on Convolution / FullyConnected
is integer. MACs come from the runtime graph's shapes.
"""

from __future__ import annotations

from collections import Counter
from math import prod
from pathlib import Path

import numpy as np

from runtimes.coverage import IntegerCoverage

# CPU-plugin layer types that do the multiply-accumulates
CONV_LAYERS = {"Convolution", "GroupConvolution", "BinaryConvolution"}
DECONV_LAYERS = {"Deconvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData"}
MATMUL_LAYERS = {"FullyConnected", "MatMul", "Gemm"}
MAC_LAYERS = CONV_LAYERS | DECONV_LAYERS | MATMUL_LAYERS
INT_PRECISIONS = {"u8", "i8"}
FLOAT_PRECISIONS = {"f32", "bf16", "f16"}
NOT_OPS = {"Input", "Output", "Const", "Parameter", "Result", "Constant"}  # graph edges and constants, not kernels



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


def _macs(layer: str, out: list[int] | None, w: list[int] | None) -> int | None:
    """MACs of one op from its output shape and weight shape; None where the shapes don't say."""
    if not out or not w or len(out) < 2:
        return None
    if layer in CONV_LAYERS:
        grouped = len(w) == len(out) + 1  # [G, O/G, I/G, k...]
        return prod(out) * prod(w[2:] if grouped else w[1:])
    if layer in DECONV_LAYERS:
        return prod(out) * prod(w) // out[1] if prod(w) % out[1] == 0 else None
    cout = out[-1]
    if len(w) >= 2 and w[-2] == cout:  # FullyConnected weight [O, I]
        return prod(out) * w[-1]
    if w[-1] == cout:  # MatMul B [K, N]
        return prod(out) * w[-2] if len(w) >= 2 else None
    return None


def classify(pred, sample: np.ndarray) -> tuple[IntegerCoverage, Counter]:
    pred.run({pred.inputs[0].name: sample})  # the runtime graph must execute, not just compile
    cov = IntegerCoverage("openvino", 0, 0)
    layers: Counter = Counter()
    for op in pred.runtime_layers():
        layer, prec = op["layer_type"], op["precision"].lower()
        if layer in NOT_OPS:
            continue
        key = f"{layer}:{prec}"
        layers[key] += 1
        if layer in MAC_LAYERS:
            w = _dims(op["inputs"][1]) if len(op["inputs"]) > 1 else None
            macs = _macs(layer, _dims(op["outputs"][0]) if op["outputs"] else None, w)
            macs = 1 if macs is None else macs  # shapes unknown: count the op
            cov.tally(key, prec in INT_PRECISIONS, macs, f"{op['name']} ({key})")
        elif prec in INT_PRECISIONS:
            cov.tally(key, True)
        elif prec in FLOAT_PRECISIONS:
            cov.tally(key, False, other=True)
    return cov, layers


def openvino_coverage(xml_path: Path, sample: np.ndarray, threads: int = 1, precision_hint: str = "f32") -> IntegerCoverage:
    """Compile on CPU (explicit precision hint), run ``sample`` once, classify every executed MAC op by its runtime precision."""
    from runtimes.openvino_backend import OvPredictor

    pred = OvPredictor(Path(xml_path), threads=threads, precision_hint=precision_hint)
    return classify(pred, np.ascontiguousarray(sample, dtype=np.float32))[0]
