"""Deployment spec → full-integer .tflite that keeps the learned scales; FP32 twin of the float model; PTQ fallback.

Recipe measured on this machine (docs/conversion.md §2.1, §7):

* the spec's graph is rewritten in ``quantized_decomposed`` q/dq ops carrying its
  scales (:mod:`exporters.tflite.qdq`), and ``litert_torch.convert`` runs with a
  PT2E ``QuantConfig``, which only switches the converter to STATIC q/dq mode:
  the quantizer itself never runs, so every scale in the file is the trained one;
* weights: int8 per output channel, symmetric, on the learned grid (a 4/3-bit grid
  is stored as int8 values in [-qmax, qmax]); activations: int8 per tensor, 8 bits
  inside the learned range; biases int32 (the converter quantizes them);
* input NHWC (no TRANSPOSE in the graph), named ``input``; output ``logits``;
* edges: ``io="int8"`` (default, what full-integer TFLite deployments expect:
  microcontrollers, NPUs, int8 camera pipelines) takes int8 pixels and returns
  int8 logits, both with the scale and zero point recorded in the artifact; where
  the model normalises its input itself, the input quantizer is the 8-bit pixel
  grid of the contract's pixel range (exact for 8-bit images) and the normalisation
  stays float between DEQUANTIZE and QUANTIZE. ``io="float"`` adds a QUANTIZE /
  DEQUANTIZE at the edges instead (:mod:`exporters.tflite.interface`);
* ``export_ptq`` (``export.tflite_calibrate``) calibrates the float model with PT2E
  on the held-out synthetic images instead of using the QAT scales.

The format record (:mod:`exporters.tflite`) writes each file in a temporary folder
and runs the coverage gate there; only a file that passes is renamed into place.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from exporters.artifact import Artifact, IntegerCoverage, gate_artifact, require_integer
from exporters.errors import ExportError
from exporters.spec import DeploymentSpec, IOContract
from exporters.tflite.qdq import INPUT_NAME, OUTPUT_NAME, EdgeModel, TensorQParams, input_quantizer, to_qdq
from runtimes.litert_coverage import TfliteGraph, read_graph, tflite_coverage

IO_MODES = ("int8", "float")
QAT_SCALES, PTQ_CALIBRATED = "qat-scales", "ptq-calibrated"
_ADVICE = "replace that op in the model's forward(), or drop the tflite target (e.g. --target onnx)"

# Traced ops (torch.jit names, as exporters/preflight.py collects them) that litert-torch 0.10 cannot take to a
# .tflite LiteRT runs, whatever their shapes, seen on small models: litert-torch has no route table that is cheap to
# load (importing it takes seconds), so the preflight checks these. Shape-dependent failures (Tensor.unfold on a 4-D
# tensor: a pad above 4-D) are left to the conversion, which fails with a clear line too.
NO_ROUTE: dict[str, str] = {
    "aten::sort": "is written as STABLEHLO_SORT, which LiteRT has no kernel for",
    "aten::argsort": "fails in the converter (a sort comparator on int64 indices)",
    "aten::one_hot": "has no lowering in litert-torch (aten._assert_async)",
}
_NO_KERNEL = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")


@dataclass(frozen=True)
class TfliteOptions:
    """What the caller chooses about the integer artifact (config keys ``export.tflite_io``, ``export.tflite_calibrate``)."""

    io: str = "int8"  # int8: integer edges with scale/zero point; float: QUANTIZE/DEQUANTIZE inside the model
    calibrate: bool = False  # PT2E calibration of the float model on the held-out synthetic set instead of the QAT scales

    def __post_init__(self) -> None:
        if self.io not in IO_MODES:
            raise ExportError(f"tflite io must be one of {', '.join(IO_MODES)}, got {self.io!r}")


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    """litert-torch prints a progress tree and torch/absl warnings on every conversion; keep the pipeline's log readable."""
    saved = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    level = logging.getLogger("torch").level
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            logging.getLogger("torch").setLevel(logging.ERROR)
            yield
    finally:
        logging.getLogger("torch").setLevel(level)
        if saved is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = saved


@contextlib.contextmanager
def _strict_qdq() -> Iterator[None]:
    """The converter in ``strict_qdq_mode``: every op follows the graph's q/dq exactly, so a float layer between a
    dequantize and a quantize stays a float op with float weights.

    Why: in its default mode the converter quantizes such a layer itself (measured, litert-torch 0.10: a float Linear
    between q/dq became an int8 FULLY_CONNECTED with per-channel scales it chose), so a float island would not be float.
    litert-torch's V2 converter sets the flag always; its default (V1) path, which takes our q/dq graph, has no
    parameter for it, so the flag is set on its config where the converter passes run. In strict mode the graph keeps
    its float edges (QUANTIZE after the input, DEQUANTIZE before the output): :func:`int8_interface` makes them int8.
    """
    try:
        from litert_torch._convert import litert_converter

        api = litert_converter.converter_api_ext
        run = api.run_convert_to_tfl_passes
        has_flag = hasattr(api.ConvertToTFLConfig(), "strict_qdq_mode")
    except (ImportError, AttributeError):
        has_flag = False
    if not has_flag:
        raise ExportError("the tflite target cannot keep float layers with this litert-torch (no strict q/dq mode to set): "
                          "drop qat.float_layers for it, or use --target onnx/openvino, or litert-torch==0.10.0")

    def strict(module, pass_manager, config):
        config.strict_qdq_mode = True
        return run(module, pass_manager, config)

    api.run_convert_to_tfl_passes = strict
    try:
        yield
    finally:
        api.run_convert_to_tfl_passes = run


