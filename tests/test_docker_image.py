"""The device image for real: built here with a Docker engine, no image registry, and used by ``pipeline bench``.

The engine is Debian's docker.io started by ``scripts/docker_engine.sh`` (``scripts/setup.sh test`` starts it
where it runs as root, as CI does); the base is made from Debian packages by ``scripts/docker_base.sh``.
Where no engine can run, every test here is skipped with the reason, never passed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TAG = "zsq-device:test"
MAX_IMAGE_MB = 700  # measured 561 MB with the three runtimes on the Debian-packages base


def _arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip() or "amd64"


def _engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI: scripts/docker_engine.sh installs Debian's docker.io (as root)"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        start = subprocess.run([str(ROOT / "scripts" / "docker_engine.sh")], capture_output=True, text=True, timeout=600)
        if start.returncode != 0:
            return f"no Docker engine could start here: {(start.stderr or start.stdout).strip().splitlines()[-1:]}"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    problem = _engine_problem()
    if problem:
        pytest.skip(problem)
    arch = _arch()
    base = subprocess.run([str(ROOT / "scripts" / "docker_base.sh"), arch], capture_output=True, text=True, timeout=1200)
    assert base.returncode == 0, base.stdout[-2000:] + base.stderr[-2000:]
    build = subprocess.run(["docker", "build", "-q", "--network", "host", "--platform", f"linux/{arch}",
                            "--build-arg", f"BASE_IMAGE=zsq-base:bookworm-{arch}", "-t", TAG, str(ROOT)],
                           capture_output=True, text=True, timeout=1800, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert build.returncode == 0, build.stderr[-3000:]
    return TAG


def test_the_image_is_the_agent_and_the_runtimes_only(image):
    meta = json.loads(subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True, check=True).stdout)[0]
    assert meta["Architecture"] == _arch() and meta["Config"]["User"] == "10001"
    assert meta["Config"]["Entrypoint"] == ["python", "-m", "devices.agent"]
    labels = meta["Config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == "zsq-device" and labels["io.zsq.runtimes"] == "onnxruntime openvino litert"
    assert meta["Size"] / 1e6 < MAX_IMAGE_MB
    code = ("import importlib.util as u; import numpy, onnxruntime, openvino, ai_edge_litert; "
            "print([m for m in ('torch', 'tensorflow', 'pipeline', 'exporters') if u.find_spec(m)])")
    res = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", code],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr[-2000:]


@pytest.fixture(scope="module")
def run_folder(artifacts, tmp_path_factory) -> Path:
    """The safe-grid artifacts of every format in one folder with the reference bundle, as a run has them."""
    from devices.bundle import write_bundle

    folder = tmp_path_factory.mktemp("docker_run")
    entries = {}
    for target in ("onnx", "openvino", "tflite"):
        path, lsb, qmax = artifacts[("safe", target)]
        for f in [path, path.with_suffix(".bin")]:
            if f.exists():
                shutil.copy(f, folder / f.name)
        entries[path.name] = {"reference": "fake_quant", "precision": "w8a8", "weight_qmax": qmax,
                              "tolerance": {"min_top1_agreement": 0.98, "output_scale": lsb}}
    inputs = np.load(artifacts["folder"] / "inputs.npy")
    write_bundle(folder / "bench", inputs, {"fake_quant": np.load(artifacts["folder"] / "expected.safe.npy")}, entries)
    return folder


@pytest.mark.parametrize("target", ["onnx", "openvino", "tflite"])
def test_pipeline_bench_in_the_container_matches_this_host(image, run_folder, target):
    from devices.inventory import DeviceSpec
    from devices.session import bench_artifacts

    art = next(p for p in run_folder.iterdir() if p.suffix == {"onnx": ".onnx", "openvino": ".xml", "tflite": ".tflite"}[target])
    quick = ["--num_threads", "1", "--trials", "1", "--cold_starts", "0", "--num_runs", "10", "--min_secs", "0.1",
             "--warmup_runs", "2", "--warmup_min_secs", "0"]
    results = {}
    for name, url in (("local", "local"), ("docker", f"docker:{image}")):
        ((_, r),) = bench_artifacts([art], DeviceSpec(name, url), quick, run_folder / "results" / name, lambda m: None)
        results[name] = r
    local, docker = results["local"], results["docker"]
    assert docker["status"] == "ok" and local["status"] == "ok"
    assert docker["reference"]["top1_agreement"] == local["reference"]["top1_agreement"]
    assert docker["reference"]["max_abs_diff"] == pytest.approx(local["reference"]["max_abs_diff"], abs=1e-6)
    assert docker["integer_coverage"] == local["integer_coverage"]
    assert docker["artifact"]["sha256"] == local["artifact"]["sha256"]
    assert docker["environment"]["python_executable"] == "/opt/venv/bin/python"  # it ran inside the image


def test_a_result_folder_the_container_cannot_write_fails_before_measuring(image, run_folder, tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root on the host: a folder the container's uid 10001 cannot write")
    job = tmp_path / "job"
    job.mkdir(mode=0o755)
    shutil.copy(next(run_folder.glob("*.onnx")), job / "m.onnx")
    res = subprocess.run(["docker", "run", "--rm", "--init", "--network", "none", "-v", f"{job}:/job", image,
                          "--graph", "m.onnx", "--json_stats", "result.json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "not writable by uid 10001" in res.stderr and "--user" in res.stderr
    assert res.stderr.strip().count("\n") == 0 and not (job / "result.json").exists()
