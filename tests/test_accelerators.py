"""Accelerator choices (issue 17): each runtime's own vocabulary, what this host has, one-line refusals naming what it has,
and every choice this host can run checked on real converted artifacts: parity and integer coverage per choice, stored
in check.json and shown in the report.

One tiny run of the real CLI (OpenVINO and TFLite targets, ``--runtime-accelerator openvino:AUTO --runtime-accelerator
litert:none``) serves every test that needs those artifacts, tests/test_devices.py's ONNX run the ONNX Runtime ones; the
rest read the runtimes themselves. What this host cannot run (a GPU, an NPU,
CUDA) is tested as far as the runtimes go: the refusal and its reason, the CompiledModel path with LiteRT's CPU
accelerator standing in for its GPU, and the coverage reader's verdict for a choice that computes in float.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_bad_input import FAST, assert_one_line_error, pipeline
from tests.test_devices import device_run  # noqa: F401  (the session's ONNX run: int8 + FP32, inputs and references)

CHOICES = ["--runtime-accelerator", "openvino:AUTO", "--runtime-accelerator", "litert:none"]


@pytest.fixture(scope="module")
def acc_run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("accelerators") / "run"
    res = pipeline("run", *FAST, "--target", "openvino,tflite", *CHOICES, "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res.stdout


def _artifact(run: Path, suffix: str) -> tuple[Path, float]:
    """The run's integer artifact of ``suffix`` and its output LSB (export.json)."""
    arts = json.loads((run / "export.json").read_text())["artifacts"]
    art = next(a for a in arts if a["path"].endswith(suffix) and a["precision"] != "fp32")
    return run / art["path"], art["notes"]["output_scale"]


# ---- vocabulary and parsing --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, canonical", [
    ("openvino:AUTO", "openvino:AUTO"), ("ov:auto", "openvino:AUTO"), ("openvino:GPU.1", "openvino:GPU.1"),
    ("tflite:NONE", "litert:none"), ("litert:xnnpack", "litert:xnnpack"), ("litert:gpu", "litert:gpu"),
    ("ort:cpu", "onnxruntime:CPUExecutionProvider"), ("onnx:CUDAExecutionProvider", "onnxruntime:CUDAExecutionProvider"),
])
def test_a_choice_is_parsed_into_its_runtimes_own_spelling(text, canonical):
    from runtimes.accelerators import parse

    assert str(parse(text)) == canonical


@pytest.mark.parametrize("text, fragments", [
    ("openvino", ["must be RUNTIME:CHOICE", "openvino:AUTO"]),
    (":AUTO", ["must be RUNTIME:CHOICE"]),
    ("openvino:", ["must be RUNTIME:CHOICE"]),
    ("onnxrt:cpu", ["unknown runtime 'onnxrt'", "did you mean 'onnx'", "onnxruntime (onnx, ort)"]),
    ("openvino:GPX", ["openvino has no device 'GPX'", "did you mean 'GPU'", "CPU, GPU, NPU, AUTO"]),
    ("litert:xnnpak", ["litert has no delegate 'xnnpak'", "did you mean 'xnnpack'"]),
    ("ort:cudaa", ["onnxruntime has no execution provider 'cudaa'", "CPUExecutionProvider"]),
])
def test_a_word_outside_the_vocabulary_is_one_line_with_the_closest(text, fragments):
    from runtimes.accelerators import UnknownAccelerator, parse

    with pytest.raises(UnknownAccelerator) as exc:
        parse(text)
    assert "\n" not in str(exc.value) and isinstance(exc.value, ValueError)
    for f in fragments:
        assert f in str(exc.value), str(exc.value)


