"""Integer coverage: the share of multiply-accumulates an artifact executes in integer kernels, read from the runtime itself.

One reader per runtime, each beside its backend (torch-free, so a device measures it too):
:mod:`runtimes.onnxruntime_coverage` (ORT's profiled run), :mod:`runtimes.openvino_coverage`
(the CPU plugin's executed graph) and :mod:`runtimes.litert_coverage` (the interpreter's
tensors). :func:`read_coverage` picks the reader by the artifact's suffix. The exporters'
integer gate (``exporters.artifact.require_integer``) turns a shortfall into an export error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


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

    def shortfall(self, artifact_name: str, min_share: float, strict_kernels: bool = False) -> str | None:
        """Why ``artifact_name`` misses the integer requirement (naming the ops that stay float), or None when it meets it.

        ``strict_kernels``: at a 100 % requirement any float kernel counted in ``float_kernels``
        also fails (LiteRT counts float ADD/MEAN/pooling there, not only MAC ops).
        """
        structural = strict_kernels and bool(self.float_kernels) and min_share >= 1.0
        if self.share + 1e-12 >= min_share and not structural:
            return None
        names = ", ".join(self.float_nodes[:8]) + (" ..." if len(self.float_nodes) > 8 else "")
        return (f"{artifact_name}: only {self.share:.1%} of MACs run in integer on {self.runtime} (required {min_share:.0%}); "
                f"float ops: {names or 'none found'}")


def read_coverage(path: str | Path, sample: np.ndarray, threads: int = 1) -> IntegerCoverage:
    """The integer coverage of the artifact at ``path`` as its runtime executes ``sample`` (one input, the artifact's layout)."""
    import importlib

    from runtimes.formats import format_of

    module, fn = format_of(path).coverage.split(":")
    return getattr(importlib.import_module(module), fn)(Path(path), sample, threads)
