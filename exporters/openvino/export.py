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
import re
import tempfile
from pathlib import Path

import numpy as np

from exporters.artifact import Artifact, IntegerCoverage, gate_artifact
from exporters.errors import ExportError
from exporters.spec import IOContract
from runtimes.formats import BY_NAME
from runtimes.openvino_coverage import classify, openvino_coverage

__all__ = ["check_integer_openvino", "export_ir", "openvino_coverage", "unsupported_ops"]


def _ov():
    try:
        import openvino as ov
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ExportError("the openvino target needs OpenVINO: pip install openvino") from exc
    return ov


# OpenVINO's conversion report ends with a summary naming the ONNX ops it has no rule for, or failed on:
#   -- No conversion rule found for operations: Bernoulli-17, com.example.Foo
#   -- Conversion is failed for: HannWindow-17
_UNCONVERTED = re.compile(r"--\s*(No conversion rule found for operations|Conversion is failed for):\s*(.+)")


def _conversion_error(exc: BaseException, artifact: str) -> str:
    """One line naming the ONNX ops OpenVINO could not convert (its first line is only a source location) and what to do."""
    text = str(exc)
    found = [(m.group(1), m.group(2).strip()) for m in _UNCONVERTED.finditer(text)]
    if found:
        ops = ", ".join(ops for _, ops in found)
        why = "no conversion rule" if all(kind.startswith("No") for kind, _ in found) else "conversion failed"
        what = f"the ONNX op(s) {ops} ({why})"
    else:
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.strip().startswith("Check ")]
        what = f"the model ({type(exc).__name__}: {lines[0] if lines else text.strip()[:200]})"
    return (f"cannot write {artifact}: OpenVINO cannot convert {what} that torch.onnx wrote for the openvino target; "
            "replace that op in the model's forward(), or drop the openvino target (e.g. --target onnx or tflite)")


def unsupported_ops(ops: dict[str, str]) -> dict[str, str]:
    """``{op: why}`` for traced ops with no route to the IR: it is converted from the ONNX export, so ONNX's routes.

    OpenVINO's own ONNX frontend can still refuse an op torch.onnx writes; that shows only when converting.
    """
    from exporters.onnx.export import unsupported_ops as onnx_unsupported

    return onnx_unsupported(ops)


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
            raise ExportError(_conversion_error(exc, xml.name)) from exc
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
    """Read the CPU plugin's executed graph on ``sample``; fail naming the ops that would run float MACs, or any op the reader does not recognise."""
    from runtimes.openvino_backend import OvPredictor

    x = np.ascontiguousarray(np.asarray(sample, dtype=np.float32)[:1])
    pred = OvPredictor(artifact.path, threads=threads, precision_hint=precision_hint)
    cov, layers = classify(pred, x)
    artifact.coverage = cov
    artifact.notes["precision_hint"] = pred.precision_hint
    artifact.notes["inference_precision"] = pred.inference_precision
    artifact.notes["openvino_runtime_layers"] = dict(sorted(layers.items()))
    gate_artifact(artifact, cov, min_share)
    return cov