def _convert(module: nn.Module, contract: IOContract, out: Path, quantized: bool, strict_qdq: bool = False) -> float:
    """``litert_torch.convert`` on an NHWC example, written to ``out``; returns the seconds it took (``strict_qdq``:
    :func:`_strict_qdq`)."""
    try:
        import litert_torch
        from litert_torch.quantize.quant_config import QuantConfig
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise ExportError("the tflite target needs litert-torch: pip install litert-torch==0.10.0") from exc
    from exporters.tflite.calibrate import pt2e_quantizer

    c, h, w = contract.input_shape
    example = torch.rand(1, h, w, c)
    quant_config = QuantConfig(pt2e_quantizer=pt2e_quantizer()) if quantized else None  # STATIC q/dq mode
    start = time.perf_counter()
    with _quiet_converter(), (_strict_qdq() if strict_qdq else contextlib.nullcontext()):
        try:
            edge = litert_torch.convert(module.eval(), sample_kwargs={INPUT_NAME: example}, quant_config=quant_config)
            edge.export(str(out))
        except Exception as exc:  # noqa: BLE001  (torch.export, lowering and the MLIR converter raise many types)
            lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
            raise ExportError(f"cannot write {Path(out).name} for the tflite target: litert-torch could not convert the model "
                              f"({type(exc).__name__}: {lines[0] if lines else ''}); {_ADVICE}") from exc
    return time.perf_counter() - start


def unsupported_ops(ops: dict[str, str]) -> dict[str, str]:
    """``{op: why}`` for the traced ops :data:`NO_ROUTE` knows to fail on the tflite target."""
    return {op: f"{NO_ROUTE[op]}, so the tflite target cannot convert it; {_ADVICE}" for op in ops if op in NO_ROUTE}


def _read(path: Path) -> TfliteGraph:
    """:func:`read_graph`, with a converted op the interpreter cannot run (``STABLEHLO_SORT``) as one ExportError."""
    try:
        return read_graph(path)
    except (ValueError, RuntimeError) as exc:
        match = _NO_KERNEL.search(str(exc))
        if match is None:
            lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
            raise ExportError(f"cannot write {path.name} for the tflite target: LiteRT cannot load the converted model "
                              f"({type(exc).__name__}: {lines[0] if lines else ''}); {_ADVICE}") from exc
        raise ExportError(f"cannot write {path.name} for the tflite target: litert-torch converted the model, but LiteRT has no "
                          f"kernel for {match.group(1)}, which one of its ops became; {_ADVICE}") from exc


