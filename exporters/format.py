"""One record per target format: how the export stage drives every format the same way.

A format is a package ``exporters/<format>/`` whose ``__init__`` defines one
:class:`Format` subclass instance, listed in :mod:`exporters.registry`. The export
stage is then a loop: for each requested format, the FP32 twin from the float model
and the integer artifact from the :class:`~exporters.spec.DeploymentSpec`, proven
integer by the format's own gate before it is kept. A format builds everything it
needs itself (OpenVINO converts a private ONNX intermediate), so no format depends on
which other targets were requested.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from exporters.artifact import Artifact, IntegerCoverage
from exporters.errors import ExportError
from exporters.spec import DeploymentSpec, IOContract
from runtimes.atomic import TMP_PREFIX
from runtimes.faults import point
from runtimes.formats import FormatInfo


@dataclass(frozen=True)
class ExportInputs:
    """What the export stage hands every format."""

    float_model: nn.Module  # the FP model, for the FP32 twin (and for formats that calibrate it themselves)
    contract: IOContract
    spec: DeploymentSpec | None  # None: no integer artifact (e.g. the paper profile)
    sample: np.ndarray  # N×C×H×W float32 held-out images: the gate runs the first, calibration may use all
    min_integer_coverage: float = 1.0


@dataclass(frozen=True)
class NoOptions:
    """A format without options of its own."""


class Format:
    """The record of one target format. Subclasses set the class attributes and implement the three methods."""

    info: ClassVar[FormatInfo]  # name, suffix, runtime: the torch-free row in runtimes.formats
    aliases: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions  # a frozen dataclass; config keys export.<format>_<field>

    @property
    def name(self) -> str:
        return self.info.name

    def options(self, settings: dict[str, Any] | None = None) -> Any:
        """This format's typed options from flat settings (``{"tflite_io": "float"}``); unknown fields are ignored."""
        settings = settings or {}
        prefix = self.name.replace("-", "_") + "_"
        given = {f.name: settings[prefix + f.name] for f in dataclasses.fields(self.Options) if prefix + f.name in settings}
        return self.Options(**given)

    def precision(self, spec: DeploymentSpec, options: Any) -> str:
        """The precision the integer artifact will have (its file name says it)."""
        return spec.precision

    def training_notes(self, spec: DeploymentSpec, options: Any, artifact: Artifact) -> dict:
        """What the integer artifact was trained as (its index entry states it); a format that re-quantizes says so here."""
        return spec.training_notes()

    def export_float(self, inputs: ExportInputs, path: Path, options: Any) -> Artifact:
        """The FP32 twin of the float model at ``path`` (for comparisons: accuracy, speed-up)."""
        raise NotImplementedError

    def export_integer(self, inputs: ExportInputs, path: Path, options: Any) -> Artifact:
        """The integer artifact of ``inputs.spec`` at ``path``; the caller runs :meth:`integer_gate` before keeping it."""
        raise NotImplementedError

    def integer_gate(self, artifact: Artifact, sample: np.ndarray, min_share: float, options: Any) -> IntegerCoverage:
        """Measure the artifact's integer coverage on its runtime, record it in ``artifact``, fail below ``min_share``."""
        raise NotImplementedError

    # --- what every format shares ------------------------------------------------------------

    def write_float(self, inputs: ExportInputs, path: Path, options: Any = None) -> Artifact:
        """:meth:`export_float`, written atomically."""
        options = self.options() if options is None else options
        with self._staged(path) as tmp_path:
            art = self.export_float(inputs, tmp_path, options)
        art.path = Path(path)
        return art

    def write_integer(self, inputs: ExportInputs, path: Path, options: Any = None) -> Artifact:
        """:meth:`export_integer` then :meth:`integer_gate`, in a temporary folder: only a file that passes is moved into place."""
        if inputs.spec is None:
            raise ExportError("no deployment spec: integer artifacts need a QAT model of the deploy profile")
        options = self.options() if options is None else options
        with self._staged(path) as tmp_path:
            art = self.export_integer(inputs, tmp_path, options)
            art.notes.update(self.training_notes(inputs.spec, options, art))
            point("export.before_gate")
            self.integer_gate(art, inputs.sample[:1], inputs.min_integer_coverage, options)
        art.path = Path(path)
        return art

    def _check_path(self, path: Path) -> Path:
        path = Path(path)
        if path.suffix != self.info.suffix:
            raise ExportError(f"a {self.name} artifact path must end in {self.info.suffix}, got {path.name!r}")
        if not path.parent.is_dir():
            raise ExportError(f"output folder {path.parent} does not exist")
        return path

    @contextmanager
    def _staged(self, path: Path) -> Iterator[Path]:
        """A path in a temporary folder beside ``path``; on success, the files named after the artifact move into place.

        ``model.w8a8.xml`` brings ``model.w8a8.bin`` and ``model.w8a8.ort_optimized.onnx`` along; anything else
        written there (a private intermediate) is dropped with the folder. The main file moves last: it appearing
        is the commit. On failure nothing is moved, so no half-written artifact is left behind.
        """
        path = self._check_path(path)
        stem = path.name.removesuffix(path.suffix) + "."
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.") as tmp:  # swept if killed
            yield Path(tmp) / path.name
            files = [f for f in Path(tmp).iterdir() if f.is_file() and f.name.startswith(stem)]
            for f in sorted(files, key=lambda f: f.name == path.name):
                os.replace(f, path.parent / f.name)


__all__ = ["ExportInputs", "Format", "NoOptions"]
