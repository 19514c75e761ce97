"""One small interface over the integer runtimes: load, describe the I/O contract, run.

Nothing here imports torch or tensorflow: this package runs on devices. Each
backend imports its runtime lazily inside its own module, and the format table
(:mod:`runtimes.formats`) picks the backend, so loading a ``.onnx`` never imports OpenVINO.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from runtimes.formats import UnknownFormat, format_of


class RuntimeUnavailable(RuntimeError):
    """The runtime package for an artifact is not installed on this machine."""


@dataclass(frozen=True)
class TensorSpec:
    """An artifact's edge tensor: what a caller must feed or will get back."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    layout: str = "NCHW"
    scale: float | None = None  # set where the edge itself is integer
    zero_point: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Predictor(Protocol):
    runtime: str
    path: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def runtime_for(path: Path) -> str:
    """The runtime that executes the artifact at ``path`` (``onnxruntime``, ``openvino``, ``litert``), from its suffix."""
    try:
        return format_of(path).runtime
    except UnknownFormat as exc:
        raise ValueError(str(exc)) from None


def load(path: str | Path, threads: int = 1, accelerator: str | None = None, **options: object) -> Predictor:
    """Load an artifact with the runtime its suffix names. ``threads`` sets the intra-op thread count.

    ``accelerator``: what the runtime runs it on, in its own words (``AUTO``, or ``openvino:AUTO``; see
    :mod:`runtimes.accelerators`); None is the runtime's default path. A word outside the runtime's vocabulary is a
    ``ValueError``, one this host cannot run an ``AcceleratorUnavailable`` naming what it can; the predictor records
    what was asked (``accelerator``) and what the runtime says executes (``executes_on``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"artifact {path} does not exist")
    try:
        info = format_of(path)
    except UnknownFormat as exc:
        raise ValueError(str(exc)) from None
    if accelerator is not None:
        from runtimes.accelerators import require

        options["accelerator"] = require(accelerator, info.runtime).name
    return importlib.import_module(info.backend).load(path, threads=threads, **options)


def prepare_feeds(pred: Predictor, x: np.ndarray) -> dict[str, np.ndarray]:
    """The feed dict for a single-input artifact from NCHW float images: layout and integer edge applied.

    ``x`` holds images in NCHW, the pipeline's layout everywhere; an artifact whose
    input spec says NHWC (LiteRT) gets them transposed here, the one place it happens.
    An integer input gets them quantized with its scale and zero point.
    """
    spec = pred.inputs[0]
    if spec.layout == "NHWC" and x.ndim == 4:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if spec.scale is not None:
        info = np.iinfo(np.dtype(spec.dtype))
        x = np.clip(np.round(x / spec.scale) + spec.zero_point, info.min, info.max).astype(spec.dtype)
    return {spec.name: x}


def run_single(pred: Predictor, x: np.ndarray) -> np.ndarray:
    """Run a single-input, single-output artifact on NCHW float images, quantizing/dequantizing at integer edges."""
    y = pred.run(prepare_feeds(pred, x))[pred.outputs[0].name]
    ospec = pred.outputs[0]
    if ospec.scale is not None:
        y = (y.astype(np.float32) - ospec.zero_point) * ospec.scale
    return y


def predict_batched(pred: Predictor, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Outputs for all ``images``; batch 1 where the artifact's batch dimension is fixed at 1."""
    fixed = pred.inputs[0].shape[0]
    bs = 1 if fixed == 1 else batch_size
    return np.concatenate([run_single(pred, images[i : i + bs]) for i in range(0, len(images), bs)])
