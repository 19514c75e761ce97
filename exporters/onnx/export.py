"""QAT model → QDQ ONNX with int8 weights and the QAT scales; plus the FP32 export of the same model.

Recipe measured on this machine (docs/conversion.md §3, §7):

* activations as QuantizeLinear/DequantizeLinear in **uint8** (same grid as the
  training quantizer; with int8 activations ORT on x86 leaves half the convs and
  every residual add in float);
* weights symmetric per-channel, clamped to the b-bit grid and exported with the
  (-128, 127) range (the only signed range the exporter accepts) and the QAT scale;
* one ORT_ENABLE_BASIC pass folds Q(weight) into int8 initializers, so the file
  is int8-sized and still portable QDQ (OpenVINO reads it too);
* activations trained below 8 bits deploy as 8-bit inside the learned clipping range.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from exporters.artifact import Artifact, IntegerCoverage, require_integer
from runtimes.onnxruntime_coverage import onnxruntime_coverage, optimized_op_counts
from pipeline.errors import ExportError
from pipeline.models.card import ModelCard
from pipeline.quant.quantizers import ActQuantizer, WeightQuantizer

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@contextlib.contextmanager
def export_mode(model: nn.Module, mode: str | None) -> Iterator[None]:
    """Switch every quantizer to the ops exporter ``mode`` understands; restore afterwards."""
    qs = [m for m in model.modules() if isinstance(m, (ActQuantizer, WeightQuantizer))]
    saved = [(m.export_mode, getattr(m, "export_bits", None)) for m in qs]
    try:
        for m in qs:
            m.export_mode = mode
            if isinstance(m, ActQuantizer):
                m.export_bits = 8 if m.bits < 8 else None
                if not bool(m.initialized):
                    raise ExportError("activation ranges are not calibrated: run the qat stage before export")
        yield
    finally:
        for m, (mode_, bits) in zip(qs, saved):
            m.export_mode = mode_
            if isinstance(m, ActQuantizer):
                m.export_bits = bits


def _torch_export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, do_constant_folding=True,
        )


def _contract(card: ModelCard) -> tuple[list[dict], list[dict]]:
    c, h, w = card.input_shape
    inp = {"name": INPUT_NAME, "shape": ["batch", c, h, w], "layout": "NCHW", "dtype": "float32", "scale": None, "zero_point": None,
           "pixel_range": list(card.pixel_range), "normalization": "inside the model" if card.normalization_inside else "caller"}
    out = {"name": OUTPUT_NAME, "shape": ["batch", card.num_classes], "layout": "NC", "dtype": "float32", "scale": None,
           "zero_point": None, "meaning": "logits"}
    return [inp], [out]


def export_fp32(model: nn.Module, card: ModelCard, path: Path) -> Artifact:
    """FP32 ONNX of the teacher, written atomically."""
    path = Path(path)
    example = torch.rand(1, *card.input_shape)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tmp_path = Path(tmp) / path.name
        _torch_export(model.eval(), example, tmp_path)
        os.replace(tmp_path, path)
    ins, outs = _contract(card)
    return Artifact(path, "onnx", "fp32", ins, outs, path.stat().st_size)


def export_qdq(qmodel: nn.Module, card: ModelCard, path: Path, precision: str) -> Artifact:
    """QDQ ONNX of the fake-quant model with int8 weight initializers, written atomically."""
    from runtimes.onnxruntime_backend import OrtPredictor

    path = Path(path)
    example = torch.rand(1, *card.input_shape)
    qmodel.eval()
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        with export_mode(qmodel, "onnx"):
            _torch_export(qmodel, example, raw)
        folded = Path(tmp) / path.name
        OrtPredictor(raw, opt_level="basic", optimized_path=folded)  # folds Q(weight) → int8 initializers
        os.replace(folded, path)
    ins, outs = _contract(card)
    return Artifact(path, "onnx", precision, ins, outs, path.stat().st_size,
                    notes={"activations": "uint8 per-tensor asymmetric", "weights": "int8 per-channel symmetric", "opset": OPSET})


def check_integer(artifact: Artifact, sample: torch.Tensor | None, card: ModelCard, min_share: float = 1.0,
                  optimized_path: Path | None = None) -> IntegerCoverage:
    """Read ORT's optimized graph and profiled run; fail naming the ops that would run a conv/gemm in float."""
    import numpy as np

    x = (sample if sample is not None else torch.rand(1, *card.input_shape)).numpy().astype(np.float32)
    cov = onnxruntime_coverage(artifact.path, x[:1])
    if optimized_path is not None:
        counts = optimized_op_counts(artifact.path, optimized_path)
        artifact.notes["ort_optimized_graph"] = optimized_path.name
        artifact.notes["ort_optimized_op_counts"] = dict(sorted(counts.items()))
    artifact.coverage = cov
    require_integer(cov, artifact.path.name, min_share)
    return cov
