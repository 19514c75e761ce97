"""Faults on the device side: results that cannot be written, malformed or stale results, injection through names and URLs.

Real processes and files throughout: the agent and ``bench_artifacts`` run for real on a
tiny ONNX model (onnxruntime), full and read-only filesystems are real tmpfs mounts in a
private mount namespace (``unshare -m``, root only), the ssh checks run the real OpenSSH
client, and the adb probe runs our adb code against a fake ``adb`` on ``PATH`` that executes
``adb shell`` commands with ``sh -c`` in a sandbox folder (so an injected command really runs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.faults_doc import Fault, by_test

LOST, INJ, LATE = "Data lost or mixed", "Injection", "Errors that arrive too late or as tracebacks"

FAULTS = [
    Fault(LOST, "agent `--json_stats` names a folder", "one-line error before measuring", "test_agent_result_path_is_a_folder",
          "is a folder", 2),
    Fault(LOST, "agent `--json_stats` under a file (`notes.txt/out.json`)", "one-line error before measuring",
          "test_agent_result_path_under_a_file", "is not a folder", 2),
    Fault(LOST, "agent result folder on a read-only filesystem", "one-line error before measuring",
          "test_agent_read_only_result_folder", "cannot write the result", 2),
    Fault(LOST, "disk full when the agent writes its result", "the result JSON on stdout, one line naming where it went",
          "test_agent_full_disk_keeps_the_result", "the result JSON went to stdout", 3),
    Fault(LOST, "`pipeline bench` into a read-only results folder", "one-line error before anything is measured",
          "test_host_read_only_results_folder_fails_before_measuring", "cannot write device results", 3),
    Fault(LOST, "disk full when `pipeline bench` saves a result", "the result kept in a temp file, one line naming it",
          "test_host_full_results_folder_keeps_the_result", "the measurement is kept at", 3),
    Fault(LOST, "malformed result in `bench/results/` (`{\"runs\":[{}]}`, truncated JSON)",
          "report skips it and lists it with the reason (report.json, report.html, summary)",
          "test_malformed_result_is_skipped_and_listed", "not a valid device result"),
    Fault(LOST, "`pipeline bench` beside a truncated result file", "bench succeeds; the truncated file stays out of latency_raw.csv",
          "test_bench_beside_a_truncated_result"),
    Fault(LOST, "planted symlink at a result's `.tmp` name", "not followed; the link's target is untouched",
          "test_planted_tmp_symlink_is_not_followed"),
    Fault(LOST, "device result of an artifact that changed or is no longer exported",
          "listed as stale with the reason, its figures left out of the report", "test_stale_device_result_is_listed_not_folded",
          "is stale"),
    Fault(INJ, "adb `benchmark_model` with `--artifact 'm;cd ..;touch PWNED;.tflite'`",
          "the name reaches the phone quoted; nothing runs", "test_adb_artifact_name_is_quoted"),
    Fault(INJ, "ssh URL with an option-like or empty host/user/port (`ssh://-oProxyCommand=...`)",
          "one-line error before ssh runs", "test_ssh_url_option_like_or_empty_is_rejected", "bad ssh URL"),
    Fault(INJ, "`docker:--privileged`, `adb://-s`", "one-line error before docker/adb runs",
          "test_docker_and_adb_option_like_names_are_rejected", "looks like a command-line option"),
    Fault(LATE, "ssh host name that does not resolve", "one-line error at once, not retried as a dropped connection",
          "test_ssh_unresolvable_host_is_not_retried", "does not resolve"),
    Fault(LATE, "`--bench-args` with an unknown or mistyped flag", "one-line error naming the flag and close matches",
          "test_bench_args_are_validated", "did you mean"),
]
ROW = by_test(FAULTS)

PY = sys.executable


def tiny_onnx(path: Path, seed: int = 0) -> Path:
    """A real float ONNX model (reshape + matmul, 1×1×4×4 → 10) that onnxruntime runs in microseconds."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(seed).standard_normal((16, 10)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 16], dtype=np.int64), "shape")
    g = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])], "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], [w, shape])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def quick() -> list[str]:
    from devices.agent import CHECK_ONLY_ARGS

    return list(CHECK_ONLY_ARGS)


