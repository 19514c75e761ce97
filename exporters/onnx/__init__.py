"""ONNX: FP32 and QDQ (uint8 activations, int8 per-channel weights) for ONNX Runtime, gated on ORT's executed graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.artifact import Artifact, IntegerCoverage
from exporters.format import ExportInputs, Format, NoOptions
from exporters.onnx.export import OPSET, check_integer, export_fp32, export_qdq, qdq_graph
from runtimes.formats import BY_NAME


class OnnxFormat(Format):
    info = BY_NAME["onnx"]
    aliases = ("onnxruntime", "ort")

    def export_float(self, inputs: ExportInputs, path: Path, options: NoOptions) -> Artifact:
        return export_fp32(inputs.float_model, inputs.contract, path)

    def export_integer(self, inputs: ExportInputs, path: Path, options: NoOptions) -> Artifact:
        return export_qdq(inputs.spec, path)

    def integer_gate(self, artifact: Artifact, sample: np.ndarray, min_share: float, options: NoOptions) -> IntegerCoverage:
        # ORT's optimized graph is kept beside the artifact: it shows what the runtime fused into integer kernels
        optimized = artifact.path.with_name(artifact.path.name.removesuffix(".onnx") + ".ort_optimized.onnx")
        return check_integer(artifact, sample, min_share, optimized)


FORMAT = OnnxFormat()

__all__ = ["FORMAT", "OPSET", "check_integer", "export_fp32", "export_qdq", "qdq_graph"]
