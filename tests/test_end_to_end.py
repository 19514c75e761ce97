"""`pipeline run` on the bundled model through the real CLI: a smoke budget, real Fashion-MNIST images for accuracy.

The pipeline never sees Fashion-MNIST; the check stage reads 2,000 real test images
only through ``--eval-data``, to measure what data-free quantization costs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_bad_input import pipeline

SMOKE = ["--budget", "tiny", "--no-bench"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, fmnist_npz) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("runs") / "smoke"
    res = pipeline("run", *SMOKE, "--eval-data", str(fmnist_npz), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def test_run_writes_every_stage_artifact_and_a_summary(smoke_run):
    out, res = smoke_run
    for rel in ("config.json", "manifest.json", "report.json", "synthetic/train.npz", "synthetic/holdout.npz", "qat/student.pt",
                "model.fp32.onnx", "model.w8a8.onnx", "model.w8a8.ort_optimized.onnx", "check.json"):
        assert (out / rel).exists(), rel  # the ORT-optimized graph (the integer proof) stays beside its artifact
    assert not (out / "superseded").exists(), "a first export set files aside"
    assert not list(out.rglob("*.tmp")), "temporary files left behind"
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"synth", "qat", "export", "check", "report"}
    assert {"torch", "onnxruntime", "numpy"} <= set(manifest["versions"])
    assert manifest["seeds"]["synthesis"] != manifest["seeds"]["holdout"]
    assert "model.w8a8.onnx" in res.stdout and "real acc" in res.stdout  # the end-of-run summary table


def test_int8_onnx_agrees_with_fp_on_held_out_synthetic_and_on_real_images(smoke_run):
    out, _ = smoke_run
    check = json.loads((out / "check.json").read_text())
    int8 = check["artifacts"]["model.w8a8.onnx"]
    assert int8["runtime"] == "onnxruntime"
    assert int8["vs_fp"]["top1_agreement"] >= 0.90
    assert int8["vs_fake_quant"]["top1_agreement"] >= 0.99
    fp_acc = check["eval_data"]["fp_accuracy"]
    assert fp_acc >= 0.90  # the bundled model really is a trained Fashion-MNIST classifier
    assert abs(int8["accuracy"] - fp_acc) <= 0.01, (int8["accuracy"], fp_acc)


def test_report_records_integer_proof_and_input_contract(smoke_run):
    out, _ = smoke_run
    report = json.loads((out / "report.json").read_text())
    arts = {a["path"]: a for a in report["artifacts"]}
    int8 = arts["model.w8a8.onnx"]
    assert int8["integer_coverage"]["share"] == 1.0
    assert int8["integer_coverage"]["int_kernels"]["QLinearConv"] == 21  # every conv of ResNet-20: 19 3×3 + 2 projection shortcuts
    inp = int8["inputs"][0]
    assert inp["shape"][1:] == [1, 28, 28] and inp["layout"] == "NCHW" and inp["dtype"] == "float32"
    assert inp["pixel_range"] == [0.0, 1.0] and inp["normalization"] == "inside the model"
    assert arts["model.w8a8.onnx"]["size_bytes"] < 0.4 * arts["model.fp32.onnx"]["size_bytes"]


def test_onnx_run_trains_the_overflow_safe_grid_and_says_so(smoke_run):
    """qat.overflow_fix=auto with an onnx target: 8-bit weights on ±63, stated in qat.json, export.json, the bundle and the summary;
    the host check records the ISA it ran on and raises no saturation warning (nothing can saturate on ±63)."""
    import onnx
    import onnx.numpy_helper

    out, res = smoke_run
    qat = json.loads((out / "qat" / "qat.json").read_text())
    assert qat["overflow_fix"] == "auto" and qat["overflow_safe"] is True and "±63" in qat["weight_grid"]
    notes = {a["path"]: a["notes"] for a in json.loads((out / "export.json").read_text())["artifacts"]}["model.w8a8.onnx"]
    assert notes["weight_qmax"] == 63 and notes["overflow_safe"] is True
    weights = [onnx.numpy_helper.to_array(i) for i in onnx.load(str(out / "model.w8a8.onnx")).graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and len(i.dims) in (2, 4)]
    assert max(int(abs(w).max()) for w in weights) <= 63
    bundle = json.loads((out / "bench" / "bundle.json").read_text())
    assert bundle["artifacts"]["model.w8a8.onnx"]["weight_qmax"] == 63
    check = json.loads((out / "check.json").read_text())
    assert check["host_isa"]["arch"] and check["warnings"] == []
    assert "weight grid: 8-bit weights on ±63" in res.stdout


def test_check_ranks_each_layer_alone_and_the_report_shows_it(smoke_run, tmp_path):
    """The check measures each layer's isolated sensitivity (check.json, report.json, report.html, the summary). At W8A8
    every layer is already at 8 bits: all are listed, none suggested. The check's key covers the train set it calibrates on."""
    import shutil

    from pipeline.config import build_config
    from pipeline.reporting.schema import validate
    from pipeline.runner import RunContext, Runner
    from pipeline.stages import STAGES

    out, res = smoke_run
    sens = json.loads((out / "check.json").read_text())["sensitivity"]
    assert sens["scheme"] == "w8a8" and "64 images" in sens["measured_on"] and sens["seconds"] > 0 and sens["passes"] == 44
    rows = sens["layers"]
    assert len(rows) == 22 and rows[0]["name"] == "conv1" and rows[-1]["name"] == "fc"
    assert sorted(r["rank"] for r in rows) == list(range(1, 23))
    assert all(r["weight_bits"] == 8 and r["act_bits"] == 8 and r["weights"]["kl"] >= 0 and r["activations"] for r in rows)
    assert sens["suggested_layer_bits"] == {} and sens["suggested_cli"] == ""
    report = json.loads((out / "report.json").read_text())
    assert report["check"]["sensitivity"] == sens and validate(report) == []
    html = (out / "report.html").read_text()
    assert '<h2 id="layers">' in html and "Nothing to suggest" in html
    worst = min(rows, key=lambda r: r["rank"])["name"]
    assert f"worst layers (w8a8, each quantized alone): {worst} (KL" in res.stdout and "nothing to suggest" in res.stdout
    assert "per-layer sensitivity (22 layers, 44 passes over 64 held-out images" in res.stderr
    # the measurement calibrates on the synthetic train set: another train set re-keys the check
    run = tmp_path / "run"
    shutil.copytree(out, run, ignore=shutil.ignore_patterns(".lock"))
    cfg = build_config("tiny", None, {"out": str(run)}, [])
    check = next(s for s in STAGES if s.name == "check")
    before = Runner(STAGES, RunContext(cfg, run, log=print), force=True).key(check)
    (run / "synthetic" / "train.npz").write_bytes(b"another train set")
    assert Runner(STAGES, RunContext(cfg, run, log=print), force=True).key(check) != before