def test_vocabulary_and_available_choices_are_read_from_the_runtimes():
    import onnxruntime as ort

    from runtimes.accelerators import DEFAULTS, available, describe, openvino_devices, vocabulary
    from runtimes.openvino_backend import core

    assert vocabulary("ort") == ort.get_all_providers()
    ort_here = available("onnxruntime")
    assert set(ort_here) == set(ort.get_available_providers()) - {"AzureExecutionProvider"}  # remote: no local kernel
    assert ort_here[0] == "CPUExecutionProvider"
    assert set(openvino_devices()) == set(core().available_devices)
    ov_here = available("openvino")
    assert ov_here[0] == "CPU" and "AUTO" in ov_here and set(core().available_devices) <= set(ov_here)
    assert available("litert")[:2] == ["xnnpack", "none"]
    for rt, d in describe().items():
        assert d["default"] == DEFAULTS[rt] and d["available"][0] == DEFAULTS[rt] and set(d["available"]) <= set(d["vocabulary"])
    from tests.conftest import run_without_torch

    # what a device runs: vocabulary, availability (LiteRT's probes included) and a refusal, without torch or tensorflow
    out = run_without_torch("from runtimes import accelerators as a\nprint(a.describe()['openvino']['available'])\n"
                            "try:\n    a.require('litert:nnapi')\nexcept a.AcceleratorUnavailable as e:\n    print(e)")
    assert str(ov_here) in out and "litert delegate 'nnapi' is not available on this host" in out


def test_a_choice_this_host_lacks_is_refused_naming_what_it_has():
    """openvino:GPU/NPU, CUDA, litert:gpu and nnapi where absent; Azure always (it runs nothing here)."""
    from runtimes.accelerators import AcceleratorUnavailable, available, parse, require

    checked = 0
    for text in ("openvino:GPU", "openvino:NPU", "onnxruntime:CUDAExecutionProvider", "onnxruntime:AzureExecutionProvider",
                 "litert:gpu", "litert:npu", "litert:nnapi"):
        choice = parse(text)
        if choice.name in available(choice.runtime):
            continue  # this host has it: the test that it runs is below
        with pytest.raises(AcceleratorUnavailable) as exc:
            require(text)
        msg = str(exc.value)
        assert "\n" not in msg and msg.startswith(f"{choice.label} is not available on this host (")
        assert msg.endswith(f"; available: {', '.join(available(choice.runtime))}"), msg
        checked += 1
    assert checked >= 2  # Azure and nnapi are never available on a Linux host
    with pytest.raises(AcceleratorUnavailable, match="sends inference requests to an Azure endpoint"):
        require("ort:azure")


# ---- every available choice on a real artifact ----------------------------------------------------------------------

