"""What every exporter returns: the file, its precision, its I/O contract and its integer proof."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class IntegerCoverage:
    """Share of multiply-accumulates that execute in integer kernels, read from the runtime itself."""

    runtime: str
    int_macs: int
    float_macs: int
    int_kernels: dict[str, int] = field(default_factory=dict)
    float_kernels: dict[str, int] = field(default_factory=dict)
    float_nodes: list[str] = field(default_factory=list)  # names of MAC ops that stayed float
    other_float_ops: dict[str, int] = field(default_factory=dict)  # float non-MAC ops (elementwise, resize...)

    @property
    def share(self) -> float:
        total = self.int_macs + self.float_macs
        return self.int_macs / total if total else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["share"] = round(self.share, 6)
        return d

    def tally(self, kernel: str, integer: bool, macs: int = 0, node: str | None = None, other: bool = False) -> None:
        """Count one executed op: integer or float kernel (with its MACs), or, with ``other``, a float op outside the gate.

        A float kernel's ``node`` is named in :meth:`require`'s error.
        """
        if other:
            self.other_float_ops[kernel] = self.other_float_ops.get(kernel, 0) + 1
        elif integer:
            self.int_macs += macs
            self.int_kernels[kernel] = self.int_kernels.get(kernel, 0) + 1
        else:
            self.float_macs += macs
            self.float_kernels[kernel] = self.float_kernels.get(kernel, 0) + 1
            if node is not None:
                self.float_nodes.append(node)

    def require(self, artifact_name: str, min_share: float, strict_kernels: bool = False) -> None:
        """The integer gate every exporter runs: fail naming the ops that stay float when the MAC share is below ``min_share``.

        ``strict_kernels``: at a 100 % requirement also fail on any float kernel counted in
        ``float_kernels`` (LiteRT counts float ADD/MEAN/pooling there, not only MAC ops).
        """
        from pipeline.errors import ExportError

        structural = strict_kernels and bool(self.float_kernels) and min_share >= 1.0
        if self.share + 1e-12 < min_share or structural:
            names = ", ".join(self.float_nodes[:8]) + (" ..." if len(self.float_nodes) > 8 else "")
            raise ExportError(
                f"{artifact_name}: only {self.share:.1%} of MACs run in integer on {self.runtime} (required {min_share:.0%}); "
                f"float ops: {names or 'none found'}; quantize these layers or lower export.min_integer_coverage"
            )


@dataclass
class Artifact:
    path: Path
    target: str  # onnx | tflite | openvino
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


