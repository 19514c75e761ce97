"""What every exporter returns: the file, its precision, its I/O contract and its integer proof."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exporters.errors import ExportError
from runtimes.coverage import IntegerCoverage

__all__ = ["Artifact", "IntegerCoverage", "require_integer"]


def require_integer(cov: IntegerCoverage, artifact_name: str, min_share: float, strict_kernels: bool = False) -> None:
    """The integer gate every exporter runs: fail naming the ops that stay float when the MAC share is below ``min_share``.

    The share is the runtime's own reading, denied by default: an op the reader does not recognise
    counts as float (:mod:`runtimes.coverage`), so an LSTM or a custom op can never pass unseen.
    """
    why = cov.shortfall(artifact_name, min_share, strict_kernels)
    if why:
        raise ExportError(f"{why}; quantize or replace these ops, or lower export.min_integer_coverage to accept them in float")


@dataclass
class Artifact:
    path: Path
    target: str  # a format name from exporters.registry: onnx | openvino | tflite
    precision: str  # fp32 | w8a8 | w4a8 ...
    inputs: list[dict]
    outputs: list[dict]
    size_bytes: int
    coverage: IntegerCoverage | None = None
    notes: dict = field(default_factory=dict)

    def to_dict(self, run_dir: Path | None = None) -> dict:
        return {
            "path": str(self.path.relative_to(run_dir) if run_dir else self.path),
            "target": self.target,
            "precision": self.precision,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "size_bytes": self.size_bytes,
            "integer_coverage": self.coverage.to_dict() if self.coverage else None,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict, run_dir: Path) -> "Artifact":
        cov = d.get("integer_coverage")
        coverage = None
        if cov:
            cov = {k: v for k, v in cov.items() if k != "share"}
            coverage = IntegerCoverage(**cov)
        return cls(run_dir / d["path"], d["target"], d["precision"], d["inputs"], d["outputs"], d["size_bytes"], coverage, d.get("notes", {}))


