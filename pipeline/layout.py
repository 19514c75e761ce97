"""The run folder: every file name a run writes, in one place; stages, the CLI and the report ask here for paths.

::

    runs/x/
      config.json              resolved config ({_type, _version, _data})
      manifest.json            stage keys, input/output hashes, versions
      synthetic/train.npz      the method's pool        (synth)
      synthetic/holdout.npz    held-out checks set      (synth)
      qat/student.pt           the fake-quant model      (qat)
      qat/qat.json             QAT metrics              (qat)
      model.<precision><suffix>  artifacts, e.g. model.w8a8.onnx, model.fp32.xml (+ .bin)   (export)
      export.json              artifact index and model card                           (export)
      check.json               fidelity, accuracy, latency, per-layer SQNR             (check)
      bench/                   reference bundle for devices, bench/results/<device>/   (check, bench)
      report.json, report.html                                                         (report)
      superseded/              artifacts of the previous export the current one did not make   (export)
      checkpoints/<stage>.pt   a long stage's progress, removed when the stage finishes   (synth, qat)
      .lock                    held by the process that writes this run folder
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devices.bundle import BUNDLE_DIR
from runtimes.formats import FormatInfo

ARTIFACT_PREFIX = "model"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def train_set(self) -> Path:
        return self.root / "synthetic" / "train.npz"

    @property
    def holdout_set(self) -> Path:
        return self.root / "synthetic" / "holdout.npz"

    @property
    def student(self) -> Path:
        return self.root / "qat" / "student.pt"

    @property
    def qat_metrics(self) -> Path:
        return self.root / "qat" / "qat.json"

    @property
    def export_index(self) -> Path:
        return self.root / "export.json"

    @property
    def check_result(self) -> Path:
        return self.root / "check.json"

    @property
    def bench(self) -> Path:
        """The reference bundle that travels to devices; device results land in ``bench/results/<device>/``."""
        return self.root / BUNDLE_DIR

    @property
    def bench_results(self) -> Path:
        return self.bench / "results"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    def checkpoint(self, stage: str) -> Path:
        """Where a long stage saves its progress every N steps so a killed run resumes inside the stage."""
        return self.root / "checkpoints" / f"{stage}.pt"

    def clear_checkpoints(self, stage: str) -> None:
        """Remove ``stage``'s progress files (``<stage>.pt`` and its phases' ``<stage>.<phase>.pt``), and the folder once empty."""
        folder = self.checkpoint(stage).parent
        for p in [self.checkpoint(stage), *folder.glob(f"{stage}.*.pt")]:
            p.unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    @property
    def superseded(self) -> Path:
        """Artifacts of the previous export that the current one did not make (other bits or targets)."""
        return self.root / "superseded"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def artifact(self, precision: str, fmt: FormatInfo) -> Path:
        """Where the artifact of ``precision`` in format ``fmt`` goes: ``model.w8a8.onnx``, ``model.fp32.xml``."""
        return self.root / f"{ARTIFACT_PREFIX}.{precision}{fmt.suffix}"

    def is_run(self) -> bool:
        return self.manifest.exists()

    def ensure(self, path: Path) -> Path:
        """``path`` with its folder created."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