def test_second_run_skips_finished_stages_and_from_redoes(smoke_run, fmnist_npz):
    out, _ = smoke_run
    res = pipeline("run", *SMOKE, "--eval-data", str(fmnist_npz), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    for stage in ("synth", "qat", "export", "check"):
        assert f"[{stage}] up to date, skipped" in res.stderr
    res = pipeline("run", *SMOKE, "--eval-data", str(fmnist_npz), "--out", str(out), "--from", "export")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[qat] up to date, skipped" in res.stderr and "[export] running" in res.stderr


def test_changed_qat_setting_reruns_qat_but_not_synthesis(smoke_run, fmnist_npz, tmp_path):
    out, _ = smoke_run
    res = pipeline("qat", *SMOKE, "--out", str(out), "--set", "qat.steps=3")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[synth] up to date, skipped" in res.stderr and "[qat] running" in res.stderr


def _interruptible() -> None:
    """In the child before exec: SIGINT as a terminal gives it (default action, not blocked). A test run can hand its
    children an ignored or blocked SIGINT (a background job's, or a mask a library left), and a child that inherits
    SIG_IGN rightly keeps it (`nohup`, `cmd &`): that would test the shell, not the pipeline."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def _signal_masks(pid: int) -> str:
    try:
        return ", ".join(line.strip() for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(("SigBlk", "SigIgn", "SigCgt")))
    except OSError as exc:
        return f"no /proc status: {exc}"


def test_ctrl_c_leaves_the_run_resumable(tmp_path):
    out = tmp_path / "interrupted"
    env = {**os.environ, "ZSQ_QUIET": "1", "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    # a short synthesis, and enough QAT steps that the interrupt lands inside the qat stage
    quick = [*SMOKE, "--set", "synthesis.options.iterations=2", "--set", "synthesis.holdout_options.iterations=2", "--set", "qat.steps=100000"]
    cmd = [sys.executable, "-m", "pipeline", "run", *quick, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible)
    manifest = out / "manifest.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and "synth" in json.loads(manifest.read_text())["stages"]:
            break
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        masks = _signal_masks(proc.pid)
        proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's Python stack on stderr, to see where it was
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()  # never leave a 100,000-step run behind on the machine
            _, err = proc.communicate()
        pytest.fail(f"Ctrl-C did not end the run within 120 s ({masks}): {err[-6000:]}")
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "run the same command again to resume" in err
    assert not (out / "qat" / "student.pt").exists()
    res = pipeline("synth", *quick, "--out", str(out))
    assert res.returncode == 0 and "[synth] up to date, skipped" in res.stderr
