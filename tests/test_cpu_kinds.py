"""Parity on CPU kinds this machine is not: an AVX2-only x86 (no VNNI) emulated by qemu-user, whatever the host CPU.

Artifacts and reference outputs are made natively (torch never runs under emulation: too slow);
then only the bench agent (numpy + one runtime) runs on the emulated CPU, with its workers under
the same emulator (``ZSQ_AGENT_EMULATOR``), and checks the outputs against the fake-quant model
exactly as on a device. Checked here:

* every target's W8A8 artifact on the overflow-safe grid (what a run trains by default for
  onnx/openvino) computes what was trained within 3 output LSBs on the non-VNNI kernels, all
  of its MACs in integer as the runtime reports it on that CPU;
* full-range 8-bit weights do not on ONNX Runtime and OpenVINO (u8×s8 pair sums saturate
  int16), and the agent says why; LiteRT (XNNPACK widens to int16 first) stays exact;
* the agent records the ISA it saw, marks itself emulated and its latencies as no device figure.

The arm64 counterpart needs an arm64 root (``scripts/arm64_root.sh``) and lives in
``tests/test_arm64.py``.
"""

from __future__ import annotations

import platform
import shutil

import pytest

from tests.emulated import MAX_LSB, TARGETS, run_agent_emulated

HASWELL = "Haswell-v4"  # AVX2, FMA, no AVX-512, no VNNI: the int8 kernels of every AMD before Zen 4
QEMU = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="emulating an x86 CPU model needs an x86_64 host (the .venv's python is x86_64)")


@pytest.fixture(scope="module")
def haswell() -> list[str]:
    assert QEMU, "qemu-x86_64-static is missing: scripts/setup.sh installs Debian's qemu-user-static"
    return [QEMU, "-cpu", HASWELL]


@pytest.mark.parametrize("target", TARGETS)
def test_overflow_safe_w8a8_is_exact_on_emulated_haswell(artifacts, haswell, target) -> None:
    r = run_agent_emulated(artifacts, "safe", target, haswell)
    ref, isa = r["reference"], r["environment"]["isa"]
    print(f"\nsafe {target} on emulated {HASWELL}: {ref['max_abs_diff_lsb']:.2f} LSB, top-1 {ref['top1_agreement']:.1%}, "
          f"coverage {r['integer_coverage']['share']:.0%}, kernels {r['kernels']}")
    assert isa["emulated"] and isa["arch"] == "x86_64" and isa["u8s8_saturates"] is True
    assert not isa["int8_features"]["avx512_vnni"] and isa["int8_features"]["avx2"]
    assert r["latency_source"] == "emulated" and any("emulation" in f for f in r["flags"])
    assert not any("saturate" in f for f in r["flags"])  # ±63 weights: nothing to warn about
    assert r["status"] == "ok" and ref["top1_agreement"] >= 0.99 and ref["max_abs_diff_lsb"] <= MAX_LSB
    assert r["integer_coverage"]["share"] == 1.0
    if target == "openvino":  # the plugin itself says it picked AVX2 int8 primitives (no VNNI) on this CPU model
        assert any(k.startswith("Convolution:") and "avx2" in k and k.endswith("I8") for k in r["kernels"]["primitives"])


@pytest.mark.parametrize("target", TARGETS)
def test_full_range_w8a8_on_emulated_haswell(artifacts, haswell, target) -> None:
    """u8×s8 runtimes (ORT, OpenVINO) saturate on full-range weights and the agent says so; LiteRT (XNNPACK) stays exact."""
    r = run_agent_emulated(artifacts, "full", target, haswell)
    lsb = r["reference"]["max_abs_diff_lsb"]
    print(f"\nfull {target} (|w| <= 127) on emulated {HASWELL}: {lsb:.2f} LSB, flags {r['flags']}")
    saturation_flagged = any("saturate" in f and "--overflow-fix on" in f for f in r["flags"])
    if target == "tflite":
        assert lsb <= MAX_LSB and not saturation_flagged
    else:
        assert lsb > MAX_LSB and saturation_flagged  # the saturation the overflow-safe grid exists for