def test_every_available_choice_runs_a_real_artifact_with_coverage_and_parity(acc_run, device_run):  # noqa: F811
    """ORT's CPU provider, OpenVINO's CPU and AUTO, LiteRT's XNNPACK and built-in kernels (and whatever else this host has).

    Parity is in output steps against the fake-quant model (top-1 can flip on a near-tie of an 8-image, 1-step run)."""
    import runtimes
    from devices.reference import metrics
    from runtimes import accelerators

    run, _ = acc_run
    from devices.bundle import BUNDLE

    bundle = json.loads((device_run["dir"] / "bench" / BUNDLE).read_text())
    lsb = bundle["artifacts"][device_run["int8"].name]["tolerance"]["output_scale"]
    # (artifact, runtime, output LSB, inputs, fake-quant outputs, most LSBs from them): that run's ONNX has full-range
    # weights, which drift on a CPU without VNNI (docs/cpu-kinds.md), so its parity is judged against its default path only
    cases = [(device_run["int8"], "onnxruntime", lsb, device_run["inputs"], device_run["expected_fq"], None)]
    for suffix, runtime in ((".xml", "openvino"), (".tflite", "litert")):
        path, lsb = _artifact(run, suffix)
        cases.append((path, runtime, lsb, run / "bench" / "inputs.npy", run / "bench" / "expected.fake_quant.npy", 3))
    seen = []
    for path, runtime, lsb, inputs, expected, most in cases:
        x = np.load(inputs)
        default = runtimes.predict_batched(runtimes.load(path), x)
        for name in accelerators.available(runtime):
            key = f"{runtime}:{name}"
            pred = runtimes.load(path, accelerator=key)
            assert pred.accelerator == key and pred.executes_on, key
            out = runtimes.predict_batched(pred, x)
            m, d = metrics(out, np.load(expected), lsb), metrics(out, default, lsb)
            assert m["top1_agreement"] >= 0.75 and (most is None or m["max_abs_diff_lsb"] <= most), (key, m)
            assert d["max_abs_diff_lsb"] <= 2, (key, d)  # the same integer model on other kernels: a step or two at most
            sample = next(iter(runtimes.prepare_feeds(pred, x[:1]).values()))
            cov = accelerators.coverage(path, sample, 1, key)
            assert cov["accelerator"] == key and cov["share"] == 1.0, (key, cov)
            seen.append((key, pred.executes_on, cov))
    got = {k: (on, cov) for k, on, cov in seen}
    assert {"onnxruntime:CPUExecutionProvider", "openvino:CPU", "openvino:AUTO", "litert:xnnpack", "litert:none"} <= set(got)
    assert got["onnxruntime:CPUExecutionProvider"][1]["executed_by"].keys() == {"CPUExecutionProvider"}
    assert set(got["openvino:AUTO"][0]) <= set(accelerators.openvino_devices())  # what AUTO picked, as OpenVINO says
    assert got["openvino:AUTO"][1]["executes_on"] == got["openvino:AUTO"][0]
    xnn, builtin = got["litert:xnnpack"][1], got["litert:none"][1]
    assert xnn["partitions"] >= 1 and xnn["ops_delegated"] > 0  # what the reader sees when the delegate takes the graph
    assert builtin["ops_delegated"] == 0 and builtin["ops_builtin"] == xnn["ops_delegated"] + xnn["ops_builtin"]
    assert got["litert:none"][0] == ["built-in kernels"] and got["litert:xnnpack"][0][0].startswith("XNNPACK delegate")


def test_unavailable_choice_refused_at_load_and_default_unchanged(acc_run):
    import runtimes
    from runtimes.accelerators import AcceleratorUnavailable, UnknownAccelerator, available

    run, _ = acc_run
    xml, _ = _artifact(run, ".xml")
    missing = next((d for d in ("GPU", "NPU") if d not in available("openvino")), None)
    if missing is None:
        pytest.skip("this host has both an OpenVINO GPU and NPU: no device to refuse")
    with pytest.raises(AcceleratorUnavailable, match=f"openvino device '{missing}' is not available on this host"):
        runtimes.load(xml, accelerator=missing)
    with pytest.raises(UnknownAccelerator, match="is a choice for litert"):
        runtimes.load(xml, accelerator="litert:none")
    assert runtimes.load(xml).accelerator == "openvino:CPU"  # no choice: the default path, as before


def test_litert_compiled_model_path_agrees_with_the_interpreter(acc_run):
    """litert:gpu/npu go through LiteRT's CompiledModel; without a GPU here its CPU accelerator runs the same code path."""
    import runtimes
    from runtimes.litert_compiled import CompiledPredictor

    run, _ = acc_run
    path, lsb = _artifact(run, ".tflite")
    x = np.load(run / "bench" / "inputs.npy")
    pred = CompiledPredictor(path, accelerator="cpu")
    assert pred.kernels()["fully_accelerated"] and pred.inputs == runtimes.load(path).inputs
    diff = np.abs(runtimes.predict_batched(pred, x) - runtimes.predict_batched(runtimes.load(path), x)).max()
    assert diff <= 1.01 * lsb  # the same int8 model, one output step at most between two CPU kernel sets


def test_a_choice_that_computes_in_float_fails_the_integer_gate(acc_run):
    """LiteRT's GPU computes in fp16/fp32 whatever the tensor types: the reader counts every MAC float, the gate says so."""
    from pipeline.accelerators import _gate
    from runtimes.litert_coverage import IN_FLOAT, read_graph, tflite_coverage

    run, _ = acc_run
    path, _ = _artifact(run, ".tflite")
    cov = tflite_coverage(read_graph(path), IN_FLOAT["gpu"]).to_dict()
    assert cov["share"] == 0.0 and cov["float_macs"] > 0
    gate = _gate(cov, f"{path.name} on litert:gpu", "litert", 1.0)
    assert not gate["passed"] and "only 0.0% of MACs run in integer" in gate["reason"] and "fp16/fp32" in gate["reason"]


