"""OpenVINO: IR (.xml + .bin) converted from a private QDQ / FP32 ONNX, checked for int8 execution on the CPU plugin."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporters.artifact import Artifact, IntegerCoverage
from exporters.format import ExportInputs, Format
from exporters.onnx import OPSET, export_fp32, export_qdq
from exporters.openvino.export import check_integer_openvino, export_ir, openvino_coverage
from runtimes.formats import BY_NAME
from runtimes.openvino_backend import DEFAULT_PRECISION_HINT


@dataclass(frozen=True)
class OpenVinoOptions:
    # Always explicit, so no float leftover silently runs in bf16 on a CPU that has it (docs/conversion.md §4).
    precision_hint: str = DEFAULT_PRECISION_HINT


class OpenVinoFormat(Format):
    """The IR is converted from an ONNX file this format writes for itself in a temporary folder, never the onnx target's."""

    info = BY_NAME["openvino"]
    aliases = ("ov", "ir")
    Options = OpenVinoOptions

    @staticmethod
    def _from_onnx(write_onnx, path: Path, precision: str, inputs: ExportInputs) -> Artifact:
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # inside the staging folder: swept if killed
            onnx_path = Path(tmp) / path.with_suffix(".onnx").name
            write_onnx(onnx_path)
            art = export_ir(onnx_path, path, precision, inputs.contract)
        art.notes["source_onnx"] = f"private intermediate (exporters/onnx, opset {OPSET}), not kept"
        return art

    def export_float(self, inputs: ExportInputs, path: Path, options: OpenVinoOptions) -> Artifact:
        art = self._from_onnx(lambda p: export_fp32(inputs.float_model, inputs.contract, p), path, "fp32", inputs)
        art.notes["precision_hint"] = options.precision_hint
        return art

    def export_integer(self, inputs: ExportInputs, path: Path, options: OpenVinoOptions) -> Artifact:
        return self._from_onnx(lambda p: export_qdq(inputs.spec, p), path, inputs.spec.precision, inputs)

    def integer_gate(self, artifact: Artifact, sample: np.ndarray, min_share: float, options: OpenVinoOptions) -> IntegerCoverage:
        return check_integer_openvino(artifact, sample, min_share, precision_hint=options.precision_hint)


FORMAT = OpenVinoFormat()

__all__ = ["FORMAT", "OpenVinoOptions", "check_integer_openvino", "export_ir", "openvino_coverage"]
