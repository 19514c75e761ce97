"""Quality gates and exit statuses: the pure rules table-tested, then the real CLI on one smoke run and on real device benches.

One smoke run (w4a4 after a single QAT step, so the integer artifact really disagrees with FP on real images) is
judged again with other thresholds: the check stage re-judges its measurements instead of redoing them, so each
outcome costs one cached ``pipeline run``. Device mismatches are real: the agent compares the artifact's outputs with
expected outputs that were tampered with in a copy of the reference bundle.

Where each exit status is exercised: 2 test_a_bad_gate_value_is_usage_or_config; 3 test_max_accuracy_drop_without_eval_data_
is_refused_before_the_first_stage, test_bad_input.py, test_faults_run.py; 4 test_bad_input.py::test_op_the_onnx_export_
cannot_quantize..., test_faults_coverage.py, test_faults_config.py; 5 test_missed_gates_exit_5_...; 6 test_faults_run.py::
test_unreachable_device..., test_devices.py::test_pipeline_devices_commands; 7 test_bench_mismatch_exits_7_...,
test_run_device_mismatch_exits_7_...; 130 test_end_to_end.py::test_ctrl_c_leaves_the_run_resumable.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import gates
from pipeline.config import CheckConfig
from tests.test_bad_input import FAST, pipeline
from tests.test_devices import device_run  # noqa: F401  (the session's shared run-like folder with a bench bundle)

# --------------------------------------------------------------------------------------------------- the pure rules

SYNTH = {"holdout": {"images": 64}, "artifacts": {
    "model.fp32.onnx": {"precision": "fp32", "vs_fp": {"top1_agreement": 1.0}},
    "model.w8a8.onnx": {"precision": "w8a8", "vs_fp": {"top1_agreement": 0.97}},
}}
REAL = {"holdout": {"images": 64}, "eval_data": {"source": "real.npz", "images": 200, "fp_accuracy": 0.9}, "artifacts": {
    "model.fp32.onnx": {"precision": "fp32", "vs_fp": {"top1_agreement": 1.0}, "accuracy": 0.9},
    "model.w8a8.onnx": {"precision": "w8a8", "vs_fp": {"top1_agreement": 1.0}, "accuracy": 0.885,
                        "vs_fp_eval_data": {"top1_agreement": 0.99}},
}}


@pytest.mark.parametrize("check, thresholds, expected", [
    (SYNTH, {}, []),
    (SYNTH, {"min_agreement": 0.98}, [("min_agreement", 0.97, False, "held-out synthetic set (64 images)")]),
    (SYNTH, {"min_agreement": 0.97}, [("min_agreement", 0.97, True, "held-out synthetic set")]),  # at the threshold: pass
    (REAL, {"min_agreement": 0.995}, [("min_agreement", 0.99, False, "--eval-data real.npz (200 images)")]),  # real data when given
    (REAL, {"max_accuracy_drop": 0.015}, [("max_accuracy_drop", 0.015, True, "--eval-data real.npz")]),  # 0.9 - 0.885 in floats
    (REAL, {"max_accuracy_drop": 0.01}, [("max_accuracy_drop", 0.015, False, "--eval-data real.npz")]),
    (SYNTH, {"max_accuracy_drop": 0.01}, [("max_accuracy_drop", None, False, "no --eval-data")]),  # the preflight refuses it first
    (REAL, {"min_agreement": 0.98, "max_accuracy_drop": 0.02}, [("min_agreement", 0.99, True, "--eval-data"),
                                                               ("max_accuracy_drop", 0.015, True, "--eval-data")]),
])
def test_evaluate_judges_every_integer_artifact(check, thresholds, expected):
    block = gates.evaluate(check, CheckConfig(**thresholds))
    assert block["configured"] == {g: thresholds.get(g) for g in ("min_agreement", "max_accuracy_drop")}
    got = [(r["gate"], r["value"], r["passed"], r["measured_on"]) for r in block["rules"]]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    assert all(e[3] in g[3] for g, e in zip(got, expected))
    assert {r["artifact"] for r in block["rules"]} <= {"model.w8a8.onnx"}  # the FP32 twin is the reference, never gated
    assert block["passed"] == all(e[2] for e in expected)
    status = gates.statuses(block, list(check["artifacts"]))
    assert status["model.fp32.onnx"] == "not gated"
    assert status["model.w8a8.onnx"] == ("not gated" if not expected else "pass" if block["passed"] else "fail")


def _device(name: str, status: str) -> dict:
    return {"artifact": {"name": name}, "device": {"name": "pi5"}, "status": status}


@pytest.mark.parametrize("check_passed, devices, exit_status, passed", [
    (True, [], 0, True),
    (True, ["ok", "unchecked"], 0, True),  # unchecked: nothing compared, no failure
    (True, ["ok", "mismatch"], 7, False),
    (False, ["mismatch"], 5, False),  # a quality gate wins over a device mismatch
    (False, [], 5, False),
])
def test_report_gates_add_one_rule_per_device_result(check_passed, devices, exit_status, passed):
    check = gates.evaluate(SYNTH, CheckConfig(min_agreement=0.9 if check_passed else 0.99))
    report = {"check": {"gates": check}, "devices": [_device(f"a{i}.onnx", s) for i, s in enumerate(devices)]}
    block = gates.report_gates(report)
    assert block["exit_status"] == exit_status and block["passed"] is passed
    device_rules = [r for r in block["rules"] if r["gate"] == "device"]
    assert [(r["status"], r["passed"]) for r in device_rules] == [(s, s != "mismatch") for s in devices]
    assert len(block["rules"]) == 1 + len(devices)
    assert len(gates.failure_lines(block)) == (not check_passed) + devices.count("mismatch")


def test_report_of_a_check_without_gates_is_not_gated():
    block = gates.report_gates({"check": {"artifacts": {}}, "devices": [_device("m.onnx", "unchecked")]})
    assert block["configured"] == {"min_agreement": None, "max_accuracy_drop": None} and block["exit_status"] == 0


def test_failure_lines_name_the_artifact_value_threshold_key_and_data():
    block = gates.evaluate(REAL, CheckConfig(min_agreement=0.995, max_accuracy_drop=0.01))
    agree, drop = gates.failure_lines(block)
    assert agree == ("quality gate failed: model.w8a8.onnx top-1 agreement with FP 99.0% < 99.5% (check.min_agreement) "
                     "on --eval-data real.npz (200 images)")
    assert "accuracy drop from FP 1.50 points > 1.00 points (check.max_accuracy_drop)" in drop
    (line,) = gates.failure_lines(gates.report_gates({"devices": [_device("m.onnx", "mismatch")]}))
    assert line.startswith("device gate failed: m.onnx on pi5")


def test_exit_statuses_are_the_documented_numbers():
    from devices.errors import DeviceError, HostFileError
    from devices.results import InvalidResult
    from exporters.errors import ExportError
    from pipeline.cli import exits
    from pipeline.errors import ConfigError, ModelLoadError, UserError

    assert (exits.OK, exits.INTERNAL, exits.USAGE, exits.INPUT, exits.EXPORT_GATE, exits.QUALITY_GATE, exits.DEVICE,
            exits.DEVICE_MISMATCH, exits.INTERRUPTED) == (0, 1, 2, 3, 4, 5, 6, 7, 130)
    for exc, status in ((UserError("x"), 3), (ConfigError("x"), 3), (ModelLoadError("x"), 3), (ExportError("x"), 4),
                        (DeviceError("x"), 6), (InvalidResult("x"), 6), (HostFileError("x"), 3),
                        (OSError(errno.ENOSPC, "No space left on device"), 3), (KeyboardInterrupt(), 130)):
        assert exits.status_of(exc)[0] == status, exc
    assert exits.status_of(ValueError("a bug")) is None  # keeps its traceback (exit 1)
    with pytest.raises(ValueError):
        exits.handle(ValueError("a bug"))


@pytest.mark.parametrize("summary, reason", [
    ({"trials": 3, "spread": 0.02, "spread_limit": 0.05, "unstable": False, "cv": 0.1, "p50_ms": 1.0, "max_ms": 3.0}, None),
    ({"trials": 3, "spread": 0.2, "spread_limit": 0.05, "unstable": True, "cv": 0.1, "p50_ms": 1.0, "max_ms": 3.0}, "between 3 trials"),
    ({"trials": 1, "spread": 0.0, "spread_limit": 0.05, "unstable": False, "cv": 0.67, "p50_ms": 0.8, "max_ms": 13.9}, "CV 0.67"),
    ({"trials": 1, "spread": 0.0, "spread_limit": 0.05, "unstable": False, "cv": 0.2, "p50_ms": 0.8, "max_ms": 13.9}, "> 10× p50"),
])
def test_noisy_host_latency_says_why(summary, reason):
    from pipeline.stages.check import noise

    got = noise(summary)
    assert (got is None) if reason is None else (reason in got)


def test_per_class_agreement_counts_the_fp_models_classes():
    from pipeline.stages.check import per_class_agreement

    fp = np.eye(4)[[0, 0, 1, 1, 1, 3]]  # class 2 never predicted by FP
    out = np.eye(4)[[0, 1, 1, 1, 0, 3]]
    got = per_class_agreement(out, fp)
    assert got == {"classes": [0, 1, 2, 3], "images": [2, 3, 0, 1], "agreement": [0.5, pytest.approx(2 / 3), None, 1.0]}


def test_a_result_without_a_reference_is_unchecked():
    from devices.protocol import result_status
    from devices.results import validate

    assert [result_status(c) for c in (None, {"status": "ok"}, {"status": "mismatch"})] == ["unchecked", "ok", "mismatch"]
    result = {"schema": "zsq.bench/1", "device": {"name": "d"}, "artifact": {"name": "m", "runtime": "x", "sha256": "0"},
              "runs": [{"threads": 1, "steady": {"spread": 0.0, "p50_ms": 1.0}, "cold_start": {}}], "flags": [], "status": "unchecked"}
    assert validate(result) == [] and validate({**result, "status": "fine"})


def test_gates_without_what_they_judge_are_config_errors():
    from pipeline.config import build_config
    from pipeline.errors import ConfigError
    from pipeline.preflight import check_config

    with pytest.raises(ConfigError, match="check.max_accuracy_drop compares accuracies on labelled images: give --eval-data"):
        check_config(build_config(cli={"check.max_accuracy_drop": 0.01}))
    with pytest.raises(ConfigError, match="qat.profile=paper makes none"):
        check_config(build_config(cli={"check.min_agreement": 0.9, "qat.profile": "paper"}))
    check_config(build_config(cli={"check.min_agreement": 0.9}))  # the held-out set measures agreement: nothing missing


def test_a_bad_gate_value_is_usage_or_config(tmp_path, capsys):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as exc:  # argparse: not a number
        main(["run", "--min-agreement", "most", "--out", str(tmp_path / "r")])
    assert exc.value.code == 2
    assert main(["run", "--min-agreement", "1.5", "--out", str(tmp_path / "r"), "--dry-run"]) == 3  # out of [0, 1]: config
    assert "check.min_agreement" in capsys.readouterr().err and not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------ the real CLI, one run

W4 = [*FAST, "--bits", "w4a4", "--set", "check.eval_limit=500"]  # one QAT step at 4 bits: real disagreement with FP


@pytest.fixture(scope="module")
def gated(tmp_path_factory, fmnist_npz) -> dict:
    """One smoke run with real eval data and no gate (exit 0): the folder, its check.json, and the args to run it again."""
    out = tmp_path_factory.mktemp("gates") / "run"
    args = [*W4, "--eval-data", str(fmnist_npz), "--out", str(out)]
    res = pipeline("run", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    check = json.loads((out / "check.json").read_text())
    return {"out": out, "args": args, "check": check, "int": next(n for n, e in check["artifacts"].items() if e["precision"] != "fp32")}


def _measurements(check: dict) -> dict:
    return {n: {k: v for k, v in e.items() if k != "status"} for n, e in check["artifacts"].items()}


def test_the_check_records_per_class_agreement_and_no_gate(gated):
    check, name = gated["check"], gated["int"]
    art = check["artifacts"][name]
    assert check["gates"] == {"passed": True, "configured": {"min_agreement": None, "max_accuracy_drop": None}, "rules": []}
    assert {e["status"] for e in check["artifacts"].values()} == {"not gated"}
    pc = art["per_class_agreement"]
    assert pc["classes"] == list(range(10)) and sum(pc["images"]) == check["holdout"]["images"]
    assert 0 < art["vs_fp_eval_data"]["top1_agreement"] < 1  # the precondition of the threshold tests below


def test_missed_gates_exit_5_after_writing_everything_without_measuring_again(gated):
    out, name, before = gated["out"], gated["int"], gated["check"]
    agree = before["artifacts"][name]["vs_fp_eval_data"]["top1_agreement"]
    drop = before["eval_data"]["fp_accuracy"] - before["artifacts"][name]["accuracy"]
    assert drop > 0.002
    report_before = (out / "report.json").stat().st_mtime_ns
    res = pipeline("run", *gated["args"], "--min-agreement", f"{min(1.0, agree + 0.002):.4f}", "--max-accuracy-drop", f"{drop - 0.002:.4f}")
    assert res.returncode == 5, res.stderr[-3000:]
    assert "[check] running" in res.stderr and "nothing re-measured" in res.stderr and "[export] up to date" in res.stderr
    failed = [ln for ln in res.stderr.splitlines() if ln.startswith("quality gate failed: ")]
    assert len(failed) == 2 and all(name in ln for ln in failed), res.stderr[-2000:]
    assert "(check.min_agreement) on --eval-data" in failed[0] and "(check.max_accuracy_drop)" in failed[1]
    assert name in res.stdout  # the summary was printed first
    check = json.loads((out / "check.json").read_text())
    assert _measurements(check) == _measurements(before)  # judged again, not measured again
    assert check["artifacts"][name]["status"] == "fail" and check["gates"]["passed"] is False
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.json").stat().st_mtime_ns > report_before and (out / "report.html").exists()
    assert report["gates"]["exit_status"] == 5 and [r["passed"] for r in report["gates"]["rules"]] == [False, False]
    for rel in ("model.fp32.onnx", name, "export.json", "bench/bundle.json"):
        assert (out / rel).exists(), rel


def test_gates_met_at_their_thresholds_exit_0(gated):
    out, name, before = gated["out"], gated["int"], gated["check"]
    agree = before["artifacts"][name]["vs_fp_eval_data"]["top1_agreement"]
    drop = before["eval_data"]["fp_accuracy"] - before["artifacts"][name]["accuracy"]
    res = pipeline("run", *gated["args"], "--min-agreement", repr(agree), "--max-accuracy-drop", f"{drop + 0.0005:.6f}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "quality gate failed" not in res.stderr
    check = json.loads((out / "check.json").read_text())
    assert check["artifacts"][name]["status"] == "pass" and check["artifacts"]["model.fp32.onnx"]["status"] == "not gated"
    assert json.loads((out / "report.json").read_text())["gates"]["passed"] is True


def test_max_accuracy_drop_without_eval_data_is_refused_before_the_first_stage(tmp_path):
    res = pipeline("run", *W4, "--max-accuracy-drop", "0.01", "--out", str(tmp_path / "run"))
    assert res.returncode == 3, res.stderr[-2000:]
    assert "check.max_accuracy_drop compares accuracies on labelled images: give --eval-data" in res.stderr
    assert "[synth]" not in res.stderr and "Traceback" not in res.stderr


# --------------------------------------------------------------------------------------- device mismatches, for real

QUICK = ["--num_threads", "1", "--cpu_mask", "none", "--cold_starts", "0", "--trials", "1", "--warmup_runs", "1",
         "--warmup_min_secs", "0", "--num_runs", "2", "--min_secs", "0", "--cooldown_secs", "0"]


def _tamper(expected: Path) -> None:
    """Other expected outputs than the host computed (classes shifted by one): what a device computing something else sees."""
    np.save(expected, np.roll(np.load(expected), 1, axis=1))


def test_bench_mismatch_exits_7_after_writing_every_result(device_run, tmp_path, capsys):  # noqa: F811
    from pipeline.cli import main

    run = shutil.copytree(device_run["dir"], tmp_path / "run", ignore=shutil.ignore_patterns("results"))
    _tamper(run / "bench" / "expected.fp.npy")
    rc = main(["bench", "--artifact", str(run / "model.fp32.onnx"), "--artifact", str(run / "model.w8a8.onnx"), "--device", "local",
               *QUICK, "--quiet"])
    assert rc == 7
    err = capsys.readouterr().err
    assert "device gate failed: model.fp32.onnx on local" in err and "model.w8a8.onnx on local" not in err
    results = {p.name: json.loads(p.read_text())["status"] for p in (run / "bench" / "results" / "local").glob("*.json")}
    assert results == {"model.fp32.onnx.json": "mismatch", "model.w8a8.onnx.json": "ok"}  # both written


def test_bench_without_reference_data_is_unchecked_and_exits_0(device_run, tmp_path):  # noqa: F811
    from pipeline.cli import main

    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(device_run["fp32"], lone / "model.fp32.onnx")  # no bench/ bundle beside it: nothing to compare with
    rc = main(["bench", "--artifact", str(lone / "model.fp32.onnx"), "--device", "local", "--out", str(tmp_path / "res"), *QUICK, "--quiet"])
    assert rc == 0
    assert json.loads((tmp_path / "res" / "model.fp32.onnx.json").read_text())["status"] == "unchecked"


def test_run_device_mismatch_exits_7_after_the_report(gated, tmp_path):
    run = shutil.copytree(gated["out"], tmp_path / "run")
    (run / ".lock").unlink(missing_ok=True)
    expected = run / "bench" / "expected.fp.npy"
    _tamper(expected)
    # the check stage stays cached (its record names the file's new digest): only the device sees other expected outputs
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stages"]["check"]["outputs"]["bench/expected.fp.npy"] = hashlib.sha256(expected.read_bytes()).hexdigest()
    (run / "manifest.json").write_text(json.dumps(manifest))
    args = [a if a != str(gated["out"]) else str(run) for a in gated["args"]]
    res = pipeline("run", *args, "--device", "local", "--bench-args=" + " ".join(QUICK))
    assert res.returncode == 7, res.stderr[-3000:]
    assert "device gate failed: model.fp32.onnx on local" in res.stderr and "quality gate failed" not in res.stderr
    report = json.loads((run / "report.json").read_text())
    statuses = {d["artifact"]["name"]: d["status"] for d in report["devices"]}
    assert statuses == {"model.fp32.onnx": "mismatch", gated["int"]: "ok"}
    assert report["gates"]["exit_status"] == 7
