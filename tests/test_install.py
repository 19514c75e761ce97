"""How zsq-edge installs: the ranges users get, the exact set the tests ran with, and the device side without torch.

* ``scripts/setup.sh --plan [test]`` prints every command setup would run: ``make demo`` installs no system
  package that only the tests need (sshd, adb, chromium, qemu, the Fashion-MNIST files), ``make test`` does.
  The probes are simulated (``SETUP_PROBE=bare``: a machine with nothing), so no apt-get runs here.
* ``pyproject.toml`` gives ranges with an upper bound, never ``==``; ``constraints.txt`` pins every distribution
  of this ``.venv`` that the project needs, at the version installed here, inside those ranges;
  ``requirements-device.txt`` (the Docker image) is the base dependencies at those pins.
* The device install for real: ``pip install -c constraints.txt ".[device]"`` of a copy of the sources into a
  fresh venv, resolved by pip against the same indexes a user's pip reads (the network, about 20 s here); what it
  installed has no torch, tensorflow or exporter, and ``pipeline run`` there is a one-line error that says how to
  install the host side.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement  # onnxruntime requires packaging: on every install of the project
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

# What only the tests use (issue 16: make demo must not install them)
TEST_ONLY_APT = {"openssh-server", "adb", "chromium", "qemu-user-static", "dataset-fashion-mnist"}
# What a device install must not bring: the host's training stack and the exporters
HOST_ONLY = {"torch", "torchvision", "tensorflow", "tensorflow-cpu", "tf-nightly", "onnx", "onnxscript", "litert-torch",
             "torchao", "jax", "transformers"}
DEVICE_SET = {"numpy", "onnxruntime", "ai-edge-litert", "openvino"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(group: str) -> list[Requirement]:
    project = _pyproject()["project"]
    reqs = project["dependencies"] if group == "base" else project["optional-dependencies"][group]
    return [Requirement(r) for r in reqs]


def _pins(path: Path) -> dict[str, str]:
    """name → version of every ``name==version`` line (comments, markers and blank lines dropped)."""
    pins = {}
    for line in path.read_text().splitlines():
        req = line.split("#")[0].split(";")[0].strip()
        if req:
            m = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s=<>!~,]+)", req)
            assert m, f"{path.name}: not a name==version pin: {line!r}"
            name = canonicalize_name(m.group(1))
            assert name not in pins, f"{path.name}: {name} pinned twice"
            pins[name] = m.group(2)
    return pins


def _plan(*args: str, probe: str = "", cwd: Path = ROOT) -> dict[str, list[str]]:
    """``scripts/setup.sh --plan ARGS`` as {kind: [lines]} (kinds: plan, apt, apt-get, venv, pip, arm64, stamp)."""
    script = cwd / "scripts" / "setup.sh"
    assert "--plan" in script.read_text(), "scripts/setup.sh has no --plan mode (it would install for real)"
    env = {**os.environ, "SETUP_PROBE": probe}
    res = subprocess.run(["bash", str(script), "--plan", *args], capture_output=True, text=True,
                         cwd=cwd, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    plan: dict[str, list[str]] = {}
    for line in res.stdout.splitlines():
        kind, _, rest = line.partition(":")
        plan.setdefault(kind, []).append(rest.strip())
    return plan


# ---- make demo / make test: what each installs ---------------------------------------------------------------------


@pytest.mark.parametrize("probe", ["bare", ""])  # a machine with nothing, and this one
def test_demo_installs_no_test_only_system_package(probe):
    plan = _plan(probe=probe)
    apt = set(" ".join(plan["apt"]).split())
    assert not apt & TEST_ONLY_APT, f"make demo would install {sorted(apt & TEST_ONLY_APT)}"
    assert "arm64" not in plan  # the emulated arm64 root is for tests/test_arm64.py only
    installs = " ".join(plan.get("apt-get", []))
    assert not any(pkg in installs.split() for pkg in TEST_ONLY_APT)


def test_test_setup_installs_what_the_tests_need():
    bare = _plan("test", probe="bare")
    assert TEST_ONLY_APT <= set(" ".join(bare["apt"]).split())
    assert any(line.endswith(" ".join(bare["apt"])) and "apt-get install" in line for line in bare["apt-get"])
    assert bare["arm64"]
    full = _plan("test", probe="full")  # everything already there: nothing to install
    assert full["apt"] == [""] and "apt-get" not in full


def test_setup_installs_the_tested_torch_first_then_the_constraints():
    """torch alone at the constraints' pin (a range would make pip fetch the newest CUDA build), then the project."""
    pins = _pins(ROOT / "constraints.txt")
    pip = _plan(probe="bare")["pip"]
    torch_step = next(i for i, line in enumerate(pip) if " torch==" in line)
    project_step = next(i for i, line in enumerate(pip) if "-e .[host,test]" in line)
    assert torch_step < project_step
    assert pip[torch_step].split()[-1] == f"torch=={pins['torch']}"
    assert "-c constraints.txt" in pip[project_step]


