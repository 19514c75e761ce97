"""The package boundaries hold, and a new format is one package plus one registry line.

* ``exporters/``, ``runtimes/`` and ``devices/`` never import ``pipeline`` (statically, anywhere in a
  file, lazy imports included; and at run time, importing every format leaves no ``pipeline`` module);
* a throwaway fourth format, written as a package in a temporary folder, is registered with one
  call and the real export stage writes, gates and indexes its artifacts next to ONNX's;
* its gate rejecting an artifact leaves nothing behind.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NEUTRAL = ("exporters", "runtimes", "devices")


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("package", NEUTRAL)
def test_no_pipeline_import_in_exporters_runtimes_devices(package):
    offenders = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for p in sorted((ROOT / package).rglob("*.py"))
                 for line, mod in _imports(p) if mod == "pipeline" or mod.startswith("pipeline.")]
    assert not offenders, "\n".join(offenders)


def test_the_scan_sees_a_lazy_pipeline_import(tmp_path):
    """The check above can fail: an import hidden in a function body is found."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from pipeline.errors import UserError\n    import pipeline.config as c\n")
    assert [m for _, m in _imports(f)] == ["pipeline.errors", "pipeline.config"]


def test_importing_every_format_loads_no_pipeline_module():
    code = ("import sys\nfrom exporters import registry\n"
            "fmts = [registry.get(n) for n in registry.names()]\n"
            "import runtimes, devices.agent, devices.session\n"
            "print(sorted(m for m in sys.modules if m == 'pipeline' or m.startswith('pipeline.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# A throwaway format: integer weights and activation grids as a NumPy archive. Not a product format; it shows
# what a fourth format takes (this package and the register() call below), and uses only the neutral API.
FAKE_FORMAT = '''
"""npz-int: the deployment spec's integers in a .npz, and a gate that checks every weight is on its grid."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.artifact import Artifact, require_integer
from exporters.format import Format
from runtimes.coverage import IntegerCoverage
from runtimes.formats import FormatInfo


class NpzIntFormat(Format):
    info = FormatInfo("npz-int", ".npz", "numpy", backend="none", coverage="none:none")
    aliases = ("npz",)

    def export_float(self, inputs, path, options):
        arrays = {k: v.detach().numpy() for k, v in inputs.float_model.state_dict().items() if v.dtype.is_floating_point}
        np.savez(path, **arrays)
        ins, outs = inputs.contract.edges()
        return Artifact(Path(path), self.name, "fp32", ins, outs, Path(path).stat().st_size)

    def export_integer(self, inputs, path, options):
        spec = inputs.spec
        arrays = {}
        for name, layer in spec.layers().items():
            arrays[f"{name}.values"], arrays[f"{name}.scale"] = layer.grid.values, layer.grid.scale
            arrays[f"{name}.qmax"] = np.array(layer.grid.qmax)
        for name, act in spec.activations().items():
            if act.grid is not None:
                arrays[f"{name}.act"] = np.array([act.grid.scale, act.grid.zero_point, act.grid.bits])
        np.savez(path, **arrays)
        ins, outs = inputs.contract.edges()
        return Artifact(Path(path), self.name, spec.precision, ins, outs, Path(path).stat().st_size)

    def integer_gate(self, artifact, sample, min_share, options):
        data = np.load(artifact.path)
        layers = [k[: -len(".values")] for k in data.files if k.endswith(".values")]
        on_grid = [n for n in layers if data[n + ".values"].dtype == np.int8 and np.abs(data[n + ".values"]).max() <= data[n + ".qmax"]]
        macs = {n: int(data[n + ".values"].size) for n in layers}
        cov = IntegerCoverage("numpy", sum(macs[n] for n in on_grid), sum(macs[n] for n in layers) - sum(macs[n] for n in on_grid),
                              float_nodes=[n for n in layers if n not in on_grid])
        artifact.coverage = cov
        require_integer(cov, artifact.path.name, min_share)
        return cov


FORMAT = NpzIntFormat()
'''


@pytest.fixture()
def fake_format(tmp_path, monkeypatch):
    from exporters import registry

    pkg = tmp_path / "plugins" / "npz_int"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(FAKE_FORMAT))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    import importlib

    fmt = registry.register(importlib.import_module("npz_int").FORMAT)  # the one registry line
    yield fmt
    registry.unregister(fmt.name)
    sys.modules.pop("npz_int", None)


