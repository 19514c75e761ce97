"""Per-op latency from each runtime's own profiler (runtimes/profiling.py), on real artifacts, on the host and through the agent.

The artifacts are the session's W8A8 ResNet-20 of every target (tests/conftest.py ``artifacts``, shared with the CPU-kind
tests) and the bench tests' run (tests/test_devices.py ``device_run``). No timing assertion: only that each profiler
names the ops, that the figures add up, and that the integer kernels are the ones it reports.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_devices import TINY, device_run, run_agent  # noqa: F401  (the module pytest loaded, so one session-wide run for all files)

TARGETS = ("onnx", "openvino", "tflite")


def _integer_conv(target: str, op: dict) -> bool:
    """Is this op a convolution that ran in an integer kernel, in the runtime's own words?"""
    if target == "onnx":  # ORT's fused integer conv, activations × weights as its trace types them
        return op["type"] in ("QLinearConv", "ConvInteger", "NhwcQLinearConv") and op["precision"] in ("u8×i8", "i8×i8", "u8×u8")
    if target == "openvino":  # the CPU plugin's primitive: jit_avx2_I8, brgconv_avx512_I8, ...
        return op["type"] == "Convolution" and op["kernel"].upper().endswith(("_I8", "_U8"))
    return op["type"] in ("Convolution", "CONV_2D") and (op["precision"] or "").startswith("i8")  # XNNPACK QC8 / built-in int8


def _feeds(pred, artifacts):
    import runtimes

    return runtimes.prepare_feeds(pred, np.load(artifacts["folder"] / "inputs.npy")[:1])


@pytest.mark.parametrize("target", TARGETS)
def test_each_runtime_profiles_its_integer_kernels(artifacts, target):
    import runtimes
    from runtimes.profiling import DEFAULT_RUNS, profile_ops

    path = artifacts[("safe", target)][0]
    pred = runtimes.load(path, threads=1)
    feeds = _feeds(pred, artifacts)
    before = pred.run(feeds)
    prof = profile_ops(pred, feeds).to_dict()
    assert prof["runtime"] == pred.runtime and prof["unavailable"] is None and prof["runs"] == DEFAULT_RUNS
    assert "profil" in prof["source"] or "performance counters" in prof["source"]
    ops = prof["ops"]
    assert len(ops) >= 21 and all(op["name"] and op["type"] and op["ms"] >= 0 for op in ops)  # ResNet-20: 21 convs at least
    assert prof["total_ms"] > 0 and sum(op["share"] for op in ops) == pytest.approx(1.0)
    assert [op["ms"] for op in ops] == sorted((op["ms"] for op in ops), reverse=True)
    convs = [op for op in ops if _integer_conv(target, op)]
    assert len(convs) >= 19, [(op["type"], op["kernel"], op["precision"]) for op in ops]  # conv1, 18 block convs (+ 1×1 shortcuts)
    assert prof["by_type"][0]["share"] == max(r["share"] for r in prof["by_type"])
    # the caller's own session is left as it was: not profiling, same outputs
    after = pred.run(feeds)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    if target == "onnx":
        assert pred.session.get_session_options().enable_profiling is False


def test_litert_built_in_kernels_are_profiled_too(artifacts):
    """LiteRT without XNNPACK (litert:none): the interpreter's own kernels, named as the model's ops, typed int8."""
    import runtimes
    from runtimes.profiling import profile_ops

    pred = runtimes.load(artifacts[("safe", "tflite")][0], threads=1, use_xnnpack=False)
    prof = profile_ops(pred, _feeds(pred, artifacts), runs=2, warmup=1)
    convs = [op for op in prof.ops if op.type == "CONV_2D"]
    assert prof.runs == 2 and "built-in" in prof.source and len(convs) >= 19
    assert all(op.precision == "i8×i8" and op.kernel == "LiteRT built-in kernel" for op in convs)


def test_what_cannot_be_profiled_says_so_in_one_line(artifacts):
    import runtimes
    from runtimes.profiling import ProfilingUnavailable, op_profile, profile_ops

    class Elsewhere:  # a predictor of a runtime this module has no profiler for (an out-of-tree format)
        runtime, path = "npz-int", "model.npz"

    with pytest.raises(ProfilingUnavailable, match="no op profiler for runtime 'npz-int'") as exc:
        profile_ops(Elsewhere(), {})
    assert "\n" not in str(exc.value)
    recorded = op_profile(Elsewhere(), {})  # what a check or device result stores: no op, and why
    assert recorded["ops"] == [] and "npz-int" in recorded["unavailable"] and "\n" not in recorded["unavailable"]
    pred = runtimes.load(artifacts[("safe", "tflite")][0], threads=1)
    two = runtimes.prepare_feeds(pred, np.load(artifacts["folder"] / "inputs.npy")[:2])  # batch 2: not the artifact's shape
    wrong = op_profile(pred, two)
    assert wrong["ops"] == [] and "takes 784 bytes" in wrong["unavailable"]
    with pytest.raises(ValueError, match="runs >= 1"):
        op_profile(pred, two, runs=0)


def test_the_agent_puts_the_op_profile_into_the_device_result(device_run, tmp_path):  # noqa: F811
    """Through the real local agent (subprocesses): the result carries the worker's op profile and follows zsq.bench/1;
    --enable_op_profiling false (benchmark_model's flag) leaves it out, and pipeline bench passes that on."""
    from devices.agent import CHECK_ONLY_ARGS, build_parser, settings_from_args, validate_bench_args
    from devices.results import validate

    out = tmp_path / "r.json"
    res = run_agent("--graph", str(device_run["int8"]), *TINY, "--cold_starts", "0", "--trials", "1", "--inputs", str(device_run["inputs"]),
                    "--expected", str(device_run["expected_fq"]), "--min_agreement", "0.9", "--device_name", "here",
                    "--json_stats", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    r = json.loads(out.read_text())
    assert validate(r) == [] and r["settings"]["op_profiling"] is True
    prof = r["op_profile"]
    assert prof["runtime"] == "onnxruntime" and prof["threads"] == 1 and prof["total_ms"] > 0
    assert sum(op["share"] for op in prof["ops"]) == pytest.approx(1.0)
    assert sum(_integer_conv("onnx", op) for op in prof["ops"]) >= 19
    assert "op profile (onnxruntime" in res.stderr  # the agent's progress names it
    broken = json.loads(json.dumps(r))
    broken["op_profile"]["ops"][0].pop("ms")
    assert any("op_profile.ops[0]" in e for e in validate(broken))
    # off: benchmark_model's spelling and values; emulated output checks never profile (the emulator's times)
    assert validate_bench_args(["--enable_op_profiling", "false"]) == ["--enable_op_profiling", "false"]
    assert validate_bench_args(["--enable_op_profiling"]) == []  # on is the default
    assert settings_from_args(build_parser().parse_args(["--graph", "m.onnx", *CHECK_ONLY_ARGS])).op_profiling is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--graph", "m.onnx", "--enable_op_profiling", "maybe"])


def test_litert_profiler_binding_is_used_only_on_the_releases_it_was_verified_on(monkeypatch):
    """A C API called through ctypes has no header: on an unverified LiteRT release the profile says why instead of calling it."""
    import importlib.metadata

    from runtimes import litert_profiler

    assert litert_profiler.verified_release().startswith(litert_profiler.VERIFIED_RELEASES)  # the pinned wheel is verified
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9.0")
    with pytest.raises(litert_profiler.ProfilingUnavailable, match=r"verified on ai-edge-litert 2\.3\.x, this host has 9\.9\.0"):
        litert_profiler.verified_release()