def test_the_setup_stamp_follows_the_constraints(tmp_path):
    """A copy of the repository's setup files: up to date once stamped, stale again when constraints.txt changes."""
    (tmp_path / "scripts").mkdir()
    for name in ("pyproject.toml", "constraints.txt", "scripts/setup.sh"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    plan = _plan(probe="full", cwd=tmp_path)
    assert any("-c constraints.txt" in line for line in plan["pip"])  # no stamp yet: it installs
    (tmp_path / ".venv" / ".zsq-installed").write_text(plan["stamp"][0] + "\n")
    assert not any("install" in line for line in _plan(probe="full", cwd=tmp_path)["pip"])  # stamped: up to date
    text = (tmp_path / "constraints.txt").read_text()
    (tmp_path / "constraints.txt").write_text(re.sub(r"(?m)^tqdm==.*$", "tqdm==4.66.0", text))
    changed = _plan(probe="full", cwd=tmp_path)
    assert changed["stamp"] != plan["stamp"] and any("-c constraints.txt" in line for line in changed["pip"])


def test_a_plan_installs_nothing():
    stamp = ROOT / ".venv" / ".zsq-installed"
    before = stamp.read_text() if stamp.exists() else None
    _plan("test", probe="bare")
    assert (stamp.read_text() if stamp.exists() else None) == before


# ---- pyproject ranges, constraints pins, the device requirements ---------------------------------------------------


def test_dependencies_are_ranges_with_an_upper_bound():
    groups = ["base", *_pyproject()["project"]["optional-dependencies"]]
    for group in groups:
        for req in _requirements(group):
            ops = {s.operator for s in req.specifier}
            assert not ops & {"==", "==="}, f"[{group}] {req}: a pin; pins live in constraints.txt"
            assert ops & {"<", "~="}, f"[{group}] {req}: no upper bound (the next untested release)"
            assert ops & {">=", "~=", ">"}, f"[{group}] {req}: no lower bound"


def test_the_base_is_the_device_side_and_host_holds_torch():
    base = {canonicalize_name(r.name) for r in _requirements("base")}
    assert base == DEVICE_SET
    host = {canonicalize_name(r.name) for r in _requirements("host")}
    assert {"torch", "onnx", "onnxscript", "litert-torch", "torchao", "jsonschema"} <= host
    project = _pyproject()
    assert project["project"]["scripts"]["zsq"] == project["project"]["scripts"]["pipeline"] == "pipeline.cli:main"
    assert "report.schema.json" in project["tool"]["setuptools"]["package-data"]["pipeline.reporting"]


def _needed_distributions() -> dict[str, str]:
    """name → installed version of everything the base, host and test requirements pull into this Python."""
    roots = [(r, ()) for group in ("base", "host", "test") for r in _requirements(group)]
    found: dict[str, str] = {}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while roots:
        req, _ = roots.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        key = (name, tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} ({req}) is not installed in {sys.prefix}: run scripts/setup.sh")
        found[name] = dist.version
        for sub in dist.requires or []:
            sreq = Requirement(sub)
            if sreq.marker is None or any(sreq.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                roots.append((Requirement(str(sreq).split(";")[0]), ()))
    return found


def test_constraints_pin_what_this_venv_runs():
    pins = _pins(ROOT / "constraints.txt")
    needed = _needed_distributions()
    assert {"torch", "numpy", "onnxruntime", "jsonschema", "pytest"} <= needed.keys()
    missing = sorted(set(needed) - set(pins))
    assert not missing, f"constraints.txt lacks {missing}: run `make constraints`"
    differ = {n: (pins[n], v) for n, v in needed.items() if Version(pins[n]) != Version(Version(v).public)}
    assert not differ, f"constraints.txt (pin, installed) differ: {differ}; run scripts/setup.sh or `make constraints`"
    assert all("+" not in v for v in pins.values())  # torch==2.13.0 matches the +cpu and the +cuXXX builds


def test_constraints_lie_inside_the_ranges():
    pins = _pins(ROOT / "constraints.txt")
    for group in ("base", "host", "test"):
        for req in _requirements(group):
            name = canonicalize_name(req.name)
            assert name in pins, f"constraints.txt does not pin {name}"
            assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside [{group}] {req}"


def test_device_requirements_are_the_base_at_the_tested_pins():
    device = _pins(ROOT / "requirements-device.txt")
    assert set(device) == {canonicalize_name(r.name) for r in _requirements("base")}
    pins = _pins(ROOT / "constraints.txt")
    assert {n: pins[n] for n in device} == device


# ---- the device install, for real ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def device_install(tmp_path_factory) -> tuple[Path, dict]:
    """(bin folder, pip's install report) of ``pip install -c constraints.txt "SRC[device]"`` in a fresh venv.

    SRC is a copy of what the package is built from, so the build writes nothing into the checkout.
    """
    root = tmp_path_factory.mktemp("device_install")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in ("pipeline", "exporters", "runtimes", "devices"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    report = root / "report.json"
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                          "--disable-pip-version-check", "--report", str(report), "-c", str(ROOT / "constraints.txt"),
                          f"{src}[device]"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return venv / "bin", json.loads(report.read_text())


def test_device_install_pulls_no_torch(device_install):
    bin_dir, report = device_install
    installed = {canonicalize_name(item["metadata"]["name"]) for item in report["install"]}
    assert DEVICE_SET | {"zsq-edge"} <= installed
    assert not installed & HOST_ONLY, f"the device install pulled {sorted(installed & HOST_ONLY)}"
    code = "import importlib.util as u; print([m for m in ('torch', 'tensorflow', 'onnx', 'litert_torch') if u.find_spec(m)])"
    res = subprocess.run([str(bin_dir / "python"), "-c", code], capture_output=True, text=True, timeout=60, cwd=bin_dir)
    assert res.stdout.strip() == "[]", res.stderr


@pytest.mark.parametrize("command", ["pipeline", "zsq"])
def test_pipeline_run_on_a_device_install_says_how_to_get_the_host_side(device_install, command, tmp_path):
    bin_dir, _ = device_install
    res = subprocess.run([str(bin_dir / command), "run", "--out", str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 3 and len(lines) == 1, res.stderr[-2000:]  # 3: the input/config status (docs/cli.md)
    assert lines[0].startswith("error:") and "pip install" in lines[0] and "[host]" in lines[0]
    assert not (tmp_path / "run").exists()


def test_the_installed_package_carries_the_report_schema(device_install):
    """report.json's JSON Schema is package data: an installed (not editable) zsq-edge has it beside its reader."""
    bin_dir, _ = device_install
    code = "import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec('pipeline.reporting').origin).parent)"
    res = subprocess.run([str(bin_dir / "python"), "-c", code], capture_output=True, text=True, timeout=60, cwd=bin_dir)
    folder = Path(res.stdout.strip())
    assert "site-packages" in folder.parts and json.loads((folder / "report.schema.json").read_text())
