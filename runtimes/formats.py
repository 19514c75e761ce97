"""The artifact formats as the device side sees them: file suffix → runtime, and the files one artifact is made of.

This is the torch-free half of a format: what ``runtimes/`` needs to load a file
and what ``devices/`` needs to copy one. The other half, how the format is
*written*, lives in ``exporters/<format>/`` and points at its row here
(``exporters.registry``), so a format's name, suffix and runtime are spelled once.

A new runtime is one backend module, one coverage reader and one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FormatInfo:
    """One artifact format: its name, the runtime that executes it and where the code for that runtime lives."""

    name: str  # the target name users give: onnx | openvino | tflite
    suffix: str  # the artifact's main file, which names it
    runtime: str  # what executes it, as reports name it
    backend: str  # module with ``load(path, threads=..., **options) -> Predictor``
    coverage: str  # module.function reading integer coverage: ``f(path, sample, threads) -> IntegerCoverage``
    companions: tuple[str, ...] = ()  # suffixes of files that travel with the main one (OpenVINO's .bin weights)
    layout: str = "NCHW"  # input layout of the artifacts the exporters write
    # Its x86 int8 kernels multiply u8 activations by s8 weights with VPMADDUBSW, whose int16 pair sums saturate
    # on CPUs without VNNI: full-range 8-bit weights then compute something else (docs/cpu-kinds.md).
    u8s8_kernels: bool = False
    description: str = ""

    def files(self, path: str | Path) -> list[Path]:
        """The files of one artifact of this format: the main file and each companion beside it."""
        path = Path(path)
        return [path, *(path.with_suffix(s) for s in self.companions)]


FORMATS: tuple[FormatInfo, ...] = (
    FormatInfo("onnx", ".onnx", "onnxruntime", "runtimes.onnxruntime_backend", "runtimes.onnxruntime_coverage:onnxruntime_coverage",
               u8s8_kernels=True, description="QDQ ONNX (uint8 activations, int8 per-channel weights) for ONNX Runtime"),
    FormatInfo("openvino", ".xml", "openvino", "runtimes.openvino_backend", "runtimes.openvino_coverage:openvino_coverage",
               companions=(".bin",), u8s8_kernels=True, description="OpenVINO IR: the .xml graph and the .bin weights beside it"),
    FormatInfo("tflite", ".tflite", "litert", "runtimes.litert_backend", "runtimes.litert_coverage:litert_coverage",
               layout="NHWC", description="full-integer LiteRT (TFLite) flatbuffer, NHWC input"),
)
BY_NAME: dict[str, FormatInfo] = {f.name: f for f in FORMATS}
BY_RUNTIME: dict[str, FormatInfo] = {f.runtime: f for f in FORMATS}
BY_SUFFIX: dict[str, FormatInfo] = {f.suffix: f for f in FORMATS}


class UnknownFormat(ValueError):
    """A file whose suffix names no known artifact format."""


def format_of(path: str | Path) -> FormatInfo:
    """The format of the artifact at ``path``, from its suffix."""
    info = BY_SUFFIX.get(Path(path).suffix)
    if info is None:
        raise UnknownFormat(f"no runtime for {Path(path).name!r}: known artifact types are {', '.join(sorted(BY_SUFFIX))}")
    return info


def artifact_files(path: str | Path) -> list[Path]:
    """The files an artifact is made of, those that exist (an OpenVINO ``.xml`` keeps its weights in the ``.bin`` beside it)."""
    path = Path(path)
    info = BY_SUFFIX.get(path.suffix)
    if info is None:
        return [path]
    return [path] + [p for p in info.files(path)[1:] if p.exists()]