def agent(*args: str, wrap: list[str] | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [*(wrap or []), PY, "-m", "devices.agent", *quick(), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, **(env or {})})


def one_line_error(res: subprocess.CompletedProcess, code: int) -> str:
    assert res.returncode == code, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(err) == 1, res.stderr
    return err[0]


# -- tmpfs mounts in a private mount namespace (gone with the process) -------------------------------------------------

def _can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"], capture_output=True).returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="needs root and unshare -m to mount a tmpfs")


def in_tmpfs(folder: Path, *, read_only: bool = False, full: bool = False) -> list[str]:
    """A command prefix: run the rest with a 4 KiB tmpfs at ``folder`` (read-only, or filled up) seen by it alone."""
    folder.mkdir(parents=True, exist_ok=True)
    fill = 'head -c 4096 /dev/zero > "$0/.filler" 2>/dev/null; ' if full else ""
    opts = "ro,size=4k" if read_only else "size=4k"
    return ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o {opts} tmpfs "$0" || exit 99; {fill}exec "$@"', str(folder)]


# -- the agent's result file ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx")


def test_agent_result_path_is_a_folder(model, tmp_path):
    t0 = time.monotonic()
    res = agent("--graph", str(model), "--json_stats", str(tmp_path))
    err = one_line_error(res, ROW["test_agent_result_path_is_a_folder"].exit_code)
    assert ROW["test_agent_result_path_is_a_folder"].message in err and str(tmp_path) in err
    assert "steady state" not in res.stderr  # failed before measuring
    assert time.monotonic() - t0 < 30


