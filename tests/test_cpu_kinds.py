"""Parity on CPU kinds this machine is not: an AVX2-only x86 (no VNNI) emulated by qemu-user, whatever the host CPU.

Artifacts and reference outputs are made natively (torch never runs under emulation: too slow);
then only the bench agent (numpy + one runtime) runs on the emulated CPU, with its workers under
the same emulator (``ZSQ_AGENT_EMULATOR``), and checks the outputs against the fake-quant model
exactly as on a device. Checked here:

* every target's W8A8 artifact on the overflow-safe grid (what a run trains by default for
  onnx/openvino) computes what was trained within 3 output LSBs on the non-VNNI kernels;
* a full-range 8-bit ONNX artifact does not, and the agent says why (saturation flag);
* the agent records the ISA it saw, marks itself emulated and its latencies as no device figure.

The arm64 counterpart needs an arm64 root (``scripts/arm64_root.sh``) and lives in
``tests/test_arm64.py``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT

HASWELL = "Haswell-v4"  # AVX2, FMA, no AVX-512, no VNNI: the int8 kernels of every AMD before Zen 4
QEMU = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
N = 16
MAX_LSB = 3.0

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="emulating an x86 CPU model needs an x86_64 host (the .venv's python is x86_64)")


def pixel_images(n: int, shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    """Random images on the 8-bit pixel grid (an int8 .tflite input edge represents them exactly)."""
    return np.round(np.random.default_rng(seed).random((n, *shape), dtype=np.float32) * 255) / 255


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict:
    """ResNet-20 (random weights, 1×28×28) at W8A8: overflow-safe ONNX/IR/.tflite, full-range ONNX, references."""
    from exporters.onnx import export_qdq
    from exporters.openvino import export_ir
    from exporters.tflite import TfliteOptions, export_int8
    from pipeline.models import ModelCard, create_model
    from pipeline.quant.calibrate import calibrate
    from pipeline.quant.prepare import quant_layers, quantize_model
    from pipeline.quant.scheme import BitScheme
    from pipeline.stages.export import output_scale

    folder = tmp_path_factory.mktemp("cpu_kinds")
    shape = (1, 28, 28)
    card = ModelCard("resnet20", shape, 10)
    x = pixel_images(N, shape)
    np.save(folder / "inputs.npy", x)
    out: dict = {"folder": folder}
    for grid, safe in (("safe", True), ("full", False)):
        torch.manual_seed(0)
        model = create_model("resnet20", in_channels=1, num_classes=10, mean=[0.3], std=[0.35]).eval()
        q = quantize_model(model, BitScheme(8, 8, overflow_safe=safe))
        calibrate(q, [torch.rand(32, *shape, generator=torch.Generator().manual_seed(0))])
        q.eval()
        with torch.no_grad():
            np.save(folder / f"expected.{grid}.npy", q(torch.from_numpy(x)).numpy())
        qmax = max(m.wq.qmax for m in quant_layers(q))
        onnx_art = export_qdq(q, card, folder / f"{grid}.w8a8.onnx", "w8a8")
        out[(grid, "onnx")] = (onnx_art.path, output_scale(q), qmax)
        if safe:
            ir = export_ir(onnx_art.path, folder / f"{grid}.w8a8.xml", "w8a8", card)
            out[(grid, "openvino")] = (ir.path, output_scale(q), qmax)
            tfl = export_int8(q, card, folder / f"{grid}.w8a8.tflite", "w8a8", TfliteOptions())
            out[(grid, "tflite")] = (tfl.path, output_scale(q), qmax)
    return out


def run_agent_emulated(artifact: Path, inputs: Path, expected: Path, lsb: float, qmax: int, out: Path,
                       emulator: list[str]) -> dict:
    """The bench agent, and each of its worker processes, under ``emulator``; minimal timing, full output check."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZSQ_AGENT_EMULATOR": " ".join(emulator)}
    cmd = [*emulator, sys.executable, "-m", "devices.agent", "--graph", str(artifact), "--inputs", str(inputs),
           "--expected", str(expected), "--output_scale", repr(lsb), "--weight_qmax", str(qmax), "--min_agreement", "0.99",
           "--num_threads", "1", "--cpu_mask", "none", "--cold_starts", "0", "--trials", "1", "--warmup_runs", "1",
           "--warmup_min_secs", "0", "--num_runs", "2", "--min_secs", "0", "--cooldown_secs", "0", "--json_stats", str(out), "-q"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def haswell() -> list[str]:
    assert QEMU, "qemu-x86_64-static is missing: scripts/setup.sh installs Debian's qemu-user-static"
    return [QEMU, "-cpu", HASWELL]


@pytest.mark.parametrize("target", ["onnx", "openvino", "tflite"])
def test_overflow_safe_w8a8_is_exact_on_emulated_haswell(artifacts, haswell, target) -> None:
    path, lsb, qmax = artifacts[("safe", target)]
    folder = artifacts["folder"]
    r = run_agent_emulated(path, folder / "inputs.npy", folder / "expected.safe.npy", lsb, qmax, folder / f"{target}.json", haswell)
    ref, isa = r["reference"], r["environment"]["isa"]
    print(f"\n{path.name} on emulated {HASWELL}: {ref['max_abs_diff_lsb']:.2f} LSB, top-1 {ref['top1_agreement']:.1%}, "
          f"kernels {r['kernels']}")
    assert isa["emulated"] and isa["arch"] == "x86_64" and isa["u8s8_saturates"] is True
    assert not isa["int8_features"]["avx512_vnni"] and isa["int8_features"]["avx2"]
    assert r["latency_source"] == "emulated" and any("emulation" in f for f in r["flags"])
    assert not any("saturate" in f for f in r["flags"])  # ±63 weights: nothing to warn about
    assert r["status"] == "ok" and ref["top1_agreement"] >= 0.99 and ref["max_abs_diff_lsb"] <= MAX_LSB
    if target == "openvino":  # the plugin itself says it picked AVX2 int8 primitives (no VNNI) on this CPU model
        assert any(k.startswith("Convolution:") and "avx2" in k and k.endswith("I8") for k in r["kernels"]["primitives"])


def test_full_range_w8a8_saturates_on_emulated_haswell_and_is_flagged(artifacts, haswell) -> None:
    path, lsb, qmax = artifacts[("full", "onnx")]
    folder = artifacts["folder"]
    r = run_agent_emulated(path, folder / "inputs.npy", folder / "expected.full.npy", lsb, qmax, folder / "full.json", haswell)
    print(f"\n{path.name} (|w| <= {qmax}) on emulated {HASWELL}: {r['reference']['max_abs_diff_lsb']:.2f} LSB")
    assert qmax == 127
    assert r["reference"]["max_abs_diff_lsb"] > MAX_LSB  # the saturation the overflow-safe grid exists for
    assert any("saturate" in f and "--overflow-fix on" in f for f in r["flags"])