def _contract(contract: IOContract, g: TfliteGraph) -> tuple[list[dict], list[dict]]:
    """The contract's edges (names, pixel range, normalisation) with the .tflite edges as the interpreter reads them."""
    from runtimes.litert_backend import edge_spec

    (inp,), (out,) = contract.edges()
    sig = next(iter(g.signatures.values()), {}) if g.signatures else {}
    by_index = {d["index"]: d for d in g.inputs + g.outputs}
    in_d = by_index[sig["inputs"][INPUT_NAME]] if sig else g.inputs[0]
    out_d = by_index[sig["outputs"][OUTPUT_NAME]] if sig else g.outputs[0]
    for entry, detail, layout in ((inp, in_d, "NHWC"), (out, out_d, "NC")):
        spec = edge_spec(entry["name"], detail, layout)
        entry.update({"shape": list(spec.shape), "layout": layout, "dtype": spec.dtype, "scale": spec.scale, "zero_point": spec.zero_point})
    inp["batch"] = "fixed at 1 as converted; the runtime resizes for other batch sizes"
    return [inp], [out]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("litert-torch", "ai-edge-litert"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def gate(cov: IntegerCoverage, name: str, min_share: float) -> None:
    """Fail naming the ops that stay float: MAC share below ``min_share``, or any float op at all when 100 % is required."""
    require_integer(cov, name, min_share, strict_kernels=True)


def _record(art: Artifact, g: TfliteGraph, cov: IntegerCoverage) -> None:
    art.coverage = cov
    art.notes["op_histogram"] = g.histogram
    art.notes["transposes"] = g.histogram.get("TRANSPOSE", 0)


def _write(module: nn.Module, contract: IOContract, path: Path, precision: str, options: TfliteOptions, notes: dict,
           strict_qdq: bool = False) -> Artifact:
    """Convert, apply the edge choice, read the graph back; the integer gate is the caller's (the format record's).

    ``strict_qdq`` (float layers): the converter keeps float edges in that mode, so an int8 edge is made afterwards.
    """
    from exporters.tflite.interface import float_interface, int8_interface

    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # inside the staging folder: swept if killed
        raw = Path(tmp) / "raw.tflite"
        seconds = _convert(module, contract, raw, quantized=True, strict_qdq=strict_qdq)
        if strict_qdq and options.io == "int8":
            int8_interface(raw, path)
        elif options.io == "float" and not strict_qdq:
            float_interface(raw, path)
        else:
            os.replace(raw, path)
    g = _read(path)
    ins, outs = _contract(contract, g)
    if options.io == "int8" and (ins[0]["dtype"] != "int8" or outs[0]["dtype"] != "int8"):
        raise ExportError(f"{path.name}: the converter left a {ins[0]['dtype']} input / {outs[0]['dtype']} output, expected int8 edges")
    art = Artifact(path, "tflite", precision, ins, outs, path.stat().st_size)
    _record(art, g, tflite_coverage(g))
    art.notes.update({"io": options.io, "layout": "NHWC", "convert_seconds": round(seconds, 2), **_versions(), **notes})
    return art


def export_int8(spec: DeploymentSpec, path: Path, options: TfliteOptions = TfliteOptions()) -> Artifact:
    """Full-integer .tflite of the deployment spec with its QAT scales."""
    body = to_qdq(spec.graph)
    first = input_quantizer(body)
    # int8 edge where the model starts with its own normalisation: quantize the raw pixels on their 8-bit grid
    pixel_qp = TensorQParams.pixels(spec.contract.pixel_range) if options.io == "int8" and first is None else None
    bits = sorted({m.bits for m in body.modules() if hasattr(m, "qdq_weight")})
    notes = {"mode": QAT_SCALES, "weights": f"int8 per-channel symmetric, learned scales, {'/'.join(map(str, bits))}-bit grid",
             "activations": "int8 per-tensor asymmetric, learned ranges (8-bit inside the range)",
             "input_quantizer": "pixel grid" if pixel_qp else ("first activation quantizer" if first else "float (QUANTIZE op)")}
    if spec.float_layers:
        notes["float_layers_tflite"] = "float CONV_2D/FULLY_CONNECTED between DEQUANTIZE and QUANTIZE (converter in strict q/dq mode)"
    return _write(EdgeModel(body, pixel_qp), spec.contract, path, spec.precision, options, notes, strict_qdq=bool(spec.float_layers))


def export_ptq(model: nn.Module, contract: IOContract, path: Path, images: np.ndarray, options: TfliteOptions = TfliteOptions()) -> Artifact:
    """Fallback: full-integer .tflite of the float model calibrated by litert-torch's PT2E quantizer on ``images``."""
    from exporters.tflite.calibrate import calibrate_pt2e

    body = calibrate_pt2e(model, images)
    first = input_quantizer(body)
    pixel_qp = TensorQParams.pixels(contract.pixel_range) if options.io == "int8" and first is None else None
    notes = {"mode": PTQ_CALIBRATED, "calibration_images": int(len(images)), "weights": "int8 per-channel symmetric, min/max",
             "activations": "int8 per-tensor, histogram observer",
             "input_quantizer": "pixel grid" if pixel_qp else ("calibrated input observer" if first else "float (QUANTIZE op)")}
    return _write(EdgeModel(body, pixel_qp), contract, path, "w8a8", options, notes)


def export_fp32(model: nn.Module, contract: IOContract, path: Path) -> Artifact:
    """FP32 .tflite of the float model (same NHWC edges), for comparisons."""
    path = Path(path)
    seconds = _convert(EdgeModel(model.eval()), contract, path, quantized=False)
    g = _read(path)
    ins, outs = _contract(contract, g)
    art = Artifact(path, "tflite", "fp32", ins, outs, path.stat().st_size)
    art.notes.update({"io": "float", "layout": "NHWC", "op_histogram": g.histogram, "transposes": g.histogram.get("TRANSPOSE", 0),
                      "convert_seconds": round(seconds, 2), **_versions()})
    return art


def check_integer_tflite(artifact: Artifact, min_share: float = 1.0) -> IntegerCoverage:
    """Re-read a written .tflite with the interpreter; record its coverage and op histogram; fail like the ONNX gate."""
    g = _read(artifact.path)
    cov = tflite_coverage(g)
    _record(artifact, g, cov)
    gate_artifact(artifact, cov, min_share, strict_kernels=True)  # as gate(), with the float layers its notes declare
    return cov
