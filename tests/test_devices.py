"""devices/: the bench protocol on real artifacts and runtimes, the devices file, adb and docker with their real clients.

No timing assertions: the protocol runs with a few runs per trial here; the
defaults (≥ 200 runs and 10 s per trial, 3 trials, 5 cold starts) are for real use.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

# a few runs per trial: enough to exercise every step of the protocol, no more
TINY = ["--num_threads", "1", "--num_runs", "5", "--min_secs", "0", "--warmup_runs", "2", "--warmup_min_secs", "0",
        "--trials", "2", "--cold_starts", "1", "--cooldown_secs", "0"]


def make_run(folder: Path) -> dict:
    """A run-like folder: FP32 + int8 QDQ ONNX of a ResNet-20, and its bench/ bundle (inputs, FP and fake-quant outputs)."""
    import torch

    from devices.bundle import write_bundle
    from exporters.onnx import export_fp32, export_qdq
    from pipeline.models import ModelCard, create_model
    from pipeline.quant.calibrate import calibrate
    from pipeline.quant.deploy import deployment_spec, io_contract
    from pipeline.quant.prepare import quantize_model
    from pipeline.quant.scheme import BitScheme

    torch.manual_seed(0)
    model = create_model("resnet20", in_channels=1, num_classes=10, mean=[0.3], std=[0.35]).eval()
    q = quantize_model(model, BitScheme.parse("w8a8"))
    g = torch.Generator().manual_seed(0)
    calibrate(q, [torch.rand(32, 1, 28, 28, generator=g)])
    card = ModelCard("resnet20", (1, 28, 28), 10)
    folder.mkdir(parents=True, exist_ok=True)
    spec = deployment_spec(q, card)
    fp = export_fp32(model, io_contract(card), folder / "model.fp32.onnx")
    art = export_qdq(spec, folder / "model.w8a8.onnx")
    x = torch.rand(16, 1, 28, 28, generator=g)
    with torch.no_grad():
        ref_fp, ref_fq = model(x).numpy(), q(x).numpy()
    lsb = spec.output_scale
    write_bundle(folder / "bench", x.numpy(), {"fp": ref_fp, "fake_quant": ref_fq}, {
        "model.fp32.onnx": {"reference": "fp", "precision": "fp32", "tolerance": {"min_top1_agreement": 0.98}},
        "model.w8a8.onnx": {"reference": "fake_quant", "precision": "w8a8", "tolerance": {"min_top1_agreement": 0.9, "output_scale": lsb}},
    })
    return {"dir": folder, "fp32": fp.path, "int8": art.path, "model": model, "student": q, "x": x, "card": card,
            "artifacts": [fp, art], "inputs": folder / "bench" / "inputs.npy",
            "expected_fp": folder / "bench" / "expected.fp.npy", "expected_fq": folder / "bench" / "expected.fake_quant.npy"}


_RUNS: dict[str, dict] = {}  # one run for every test file that imports the fixture (each import is its own fixture definition)


@pytest.fixture(scope="session")
def device_run(tmp_path_factory) -> dict:
    key = str(tmp_path_factory.getbasetemp())
    if key not in _RUNS:
        _RUNS[key] = make_run(tmp_path_factory.mktemp("device_run") / "run")
    return _RUNS[key]


def run_agent(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devices.agent", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_devices_and_runtimes_import_without_torch_or_tensorflow():
    code = ("import sys, devices, devices.agent, devices.protocol, devices.worker, devices.environment, devices.reference, "
            "devices.bundle, devices.inventory, devices.session, devices.targets.base, devices.targets.local, devices.targets.ssh, "
            "devices.targets.adb, devices.targets.docker, runtimes, runtimes.benchmark; "
            "bad = [m for m in ('torch', 'tensorflow', 'pipeline') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_environment_record_has_what_the_protocol_asks_for():
    from devices import environment

    env = environment.capture()
    for key in ("cpu_model", "cpu_count", "online_cpus", "big_cores", "max_freq_mhz", "governor", "temperatures_c", "throttling",
                "load_average", "versions", "affinity"):
        assert key in env
    assert env["big_cores"] and set(env["big_cores"]) <= set(env["online_cpus"])
    assert "onnxruntime" in env["versions"] and "python" in env["versions"]
    assert environment.parse_cpu_list("0-3,6") == [0, 1, 2, 3, 6]


def test_cpu_mask_parsing():
    from devices.errors import DeviceError
    from devices.protocol import parse_cpu_mask

    assert parse_cpu_mask("1") == (0,)
    assert parse_cpu_mask("0x1") == (0,)
    assert parse_cpu_mask("0-0") == (0,)
    assert parse_cpu_mask("none") is None
    with pytest.raises(DeviceError, match="online cores"):
        parse_cpu_mask("f000")
    with pytest.raises(DeviceError, match="bad cpu mask"):
        parse_cpu_mask("zz")


def test_trial_spread_is_flagged_above_five_percent():
    from runtimes.benchmark import LatencyStats, summarize_trials

    def trial(ms):
        return LatencyStats.from_samples([int(ms * 1e6)] * 5, int(ms * 1e6))

    steady = summarize_trials([trial(1.0), trial(1.02), trial(1.01)])
    assert not steady["unstable"] and steady["p50_ms"] == pytest.approx(1.01)
    shaky = summarize_trials([trial(1.0), trial(1.2)])
    assert shaky["unstable"] and shaky["spread"] == pytest.approx(0.2 / 1.1)


@pytest.mark.parametrize("which", ["int8"])  # the FP32 twin runs through pipeline bench below
def test_agent_runs_the_protocol_and_checks_outputs(device_run, which, tmp_path):
    expected = device_run["expected_fp" if which == "fp32" else "expected_fq"]
    out = tmp_path / "result.json"
    res = run_agent("--graph", str(device_run[which]), *TINY, "--inputs", str(device_run["inputs"]), "--expected", str(expected),
                    "--min_agreement", "0.9", "--json_stats", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    r = json.loads(out.read_text())
    assert r["schema"] == "zsq.bench/1" and r["status"] == "ok"
    assert r["artifact"]["runtime"] == "onnxruntime" and r["artifact"]["size_bytes"] == device_run[which].stat().st_size
    (run,) = r["runs"]
    assert run["threads"] == 1 and run["affinity"]
    assert len(run["trials"]) == 2 and all(len(t["samples_ms"]) >= 5 for t in run["trials"])
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "spread", "unstable"):
        assert key in run["steady"]
    cold = run["cold_start"]["runs"][0]
    assert cold["load_ms"] > 0 and cold["first_ms"] > 0 and cold["rss_peak_kb"] >= cold["rss_init_kb"] > 0
    assert run["rss_peak_kb"] > 0
    assert r["reference"]["top1_agreement"] >= 0.9 and r["reference"]["images"] == 16
    assert "cpu_model" in r["environment"] and "temperatures_c" in r["environment_after"]


def test_agent_catches_a_runtime_that_computes_something_else(device_run, tmp_path):
    """Expected outputs from another computation (classes shifted by one): the device result says mismatch."""
    wrong = tmp_path / "wrong.npy"
    ref = np.load(device_run["expected_fp"])
    np.save(wrong, np.roll(ref, 1, axis=1))
    out = tmp_path / "r.json"
    res = run_agent("--graph", str(device_run["fp32"]), *TINY, "--cold_starts", "0", "--trials", "1", "--inputs", str(device_run["inputs"]),
                    "--expected", str(wrong), "--json_stats", str(out))
    assert res.returncode == 0, res.stderr
    r = json.loads(out.read_text())
    assert r["status"] == "mismatch" and r["reference"]["status"] == "mismatch"
    assert any("differ" in f for f in r["flags"])


def test_agent_on_openvino_ir(device_run, tmp_path):
    from exporters.openvino import export_ir
    from pipeline.models import ModelCard
    from pipeline.quant.deploy import io_contract

    art = export_ir(device_run["int8"], tmp_path / "model.w8a8.xml", "w8a8", io_contract(ModelCard("resnet20", (1, 28, 28), 10)))
    out = tmp_path / "r.json"
    res = run_agent("--graph", str(art.path), *TINY, "--cold_starts", "0", "--trials", "1", "--inputs", str(device_run["inputs"]),
                    "--expected", str(device_run["expected_fq"]), "--min_agreement", "0.9", "--json_stats", str(out))
    assert res.returncode == 0, res.stderr
    r = json.loads(out.read_text())
    assert r["artifact"]["runtime"] == "openvino" and r["artifact"]["files"] == ["model.w8a8.xml", "model.w8a8.bin"]
    assert r["status"] == "ok"


@pytest.mark.parametrize("args, message", [
    (["--graph", "nope.onnx"], "does not exist"),
    (["--graph", "{int8}", "--num_threads", "x"], "bad --num_threads"),
    (["--graph", "{int8}", "--num_runs", "0"], "bad benchmark settings"),
    (["--graph", "{int8}", "--cpu_mask", "f000"], "online cores"),
    (["--graph", "{int8}", "--inputs", "missing.npy", "--expected", "missing.npy"], "does not exist"),
])
def test_agent_bad_input_is_one_line(device_run, args, message):
    res = run_agent(*TINY, *[a.format(int8=device_run["int8"]) for a in args])
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_devices_file(tmp_path):
    from devices import inventory
    from devices.errors import DeviceError

    f = tmp_path / "devices.yaml"
    f.write_text("devices:\n  pi5:\n    url: ssh://pi@10.0.0.5:2222\n    python: /opt/zsq/bin/python\n    cpu_mask: f0\n"
                 "  phone:\n    url: adb://ABC123\n  img:\n    url: docker:zsq-device:latest\n")
    devs = inventory.load(f)
    assert list(devs) == ["local", "pi5", "phone", "img"]
    assert devs["pi5"].scheme == "ssh" and devs["pi5"].default_agent_args() == ["--cpu_mask", "f0"]
    assert inventory.resolve("ssh://u@h", f).url == "ssh://u@h"
    with pytest.raises(DeviceError, match="did you mean 'pi5'"):
        inventory.resolve("pi4", f)
    f.write_text("devices:\n  pi5:\n    url: ssh://pi@h\n    pyhton: /x\n")
    with pytest.raises(DeviceError, match="did you mean 'python'"):
        inventory.load(f)
    with pytest.raises(DeviceError, match="does not exist"):
        inventory.load(tmp_path / "missing.yaml")

    from devices.targets import target_for
    from devices.targets.ssh import SshAddress

    assert SshAddress.parse("ssh://pi@10.0.0.5:2222") == SshAddress("pi", "10.0.0.5", 2222)
    assert SshAddress.parse("ssh://[::1]") == SshAddress(None, "::1", 22)
    with pytest.raises(DeviceError, match="unknown URL scheme"):
        target_for(inventory.DeviceSpec("x", "ftp://h"))


def test_local_target_and_pipeline_bench(device_run, tmp_path):
    """pipeline bench on this host: both artifacts, bundle found beside them, results + latency_raw.csv in the run."""
    from pipeline.cli import main

    rc = main(["bench", "--artifact", str(device_run["fp32"]), "--artifact", str(device_run["int8"]), "--device", "local", *TINY, "--quiet"])
    assert rc == 0
    folder = device_run["dir"] / "bench" / "results" / "local"
    results = {p.name: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert set(results) == {"model.fp32.onnx.json", "model.w8a8.onnx.json"}
    for r in results.values():
        assert r["device"]["name"] == "local" and r["reference"]["status"] == "ok"
        assert r["settings"]["trials"] == 2 and r["settings"]["threads"] == [1]
    assert results["model.w8a8.onnx.json"]["reference_kind"] == "fake_quant"
    rows = (folder / "latency_raw.csv").read_text().splitlines()
    assert rows[0].startswith("device,artifact") and len(rows) > 20


def test_pipeline_devices_commands(capsys, tmp_path):
    from pipeline.cli import main

    f = tmp_path / "devices.yaml"
    f.write_text("devices:\n  nowhere:\n    url: ssh://nobody@127.0.0.1:1\n    connect_timeout: 2\n    retries: 0\n")
    assert main(["devices", "list", "--devices-file", str(f)]) == 0
    assert "nowhere" in capsys.readouterr().out
    assert main(["devices", "check", "--devices-file", str(f)]) == 6  # a device that does not answer
    out = capsys.readouterr().out
    assert "local" in out and "ok" in out and "unreachable" in out
    assert main(["bench", "--artifact", "missing.onnx", "--device", "local"]) == 3  # input, before any device
    assert "does not exist" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def adb_server():
    """The real adb client with its own server on a free port (stopped afterwards)."""
    if shutil.which("adb") is None:
        pytest.skip("adb is not installed (scripts/setup.sh installs Debian's adb)")
    port = str(_free_port())
    old = os.environ.get("ANDROID_ADB_SERVER_PORT")
    os.environ["ANDROID_ADB_SERVER_PORT"] = port
    yield port
    subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)
    if old is None:
        os.environ.pop("ANDROID_ADB_SERVER_PORT", None)
    else:
        os.environ["ANDROID_ADB_SERVER_PORT"] = old


def test_adb_without_a_phone(adb_server, device_run):
    from devices.errors import DeviceError
    from devices.inventory import DeviceSpec
    from devices.session import bench_artifacts
    from devices.targets.adb import AdbTarget, list_devices

    assert list_devices() == []
    with pytest.raises(DeviceError, match=r"no such device attached \(adb devices lists: none\)"):
        AdbTarget(DeviceSpec("phone", "adb://NOPE123")).check()
    with pytest.raises(DeviceError, match="no such device attached"):
        bench_artifacts([device_run["int8"]], DeviceSpec("phone", "adb://NOPE123"), TINY)


BENCHMARK_MODEL_OUTPUT = """\
INFO: STARTING!
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/zsq/model.tflite]
INFO: The input model file size (MB): 0.304
INFO: Initialized session in 3.721ms.
INFO: Running benchmark for at least 10 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=812 first=2210 curr=1190 min=1102 max=2210 avg=1231.5 std=88 p5=1120 median=1201 p95=1402
INFO: Running benchmark for at least 200 iterations and at least 10 seconds but terminate if exceeding 150 seconds.
INFO: count=8120 first=1190 curr=1180 min=1099 max=3120 avg=1.2237e+03 std=92 p5=1118 median=1199 p95=1390
INFO: Inference timings in us: Init: 3721, First inference: 2210, Warmup (avg): 1231.5, Inference (avg): 1223.7
INFO: Memory footprint delta from the start of the tool (MB): init=2.5 overall=6.25
"""


def test_benchmark_model_output_is_parsed_into_the_agent_fields():
    from devices.errors import DeviceError
    from devices.targets.adb import big_core_mask, parse_benchmark_model

    r = parse_benchmark_model(BENCHMARK_MODEL_OUTPUT)
    assert r["init_ms"] == pytest.approx(3.721) and r["first_ms"] == pytest.approx(2.21)
    assert r["n"] == 8120 and r["p50_ms"] == pytest.approx(1.199) and r["mean_ms"] == pytest.approx(1.2237)
    assert r["rss_peak_kb"] == 6400 and r["model_size_mb"] == pytest.approx(0.304)
    with pytest.raises(DeviceError, match="no 'Inference timings' line"):
        parse_benchmark_model("ERROR: Could not open 'x.tflite'.")
    assert big_core_mask({0: 1800000, 1: 1800000, 2: 1800000, 3: 1800000, 4: 2400000, 5: 2400000, 6: 2400000, 7: 3000000}) == ("80", [7])
    assert big_core_mask({i: 2000000 if i >= 4 else 1000000 for i in range(8)}) == ("f0", [4, 5, 6, 7])


def test_docker_target_without_an_engine_says_so(device_run):
    from devices.errors import DeviceError
    from devices.inventory import DeviceSpec
    from devices.targets.docker import DockerTarget

    if shutil.which("docker") is None:
        pytest.skip("no docker CLI on this machine")
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if probe.returncode == 0:
        pytest.skip("a Docker engine runs here: the no-engine error cannot be shown")
    with pytest.raises(DeviceError, match="no Docker engine reachable"):
        DockerTarget(DeviceSpec("img", "docker:zsq-device:latest")).check()


def test_agent_runs_the_accelerator_choice_asked_for_and_records_it(device_run, tmp_path):
    """--runtime_accelerator (docs/accelerators.md): every worker loads the artifact with it; the result says what was asked,
    what the runtime says ran, and the integer coverage as that choice executes it."""
    out = tmp_path / "r.json"
    res = run_agent("--graph", str(device_run["int8"]), *TINY, "--cold_starts", "0", "--trials", "1", "--enable_op_profiling", "false",
                    "--inputs", str(device_run["inputs"]), "--expected", str(device_run["expected_fq"]), "--min_agreement", "0.9",
                    "--runtime_accelerator", "ort:cpu", "--runtime_accelerator", "openvino:AUTO", "--json_stats", str(out))
    assert res.returncode == 0, res.stderr
    r = json.loads(out.read_text())
    assert r["accelerator"] == "onnxruntime:CPUExecutionProvider" and r["status"] == "ok"  # the openvino choice is another runtime's
    assert r["kernels"]["accelerator"] == r["accelerator"] and r["kernels"]["executes_on"] == ["CPUExecutionProvider"]
    assert r["integer_coverage"]["accelerator"] == r["accelerator"] and r["integer_coverage"]["share"] == 1.0
    assert set(r["integer_coverage"]["executed_by"]) == {"CPUExecutionProvider"}


def test_a_device_without_the_accelerator_refuses_it_in_one_line(device_run, tmp_path, capsys):
    """The agent refuses before measuring (exit 2, one line naming what the device has); pipeline bench exits 6 (the device
    answers but cannot run what was asked), and 3 for a word outside the runtime's vocabulary (the user's input)."""
    from pipeline.cli import main
    from runtimes.accelerators import available

    if "CUDAExecutionProvider" in available("onnxruntime"):
        pytest.skip("this host's onnxruntime has CUDA: no provider to refuse")
    out = tmp_path / "r.json"
    res = run_agent("--graph", str(device_run["int8"]), *TINY, "--runtime_accelerator", "onnxruntime:CUDAExecutionProvider",
                    "--json_stats", str(out))
    assert res.returncode == 2 and not out.exists()
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert "'CUDAExecutionProvider' is not available on this host" in line and line.endswith("available: CPUExecutionProvider")
    rc = main(["bench", "--artifact", str(device_run["int8"]), "--device", "local", *TINY, "--out", str(tmp_path / "res"),
               "--runtime-accelerator", "ort:cuda", "--quiet"])
    assert rc == 6 and "available: CPUExecutionProvider" in capsys.readouterr().err
    assert not list((tmp_path / "res").glob("*.json"))
    assert main(["bench", "--artifact", str(device_run["int8"]), "--device", "local", "--runtime-accelerator", "ort:cudaa"]) == 3
    assert "onnxruntime has no execution provider 'cudaa' (did you mean 'cuda'?)" in capsys.readouterr().err
