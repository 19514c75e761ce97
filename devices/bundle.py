"""What travels with an artifact: the reference inputs, the expected outputs and the tolerance, as a ``bench/`` folder.

The check stage of a run writes ``<run>/bench/``::

    bench/bundle.json            {"schema": "zsq.bundle/1", "inputs": "inputs.npy", "artifacts": {name: {...}}}
    bench/inputs.npy             held-out synthetic images (never trained on), float32 N×C×H×W
    bench/expected.fp.npy        the FP model's outputs on them
    bench/expected.fake_quant.npy  the fake-quant model's outputs (what an integer artifact must compute)

Each artifact's entry names its reference (``fp`` or ``fake_quant``), the tolerance the
device must meet (``min_top1_agreement``, ``max_abs_diff``, ``output_scale``) and the host's
own agreement for comparison. :func:`job_for` turns an artifact path into a :class:`BenchJob`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from devices.errors import DeviceError
from runtimes.formats import artifact_files
from devices.reference import Tolerance

BUNDLE_DIR = "bench"
BUNDLE = "bundle.json"
SCHEMA = "zsq.bundle/1"


@dataclass
class BenchJob:
    artifact: Path
    inputs: Path | None = None
    expected: Path | None = None
    tolerance: Tolerance = field(default_factory=Tolerance)
    reference: str | None = None  # fp | fake_quant
    run_dir: Path | None = None
    weight_qmax: int | None = None  # largest |integer weight| of an integer artifact (127: full range, 63: overflow-safe)
    integer_share: float | None = None  # share of MACs in integer by design (below 1 with declared float layers)

    @property
    def files(self) -> list[Path]:
        return artifact_files(self.artifact)

    def agent_args(self, rel=lambda p: str(p)) -> list[str]:
        """Agent arguments naming the artifact and the reference files through ``rel`` (a path on the device)."""
        args = ["--graph", rel(self.artifact)]
        if self.inputs and self.expected:
            args += ["--inputs", rel(self.inputs), "--expected", rel(self.expected),
                     "--min_agreement", repr(self.tolerance.min_top1_agreement)]
            if self.tolerance.max_abs_diff is not None:
                args += ["--max_abs_diff", repr(self.tolerance.max_abs_diff)]
            if self.tolerance.output_scale:
                args += ["--output_scale", repr(self.tolerance.output_scale)]
        if self.weight_qmax:
            args += ["--weight_qmax", str(self.weight_qmax)]
        if self.integer_share is not None and self.integer_share < 1.0:
            args += ["--integer_share", repr(self.integer_share)]
        return args


def find_bundle(artifact: Path) -> Path | None:
    for folder in (artifact.parent, *artifact.parents[1:3]):
        p = folder / BUNDLE_DIR / BUNDLE
        if p.exists():
            return p
    return None


def job_for(artifact: str | Path) -> BenchJob:
    """The artifact with its reference files, found in the ``bench/`` folder of its run (none: no accuracy check)."""
    artifact = Path(artifact)
    if not artifact.exists():
        raise DeviceError(f"artifact {artifact} does not exist")
    bundle = find_bundle(artifact.resolve())
    if bundle is None:
        return BenchJob(artifact)
    try:
        data = json.loads(bundle.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DeviceError(f"{bundle}: not a readable bundle ({exc})") from None
    entry = data.get("artifacts", {}).get(artifact.name)
    if entry is None:
        return BenchJob(artifact, run_dir=bundle.parent.parent)
    folder = bundle.parent
    tol = entry.get("tolerance", {})
    return BenchJob(artifact, folder / data["inputs"], folder / data["references"][entry["reference"]],
                    Tolerance(tol.get("min_top1_agreement", Tolerance.min_top1_agreement), tol.get("max_abs_diff"), tol.get("output_scale")),
                    entry["reference"], bundle.parent.parent, entry.get("weight_qmax"),
                    entry.get("integer_share"))


def write_bundle(folder: Path, inputs, references: dict, artifacts: dict) -> Path:
    """Write ``inputs`` and ``references`` (name → array) as .npy and the index, each atomically (:mod:`runtimes.atomic`)."""
    import numpy as np

    from runtimes.atomic import atomic_path, write_json

    folder.mkdir(parents=True, exist_ok=True)

    def save(name: str, arr) -> str:
        with atomic_path(folder / name, suffix=".npy") as tmp:
            np.save(tmp, np.ascontiguousarray(arr))
        return name

    index = {"schema": SCHEMA, "inputs": save("inputs.npy", inputs),
             "references": {k: save(f"expected.{k}.npy", v) for k, v in references.items()}, "artifacts": artifacts}
    write_json(folder / BUNDLE, index, indent=2)
    return folder / BUNDLE


def bundle_files(folder: Path) -> list[Path]:
    p = folder / BUNDLE
    if not p.exists():
        return []
    data = json.loads(p.read_text())
    return [p, folder / data["inputs"], *(folder / v for v in data["references"].values())]
