"""What every exporter returns: the file, its precision, its I/O contract and its integer proof."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exporters.errors import ExportError
from runtimes.coverage import IntegerCoverage, name_some, percent

__all__ = ["Artifact", "IntegerCoverage", "gate_artifact", "integer_gate", "require_integer"]

# A float op of the runtime is a declared float layer's when their MACs agree within this fraction: both are counted
# from shapes (torch's for the layer, the runtime's executed graph for the op), so they agree exactly on every runtime
# here; the margin only absorbs a runtime that counts a layer slightly differently, never a second layer.
ISLAND_MAC_TOLERANCE = 0.01
_FIX = "quantize or replace these ops, or lower export.min_integer_coverage to accept them in float"


def integer_gate(cov: IntegerCoverage, artifact_name: str, min_share: float, strict_kernels: bool = False,
                 float_layers: list[dict] | None = None, layer_macs: int | None = None) -> tuple[dict, str | None]:
    """The integer gate's record and, when it fails, why (one line); :func:`require_integer` raises it.

    Without declared float layers: ``min_share`` of the runtime's MACs run in integer (:meth:`IntegerCoverage.shortfall`).
    With them (``float_layers``: ``[{"name", "macs"}]`` from the deployment spec, ``layer_macs``: all conv/linear MACs),
    each declared layer must be one float MAC op of the runtime with its MACs (±:data:`ISLAND_MAC_TOLERANCE`): a
    layer the runtime quantized by itself is no float island and fails. Every other float op is undeclared, and
    ``min_share`` applies to the MACs outside the islands: integer / (integer + undeclared float). With ``strict_kernels``
    at 100 %, any undeclared float kernel fails too, as it does without islands.
    """
    islands = list(float_layers or [])
    record: dict = {"min_integer_coverage": min_share, "measured_share": round(cov.share, 6)}
    if not islands:
        why = cov.shortfall(artifact_name, min_share, strict_kernels)
        record.update(required_share=min_share, passed=why is None)
        return record, None if why is None else f"{why}; {_FIX}"
    ops = list(zip(cov.float_nodes, cov.float_node_macs)) if len(cov.float_node_macs) == len(cov.float_nodes) else \
        [(n, 0) for n in cov.float_nodes]  # a reading without per-op MACs: no op can be matched to a layer
    matched: dict[str, tuple[str, int]] = {}
    for layer in sorted(islands, key=lambda d: -int(d["macs"])):
        close = [op for op in ops if op[1] > 0 and abs(op[1] - int(layer["macs"])) <= ISLAND_MAC_TOLERANCE * int(layer["macs"])]
        if close:
            best = min(close, key=lambda op: abs(op[1] - int(layer["macs"])))
            ops.remove(best)
            matched[layer["name"]] = best
    undeclared = [name for name, _ in ops]
    island_macs = sum(m for _, m in matched.values())
    outside_float = max(cov.float_macs - island_macs, 0)
    outside = cov.int_macs / (cov.int_macs + outside_float) if cov.int_macs + outside_float else 0.0
    declared = sum(int(d["macs"]) for d in islands)
    share = declared / layer_macs if layer_macs else None
    names = ", ".join(d["name"] for d in islands)
    record.update({
        "rule": f"each declared float layer runs as one float op of its MACs (within {ISLAND_MAC_TOLERANCE:.0%}); "
                "min_integer_coverage of the MACs outside them run in integer",
        "float_layers": [{"name": d["name"], "macs": int(d["macs"]), "share": d.get("share"),
                          "runtime_op": matched[d["name"]][0] if d["name"] in matched else None} for d in islands],
        "float_layer_macs": declared, "float_layer_share": None if share is None else round(share, 6),
        "required_share": None if share is None else round(min_share * (1 - share), 6),
        "measured_share_outside_float_layers": round(outside, 6), "undeclared_float_ops": undeclared,
    })
    missing = [d["name"] for d in islands if d["name"] not in matched]
    why = None
    if missing:
        why = (f"{artifact_name}: declared float layer(s) {', '.join(missing)} do not run in float on {cov.runtime} (no float op "
               f"of their MACs in what it executes: it quantized them itself); deploy them with another target, or drop them "
               f"from qat.float_layers")
    elif outside + 1e-12 < min_share or (strict_kernels and min_share >= 1.0 and undeclared):
        why = (f"{artifact_name}: only {percent(outside)} of the MACs outside the declared float layers ({names}) run in integer "
               f"on {cov.runtime} (required {min_share:.0%}); float ops: {name_some(undeclared)}; {_FIX}, or declare them in "
               "qat.float_layers")
    record["passed"] = why is None
    return record, why


def require_integer(cov: IntegerCoverage, artifact_name: str, min_share: float, strict_kernels: bool = False,
                    float_layers: list[dict] | None = None, layer_macs: int | None = None) -> dict:
    """The integer gate every exporter runs: fail naming the ops that stay float when the MAC share is below ``min_share``.

    The share is the runtime's own reading, denied by default: an op the reader does not recognise
    counts as float (:mod:`runtimes.coverage`), so an LSTM or a custom op can never pass unseen. Declared float
    layers change what is required, and say so (:func:`integer_gate`). Returns the gate's record.
    """
    record, why = integer_gate(cov, artifact_name, min_share, strict_kernels, float_layers, layer_macs)
    if why:
        raise ExportError(why)
    return record


def gate_artifact(artifact: "Artifact", cov: IntegerCoverage, min_share: float, strict_kernels: bool = False) -> dict:
    """:func:`require_integer` for ``artifact``, with the float layers its notes declare (``DeploymentSpec.training_notes``);
    the record lands in ``artifact.notes["integer_gate"]`` (export.json) before a failure is raised."""
    record, why = integer_gate(cov, artifact.path.name, min_share, strict_kernels, artifact.notes.get("float_layers"),
                               artifact.notes.get("layer_macs"))
    artifact.notes["integer_gate"] = record
    if why:
        raise ExportError(why)
    return record


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


