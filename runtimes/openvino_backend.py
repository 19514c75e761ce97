"""OpenVINO for ``.xml`` IR artifacts: the CPU plugin, or the device asked for (``accelerator=``: GPU, NPU, AUTO).

The inference precision is always set explicitly: on CPUs with AVX512_BF16/AMX
the CPU plugin's default ``INFERENCE_PRECISION_HINT`` is bf16, so an "FP32" IR
(and the float leftovers of an int8 IR) would silently run in bf16
(docs/conversion.md §4). The hint asked for is kept on the predictor
as ``precision_hint``; what the compiled model reports is ``inference_precision``
(a CPU without bf16 support reports f32 whatever was asked).

The IR keeps the ONNX model's symbolic batch dimension; the CPU plugin runs it
with any batch size, so nothing is reshaped here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.base import RuntimeUnavailable, TensorSpec

DEFAULT_PRECISION_HINT = "f32"
PRECISION_HINTS = ("f32", "bf16", "f16")
_CORE = None


def _ov():
    try:
        import openvino as ov
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeUnavailable("openvino is not installed: pip install openvino") from exc
    return ov


def core():
    """One shared ``ov.Core`` per process (every compile passes its own config)."""
    global _CORE
    if _CORE is None:
        _CORE = _ov().Core()
    return _CORE


def compile_config(threads: int = 1, precision_hint: str = DEFAULT_PRECISION_HINT) -> dict[str, object]:
    if precision_hint not in PRECISION_HINTS:
        raise ValueError(f"precision_hint must be one of {', '.join(PRECISION_HINTS)}, got {precision_hint!r}")
    return {"INFERENCE_NUM_THREADS": int(threads), "INFERENCE_PRECISION_HINT": precision_hint, "PERFORMANCE_HINT": "LATENCY"}


def _spec(port, layout: str) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else ("batch" if i == 0 else "?") for i, d in enumerate(port.get_partial_shape()))
    return TensorSpec(port.get_any_name(), shape, port.get_element_type().to_dtype().name, layout=layout)


def version() -> str:
    return _ov().__version__.split("-")[0]


class OvPredictor:
    runtime = "openvino"

    def __init__(self, path: Path, threads: int = 1, precision_hint: str = DEFAULT_PRECISION_HINT, accelerator: str = "CPU") -> None:
        ov = _ov()
        self.path = Path(path)
        self.threads = threads
        self.precision_hint = precision_hint
        self.accelerator = f"openvino:{accelerator}"  # the device asked for (runtimes/accelerators.py)
        self.compiled = core().compile_model(str(self.path), accelerator, compile_config(threads, precision_hint))
        # what executes: the device(s) the compiled model runs on (AUTO's pick), as OpenVINO reports it
        self.executes_on = list(self.compiled.get_property("EXECUTION_DEVICES"))
        try:
            self.inference_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        except RuntimeError:  # AUTO does not report it (its runtime graph's precisions still say what runs)
            self.inference_precision = None
        self.inputs = [_spec(p, "NCHW") for p in self.compiled.inputs]
        self.outputs = [_spec(p, "NC") for p in self.compiled.outputs]
        self._out_ports = list(self.compiled.outputs)
        self._request = self.compiled.create_infer_request()
        self.version = ov.__version__.split("-")[0]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self._request.infer(feeds)  # copies inputs in and outputs out (share_* default to False)
        return {spec.name: res[port] for spec, port in zip(self.outputs, self._out_ports)}

    def kernels(self) -> dict[str, object]:
        """The CPU plugin's chosen primitive per multiply-accumulate layer (``Convolution:jit_avx2_I8``: AVX2 int8, no VNNI)."""
        counts: dict[str, int] = {}
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            layer = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
            if layer in ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution"):
                key = f"{layer}:{rt['primitiveType'].astype(str) if 'primitiveType' in rt else '?'}"
                counts[key] = counts.get(key, 0) + 1
        return {"reported_by": "openvino runtime model (primitiveType)", "primitives": dict(sorted(counts.items())),
                "accelerator": self.accelerator, "executes_on": self.executes_on}

    def runtime_layers(self) -> list[dict[str, object]]:
        """The compiled (runtime) graph in execution order: layer type, executed precision and shapes of each op."""
        rows = []
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            rows.append({
                "name": op.get_friendly_name(),
                "layer_type": rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name(),
                "precision": rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "",
                "original": rt["originalLayersNames"].astype(str) if "originalLayersNames" in rt else "",
                "inputs": [op.get_input_partial_shape(i) for i in range(op.get_input_size())],
                "outputs": [op.get_output_partial_shape(i) for i in range(op.get_output_size())],
            })
        return rows


def load(path: Path, threads: int = 1, **options: object) -> OvPredictor:
    return OvPredictor(path, threads=threads, **options)  # type: ignore[arg-type]
