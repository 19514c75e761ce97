"""ONNX Runtime: the CPU execution provider, or the one asked for (``accelerator=``, :mod:`runtimes.accelerators`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.base import RuntimeUnavailable, TensorSpec

_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int64)": "int64", "tensor(float16)": "float16"}


def session_options(threads: int = 1, opt_level: str = "all", optimized_path: Path | None = None, profile_prefix: str | None = None):
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeUnavailable("onnxruntime is not installed: pip install onnxruntime") from exc
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    so.log_severity_level = 3
    return so


class OrtPredictor:
    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int = 1, opt_level: str = "all", optimized_path: Path | None = None,
                 profile_prefix: str | None = None, accelerator: str = "CPUExecutionProvider") -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.accelerator = f"onnxruntime:{accelerator}"  # what was asked (runtimes/accelerators.py)
        # how the session was set up, for a second session like it (runtimes/profiling.py's profiled one)
        self.options = {"threads": threads, "opt_level": opt_level}
        self.session = ort.InferenceSession(str(path), session_options(threads, opt_level, optimized_path, profile_prefix),
                                            providers=[accelerator])
        # what executes: ORT falls back to the CPU provider, silently, when the one asked for fails to load
        self.executes_on = self.session.get_providers()
        if accelerator not in self.executes_on:
            from runtimes.accelerators import AcceleratorUnavailable, available

            raise AcceleratorUnavailable(f"onnxruntime execution provider {accelerator!r} did not load for {self.path.name} "
                                         f"(onnxruntime fell back to {', '.join(self.executes_on)}); available: "
                                         f"{', '.join(available('onnxruntime'))}")
        self.inputs = [TensorSpec(i.name, tuple(i.shape), _DTYPES.get(i.type, i.type)) for i in self.session.get_inputs()]
        self.outputs = [TensorSpec(o.name, tuple(o.shape), _DTYPES.get(o.type, o.type), layout="NC") for o in self.session.get_outputs()]
        self.version = ort.__version__

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.outputs]
        return dict(zip(names, self.session.run(names, feeds)))

    def kernels(self) -> dict[str, object]:
        """ONNX Runtime names its execution providers, not the MLAS kernel it dispatches to (that follows the ISA)."""
        return {"reported_by": "onnxruntime execution providers", "providers": self.session.get_providers(),
                "accelerator": self.accelerator, "executes_on": self.executes_on}

    def end_profiling(self) -> str:
        return self.session.end_profiling()


def load(path: Path, threads: int = 1, **options: object) -> OrtPredictor:
    return OrtPredictor(path, threads=threads, **options)  # type: ignore[arg-type]