@pytest.fixture()
def export_ctx(tmp_path, bundled):
    """A run folder with a calibrated W4A4 student and a held-out set: what the export stage reads."""
    from pipeline.config import build_config
    from pipeline.quant.calibrate import calibrate
    from pipeline.runner import RunContext
    from pipeline.stages.qat import build_student
    from pipeline.synthesis import SyntheticSet

    def make(targets: str, sets: tuple[str, ...] = ()) -> RunContext:
        run = tmp_path / "run"
        cfg = build_config("default", None, {"out": str(run)}, [f"export.targets={targets}", "qat.bits=w4a4", *sets])
        ctx = RunContext(cfg, run, log=lambda m: None)
        torch.manual_seed(0)
        student = build_student(ctx)
        x = torch.rand(16, *ctx.teacher()[1].input_shape, generator=torch.Generator().manual_seed(0))
        calibrate(student, [x])
        torch.save(student.state_dict(), ctx.layout.ensure(ctx.layout.student))
        SyntheticSet(x.numpy(), np.zeros(16, dtype=np.int64), 1000, "random").save(ctx.layout.ensure(ctx.layout.holdout_set))
        return ctx

    return make


def test_a_fourth_format_is_one_package_and_one_registry_line(fake_format, export_ctx):
    from pipeline.config import build_config
    from pipeline.stages.export import load_artifacts, outputs, run

    assert build_config(sets=["export.targets=npz,onnx"]).export.targets == ["npz-int", "onnx"]  # alias, config, CLI
    ctx = export_ctx("onnx,npz-int")
    run(ctx)
    arts = {a.path.name: a for a in load_artifacts(ctx)}
    assert set(arts) == {"model.fp32.onnx", "model.w4a8.onnx", "model.fp32.npz", "model.w4a8.npz"}
    fake = arts["model.w4a8.npz"]
    assert fake.target == "npz-int" and fake.coverage.share == 1.0 and fake.notes["trained_bits"] == "w4a4"
    data = np.load(fake.path)
    weights = [data[k] for k in data.files if k.endswith(".values")]
    assert weights and all(w.dtype == np.int8 and np.abs(w).max() <= 7 for w in weights)  # the 4-bit grid, from the spec
    # the same spec reached both formats: the ONNX artifact's int8 weights are the archive's, layer by layer
    import onnx
    from onnx import numpy_helper

    onnx_ints = sorted(numpy_helper.to_array(i).tobytes() for i in onnx.load(str(arts["model.w4a8.onnx"].path)).graph.initializer
                       if i.data_type == onnx.TensorProto.INT8 and len(i.dims) in (2, 4))
    assert onnx_ints == sorted(w.tobytes() for w in weights)
    assert {p.name for p in outputs(ctx)} >= set(arts) | {"export.json"}
    assert json.loads(ctx.layout.export_index.read_text())["artifacts"][1]["integer_coverage"]["share"] == 1.0


def test_a_format_whose_gate_fails_leaves_nothing_behind(fake_format, export_ctx, monkeypatch):
    from exporters.errors import ExportError
    from pipeline.stages.export import run

    ctx = export_ctx("npz-int")

    def gate(artifact, sample, min_share, options):
        raise ExportError(f"{artifact.path.name}: rejected by the test gate")

    monkeypatch.setattr(fake_format, "integer_gate", gate)
    with pytest.raises(ExportError, match="model.w4a8.npz: rejected"):
        run(ctx)
    assert not list(ctx.run_dir.glob("model.w4a8*")) and not list(ctx.run_dir.glob(".model.*"))
    assert (ctx.run_dir / "model.fp32.npz").exists()  # the FP32 twin came first and was fine
