"""QDQ (or FP32) ONNX → OpenVINO IR, and proof that the CPU plugin runs its convs/matmuls in int8.

Recipe measured on this machine (docs/conversion.md §4, §7):

* ``ov.convert_model`` on a QDQ ONNX written by :mod:`exporters.onnx` (a private
  intermediate of this format, whatever other targets run) turns each
  activation Q/DQ pair into FakeQuantize and keeps the int8 weight initializers
  with their per-channel scales, so the IR carries the QAT grid unchanged;
* ``ov.save_model(..., compress_to_fp16=False)``: the FP32 twin stays FP32;
* proof of integer execution: compile on CPU, walk the runtime (executed) graph and
  read each op's ``layerType`` and ``runtimePrecision`` (u8/i8 on Convolution and
  FullyConnected), always under an explicit ``INFERENCE_PRECISION_HINT`` so no float
  leftover silently runs in bf16.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from exporters.artifact import Artifact, IntegerCoverage, require_integer
from exporters.errors import ExportError
from exporters.spec import IOContract
from runtimes.formats import BY_NAME
from runtimes.openvino_coverage import classify, openvino_coverage

__all__ = ["check_integer_openvino", "export_ir", "openvino_coverage"]


def _ov():
    try:
        import openvino as ov
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ExportError("the openvino target needs OpenVINO: pip install openvino") from exc
    return ov


def export_ir(onnx_path: Path, ir_path_xml: Path, precision: str, contract: IOContract) -> Artifact:
    """Convert an ONNX file (QDQ or FP32) to an OpenVINO IR; .bin then .xml are moved into place atomically."""
    ov = _ov()
    onnx_path, xml = Path(onnx_path), Path(ir_path_xml)
    if xml.suffix != ".xml":
        raise ExportError(f"an OpenVINO IR path must end in .xml, got {xml.name!r}")
    if not onnx_path.exists():
        raise ExportError(f"{onnx_path} does not exist: export the ONNX model before the OpenVINO IR")
    with tempfile.TemporaryDirectory(dir=xml.parent) as tmp:
        tmp_xml = Path(tmp) / xml.name
        try:
            model = ov.convert_model(str(onnx_path))
        except Exception as exc:  # noqa: BLE001  (OpenVINO raises several converter-specific types)
            raise ExportError(f"OpenVINO could not convert {onnx_path.name}: {str(exc).strip().splitlines()[0]}") from exc
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        tmp_bin, bin_path = tmp_xml.with_suffix(".bin"), xml.with_suffix(".bin")
        os.replace(tmp_bin, bin_path)  # weights first: the .xml appearing is the commit
        os.replace(tmp_xml, xml)
    ins, outs = contract.edges()
    size = sum(p.stat().st_size for p in BY_NAME["openvino"].files(xml))
    notes = {"source_onnx": onnx_path.name, "weights_file": bin_path.name, "xml_bytes": xml.stat().st_size,
             "bin_bytes": bin_path.stat().st_size, "compress_to_fp16": False, "openvino": ov.__version__.split("-")[0]}
    if precision != "fp32":
        notes.update({"activations": "uint8 per-tensor asymmetric (FakeQuantize)", "weights": "int8 per-channel symmetric"})
    return Artifact(xml, "openvino", precision, ins, outs, size, notes=notes)


def check_integer_openvino(artifact: Artifact, sample: np.ndarray, min_share: float = 1.0, threads: int = 1,
                           precision_hint: str = "f32") -> IntegerCoverage:
    """Read the CPU plugin's executed graph on ``sample``; fail naming the ops that would run a conv/matmul in float."""
    from runtimes.openvino_backend import OvPredictor

    x = np.ascontiguousarray(np.asarray(sample, dtype=np.float32)[:1])
    pred = OvPredictor(artifact.path, threads=threads, precision_hint=precision_hint)
    cov, layers = classify(pred, x)
    artifact.coverage = cov
    artifact.notes["precision_hint"] = pred.precision_hint
    artifact.notes["inference_precision"] = pred.inference_precision
    artifact.notes["openvino_runtime_layers"] = dict(sorted(layers.items()))
    require_integer(cov, artifact.path.name, min_share)
    return cov