def test_agent_result_path_under_a_file(model, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me\n")
    res = agent("--graph", str(model), "--json_stats", str(tmp_path / "notes.txt" / "out.json"))
    err = one_line_error(res, ROW["test_agent_result_path_under_a_file"].exit_code)
    assert ROW["test_agent_result_path_under_a_file"].message in err
    assert "steady state" not in res.stderr
    assert (tmp_path / "notes.txt").read_text() == "keep me\n"


@needs_mount
def test_agent_read_only_result_folder(model, tmp_path):
    res = agent("--graph", str(model), "--json_stats", str(tmp_path / "ro" / "out.json"), wrap=in_tmpfs(tmp_path / "ro", read_only=True))
    err = one_line_error(res, ROW["test_agent_read_only_result_folder"].exit_code)
    assert ROW["test_agent_read_only_result_folder"].message in err
    assert "steady state" not in res.stderr


@needs_mount
def test_agent_full_disk_keeps_the_result(model, tmp_path):
    res = agent("--graph", str(model), "--json_stats", str(tmp_path / "full" / "out.json"), wrap=in_tmpfs(tmp_path / "full", full=True))
    err = one_line_error(res, ROW["test_agent_full_disk_keeps_the_result"].exit_code)
    assert ROW["test_agent_full_disk_keeps_the_result"].message in err and "out.json" in err
    result = json.loads(res.stdout)  # the whole measurement, not lost
    assert result["schema"] == "zsq.bench/1" and result["runs"][0]["steady"]["p50_ms"] > 0


# -- the host side: bench_artifacts writing into the run ------------------------------------------------------------

def host_bench(model: Path, out: Path, wrap: list[str], tmp: Path) -> subprocess.CompletedProcess:
    """``pipeline bench`` of ``model`` on this host into ``out``, as a user runs it (temp files go to ``tmp``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), "ZSQ_QUIET": "1"}
    cmd = [*wrap, PY, "-m", "pipeline", "bench", "--artifact", str(model), "--out", str(out), "--device", "local", *quick()]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


@needs_mount
def test_host_read_only_results_folder_fails_before_measuring(model, tmp_path):
    res = host_bench(model, tmp_path / "ro" / "results", in_tmpfs(tmp_path / "ro", read_only=True), tmp_path)
    err = one_line_error(res, ROW["test_host_read_only_results_folder_fails_before_measuring"].exit_code)
    assert ROW["test_host_read_only_results_folder_fails_before_measuring"].message in err
    assert "steady state" not in res.stderr


@needs_mount
def test_host_full_results_folder_keeps_the_result(model, tmp_path):
    (tmp_path / "tmp").mkdir()
    res = host_bench(model, tmp_path / "full" / "results", in_tmpfs(tmp_path / "full", full=True), tmp_path / "tmp")
    err = one_line_error(res, ROW["test_host_full_results_folder_keeps_the_result"].exit_code)
    assert ROW["test_host_full_results_folder_keeps_the_result"].message in err
    kept = [p for p in (tmp_path / "tmp").rglob("*.json")]
    assert len(kept) == 1 and str(kept[0]) in err
    result = json.loads(kept[0].read_text())
    assert result["artifact"]["name"] == "tiny.onnx" and result["device"]["name"] == "local" and result["runs"][0]["steady"]["p50_ms"] > 0


# -- reading results back into a report -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def benched_run(tmp_path_factory) -> Path:
    """A run folder with one exported artifact and a real device result of it in bench/results/local/."""
    from devices.inventory import DeviceSpec
    from devices.session import bench_artifacts

    run = tmp_path_factory.mktemp("benched") / "run"
    art = tiny_onnx(run / "model.fp32.onnx")
    (run / "export.json").write_text(json.dumps({"artifacts": [{"path": art.name, "target": "onnx", "precision": "fp32",
                                                                "size_bytes": art.stat().st_size, "inputs": [], "outputs": []}]}))
    (run / "manifest.json").write_text(json.dumps({"stages": {}}))
    (run / "config.json").write_text(json.dumps({"_type": "zsq.RunConfig", "_version": 1, "_data": {}}))
    bench_artifacts([art], DeviceSpec("local", "local"), quick())
    assert (run / "bench" / "results" / "local" / "model.fp32.onnx.json").exists()
    return run


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def test_malformed_result_is_skipped_and_listed(benched_run, tmp_path, capsys):
    from pipeline.cli import main

    run = _copy(benched_run, tmp_path / "run")
    results = run / "bench" / "results"
    (results / "local" / "bare.json").write_text('{"runs": [{}]}')  # the probe from the issue
    good = json.loads((results / "local" / "model.fp32.onnx.json").read_text())
    (results / "local" / "broken.json").write_text(json.dumps({**good, "runs": [{"threads": 1, "cold_start": {}}]}))
    (results / "other").mkdir()
    (results / "other" / "cut.json").write_text('{"schema": "zsq.bench/1", "ru')
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    report = json.loads((run / "report.json").read_text())
    assert [d["artifact"]["name"] for d in report["devices"]] == ["model.fp32.onnx"]
    invalid = {Path(d["result_file"]).name: d["reason"] for d in report["devices_invalid"]}
    assert set(invalid) == {"bare.json", "broken.json", "cut.json"}
    assert "missing 'schema'" in invalid["bare.json"] and "not JSON" in invalid["cut.json"]
    assert invalid["broken.json"] == "result.runs[0]: missing 'steady'"
    msg = ROW["test_malformed_result_is_skipped_and_listed"].message
    assert msg in out and "broken.json" in out and "cut.json" in out
    html = (run / "report.html").read_text()
    assert msg in html and "broken.json" in html and "missing &#x27;steady&#x27;" in html
    from pipeline.reporting.schema import validate

    assert validate(report) == []


@pytest.fixture(scope="module")
def planted_bench(tmp_path_factory) -> dict:
    """``bench_artifacts`` into a results folder holding a truncated result and symlinks planted at its temp names."""
    from devices.errors import DeviceError
    from devices.inventory import DeviceSpec
    from devices.session import bench_artifacts

    base = tmp_path_factory.mktemp("planted")
    art = tiny_onnx(base / "model.w8a8.onnx")
    results = base / "results"
    results.mkdir()
    (results / "old.onnx.json").write_text('{"schema": "zsq.bench/1", "artifact": {"na')  # a writer killed mid-file
    victim = base / "outside.txt"
    victim.write_text("precious\n")
    for name in ("model.w8a8.onnx.json.tmp", "latency_raw.csv.tmp"):
        (results / name).symlink_to(victim)
    try:
        done, error = bench_artifacts([art], DeviceSpec("local", "local"), quick(), results), None
    except (DeviceError, Exception) as exc:  # noqa: BLE001  (the tests below say what went wrong)
        done, error = [], exc
    return {"results": results, "victim": victim, "done": done, "error": error}


def test_bench_beside_a_truncated_result(planted_bench):
    assert planted_bench["error"] is None, repr(planted_bench["error"])
    results = planted_bench["results"]
    assert json.loads((results / "model.w8a8.onnx.json").read_text())["runs"]
    rows = (results / "latency_raw.csv").read_text().splitlines()
    assert len(rows) > 1 and all(",old.onnx," not in r for r in rows) and all(",model.w8a8.onnx," in r for r in rows[1:])


def test_planted_tmp_symlink_is_not_followed(planted_bench):
    assert planted_bench["victim"].read_text() == "precious\n"
    assert planted_bench["error"] is None, repr(planted_bench["error"])


def test_stale_device_result_is_listed_not_folded(benched_run, tmp_path, capsys):
    from pipeline.stages.report import summary, write_outputs

    run = _copy(benched_run, tmp_path / "run")
    results = run / "bench" / "results" / "local"
    # a result of an artifact the current export did not produce (an earlier --bits)
    old = json.loads((results / "model.fp32.onnx.json").read_text())
    old["artifact"]["name"] = "model.w4a8.onnx"
    (results / "model.w4a8.onnx.json").write_text(json.dumps(old))
    tiny_onnx(run / "model.fp32.onnx", seed=1)  # re-exported: same name, other weights
    report = write_outputs(run)
    assert report["devices"] == [] and report["speedups"] == []
    stale = {d["artifact"]: d["reason"] for d in report["devices_stale"]}
    assert set(stale) == {"model.fp32.onnx", "model.w4a8.onnx"}
    assert "changed since it was benched" in stale["model.fp32.onnx"]
    assert "not an artifact of the current export" in stale["model.w4a8.onnx"]
    text = summary(report)
    msg = ROW["test_stale_device_result_is_listed_not_folded"].message
    assert msg in text and "model.w4a8.onnx" in text and "device local: model.fp32.onnx 1T" not in text
    html = (run / "report.html").read_text()
    assert msg in html and "changed since it was benched" in html
    # benched again, the current artifact's result is folded in
    from devices.inventory import DeviceSpec
    from devices.session import bench_artifacts

    bench_artifacts([run / "model.fp32.onnx"], DeviceSpec("local", "local"), quick())
    report = write_outputs(run)
    assert [d["artifact"]["name"] for d in report["devices"]] == ["model.fp32.onnx"]
    assert [d["artifact"] for d in report["devices_stale"]] == ["model.w4a8.onnx"]


# -- injection --------------------------------------------------------------------------------------------------------

FAKE_ADB = r'''#!PYTHON
"""A fake adb: one attached phone; push copies into FAKE_ADB_ROOT; shell runs `sh -c` there (so injected commands really run)."""
import json, os, shutil, subprocess, sys

root, log = os.environ["FAKE_ADB_ROOT"], os.environ["FAKE_ADB_LOG"]
argv = sys.argv[1:]
with open(log, "a") as f:
    f.write(json.dumps(argv) + "\n")
serial = None
if argv[:1] == ["-s"]:
    serial, argv = argv[1], argv[2:]
dev = lambda p: root + p if p.startswith("/") else os.path.join(root, p)
if argv[:1] == ["devices"]:
    print("List of devices attached\nFAKE0001       device product:fake model:Fake_Phone device:fake transport_id:1\n")
elif serial != "FAKE0001":
    print(f"adb: device '{serial}' not found", file=sys.stderr); sys.exit(1)
elif argv[:1] == ["push"]:
    src, dst = argv[1], dev(argv[2])
    if argv[2].endswith("/"):
        dst = os.path.join(dst, os.path.basename(src))
    shutil.copy2(src, dst)
    print(f"{src}: 1 file pushed, 0 skipped.")
elif argv[:1] == ["shell"]:
    cmd = " ".join(argv[1:])
    for folder in ("/data/local/tmp", "/sys/devices/system/cpu"):  # the phone's folders, inside the sandbox
        cmd = cmd.replace(folder, root + folder)
    env = {**os.environ, "PATH": root + "/system/bin:" + os.environ["PATH"]}
    sys.exit(subprocess.run(["sh", "-c", cmd], cwd=root, env=env).returncode)
else:
    print(f"adb: unknown command {argv}", file=sys.stderr); sys.exit(1)
'''

BENCHMARK_MODEL = """#!/bin/sh
# stands in for TFLite's benchmark_model on the phone: checks that --graph names a file here, prints its output format
for a in "$@"; do case "$a" in --graph=*) g="${a#--graph=}";; esac; done
[ -f "$g" ] || { echo "ERROR: Could not open '$g'."; exit 1; }
cat <<'EOF'
INFO: The input model file size (MB): 0.001
INFO: count=5 first=60 curr=50 min=48 max=60 avg=51.2 std=4 p5=48 median=50 p95=60
INFO: Inference timings in us: Init: 900, First inference: 60, Warmup (avg): 55, Inference (avg): 51.2
INFO: Memory footprint delta from the start of the tool (MB): init=1.5 overall=2.0
EOF
"""


@pytest.fixture
def fake_adb(tmp_path, monkeypatch) -> dict:
    root = tmp_path / "phone"
    for d in ("data/local/tmp", "system/bin", "sys/devices/system/cpu/cpu0/cpufreq"):
        (root / d).mkdir(parents=True)
    (root / "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").write_text("2000000\n")  # one core: taskset 1
    (root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").write_text("schedutil\n")
    for name, text in (("getprop", 'echo "fake-$1"\n'), ("dumpsys", 'echo "  level: 90"; echo "  temperature: 300"\n')):
        p = root / "system" / "bin" / name
        p.write_text("#!/bin/sh\n" + text)
        p.chmod(0o755)
    bindir = tmp_path / "hostbin"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(FAKE_ADB.replace("PYTHON", PY))
    adb.chmod(0o755)
    bm = tmp_path / "benchmark_model"
    bm.write_text(BENCHMARK_MODEL)
    bm.chmod(0o755)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    return {"root": root, "log": log, "benchmark_model": bm}


def test_adb_artifact_name_is_quoted(fake_adb, tmp_path):
    from devices.errors import DeviceError
    from devices.inventory import DeviceSpec
    from devices.session import bench_artifacts

    name = "m;cd ..;touch PWNED;.tflite"
    art = tmp_path / "art" / name
    art.parent.mkdir()
    art.write_bytes(b"TFL3 not a real flatbuffer: the stand-in benchmark_model only checks that the file is there")
    spec = DeviceSpec("phone", "adb://FAKE0001", benchmark_model=str(fake_adb["benchmark_model"]))
    error = None
    try:
        done = bench_artifacts([art], spec, ["--num_threads", "1", "--trials", "1", "--cooldown_secs", "0"], tmp_path / "results")
    except DeviceError as exc:
        error = exc
    pwned = list(fake_adb["root"].rglob("PWNED*")) + list(tmp_path.rglob("PWNED*"))
    assert not pwned, f"an injected command ran on the phone: {pwned}"
    assert error is None, str(error)
    ((_, result),) = done
    assert result["artifact"]["name"] == name and result["runs"][0]["steady"]["p50_ms"] == pytest.approx(0.05)
    assert result["runs"][0]["taskset_mask"] == "1" and result["environment"]["governor"] == "schedutil"
    shells = [json.loads(ln) for ln in fake_adb["log"].read_text().splitlines()]
    assert any("'--graph=m;cd ..;touch PWNED;.tflite'" in a[-1] for a in shells if "shell" in a)
    assert not list((fake_adb["root"] / "data" / "local" / "tmp").iterdir())  # the job folder was removed


@pytest.mark.parametrize("url", ["ssh://-oProxyCommand=touch${IFS}PWNED", "ssh://-oProxyCommand=touch${IFS}PWNED@host",
                                 "ssh://", "ssh://user@", "ssh://user@:22", "ssh://host:-1", "ssh://host:99999", "ssh://host:x2",
                                 "ssh://host/path", "ssh://ho st"])
def test_ssh_url_option_like_or_empty_is_rejected(url, tmp_path, monkeypatch):
    from devices import inventory
    from devices.errors import DeviceError
    from devices.targets import target_for

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DeviceError) as exc:
        target_for(inventory.resolve(url))._ssh("true", lambda m: None, 30)  # ssh with the host as an option ran ProxyCommand
    assert not list(tmp_path.iterdir()), "ssh ran a ProxyCommand from the URL"
    assert ROW["test_ssh_url_option_like_or_empty_is_rejected"].message in str(exc.value)
    for good in ("ssh://pi@10.0.0.5:2222", "ssh://[::1]", "ssh://pi@pi5.local/", "ssh://a-b_c@board-1"):
        assert inventory.resolve(good).url == good


@pytest.mark.parametrize("url", ["docker:--privileged", "docker://-v/:/host", "adb://-s", "adb://--help"])
def test_docker_and_adb_option_like_names_are_rejected(url):
    from devices import inventory
    from devices.errors import DeviceError

    with pytest.raises(DeviceError, match=ROW["test_docker_and_adb_option_like_names_are_rejected"].message):
        inventory.resolve(url)


def test_ssh_unresolvable_host_is_not_retried():
    from devices.errors import DeviceError
    from devices.inventory import DeviceSpec
    from devices.targets.ssh import SshTarget

    if shutil.which("ssh") is None:
        pytest.skip("no OpenSSH client")
    logs: list[str] = []
    target = SshTarget(DeviceSpec("nowhere", "ssh://nobody@no-such-host.invalid", retries=3, connect_timeout=5))
    t0 = time.monotonic()
    with pytest.raises(DeviceError) as exc:
        target._ssh("true", logs.append, 30, what="check")
    assert ROW["test_ssh_unresolvable_host_is_not_retried"].message in str(exc.value) and "no-such-host.invalid" in str(exc.value)
    assert not [m for m in logs if "retrying" in m] and time.monotonic() - t0 < 2.0  # a retry would back off 2 s first


def test_bench_args_are_validated():
    from devices.agent import validate_bench_args
    from devices.errors import DeviceError

    assert validate_bench_args(["--num-threads", "1,4", "--full", "--num_runs", "7"]) == ["--num_threads", "1,4", "--num_runs", "7", "--full"]
    assert validate_bench_args([]) == []
    for flags, fragment in ((["--num_run", "5"], "'--num_runs'"), (["--trails", "2"], "'--trials'"),
                            (["--graph", "x.onnx"], "not a bench flag"), (["--num_runs", "x"], "--num_runs"),
                            (["--num_runs", "0"], "num_runs"), (["--num_threads", "one"], "--num_threads"),
                            (["--cpu_mask", "zz"], "cpu mask"), (["--trials", "0"], "trials"), (["stray"], "'stray'")):
        with pytest.raises(DeviceError) as exc:
            validate_bench_args(flags)
        msg = str(exc.value)
        assert fragment in msg and "\n" not in msg, msg
    with pytest.raises(DeviceError, match=ROW["test_bench_args_are_validated"].message):
        validate_bench_args(["--num_run", "5"])