# ---- config, CLI, check stage, report -----------------------------------------------------------------------------

def test_config_takes_choices_in_canonical_spelling_and_refuses_bad_ones():
    from pipeline.config import CheckConfig
    from pipeline.errors import ConfigError

    assert CheckConfig(accelerators=["ov:auto", "tflite:none"]).accelerators == ["openvino:AUTO", "litert:none"]
    assert CheckConfig().accelerators == []
    for bad, fragment in ((["openvino"], "must be RUNTIME:CHOICE"), (["ov:GPX"], "did you mean 'GPU'"),
                          (["ov:auto", "openvino:AUTO"], "openvino:AUTO is given twice")):
        with pytest.raises(ConfigError, match="check.accelerators: ") as exc:
            CheckConfig(accelerators=bad)
        assert fragment in str(exc.value)
    import argparse

    from pipeline.cli.parser import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(sub.choices["run"].format_help().split())
    assert "--runtime-accelerator RUNTIME:CHOICE" in text and "check.accelerators" in text


def test_cli_refuses_an_unavailable_or_unused_choice_before_the_first_stage(tmp_path):
    from runtimes.accelerators import available

    missing = next((f"openvino:{d}" for d in ("GPU", "NPU") if d not in available("openvino")), "onnxruntime:AzureExecutionProvider")
    out = tmp_path / "run"
    res = pipeline("run", *FAST, "--target", "openvino", "--runtime-accelerator", missing, "--runtime-accelerator", "litert:none",
                   "--out", str(out))
    line = assert_one_line_error(res, "is not available on this host", "; available: ", "no target of this run runs on litert",
                                 code=3)
    runtime = missing.split(":")[0]
    assert f"{missing.split(':')[1]}' is not available" in line and f"available: {', '.join(available(runtime))}" in line
    assert not (out / "synthetic").exists() and not (out / "manifest.json").exists()  # no stage ran


def test_check_stage_stores_parity_and_coverage_per_choice_and_the_report_shows_them(acc_run):
    run, stdout = acc_run
    check = json.loads((run / "check.json").read_text())
    arts = check["artifacts"]
    for name, key in (("model.w8a8.xml", "openvino:AUTO"), ("model.w8a8.tflite", "litert:none")):
        assert set(arts[name]["accelerators"]) == {key}
        a = arts[name]["accelerators"][key]
        assert a["executes_on"] and a["kernels"]["accelerator"] == key
        assert a["vs_fake_quant"]["top1_agreement"] >= 0.75 and a["vs_fake_quant"]["max_abs_diff_lsb"] <= 3
        assert a["vs_default"]["max_abs_diff_lsb"] <= 2  # the same integer model on other kernels: a step or two at most
        assert a["vs_fp"]["images"] == a["vs_default"]["images"] == check["holdout"]["images"]
        assert a["integer_coverage"]["accelerator"] == key and a["integer_coverage"]["share"] == 1.0
        assert a["integer_gate"] == {"min_integer_coverage": 1.0, "passed": True, "reason": None}
    fp32 = arts["model.fp32.tflite"]["accelerators"]["litert:none"]
    assert fp32["vs_fake_quant"] is None and "integer_coverage" not in fp32  # an FP32 twin: parity only
    assert arts["model.w8a8.tflite"]["accelerators"]["litert:none"]["integer_coverage"]["ops_delegated"] == 0

    from pipeline.reporting.schema import validate

    report = json.loads((run / "report.json").read_text())
    assert validate(report) == []
    html = (run / "report.html").read_text()
    assert 'id="accelerators"' in html and "openvino:AUTO" in html and "litert:none" in html
    assert "accelerator openvino:AUTO model.w8a8.xml: runs on" in stdout and "accelerator litert:none model.w8a8.tflite" in stdout
