"""The overflow-safe weight grid: how ``qat.overflow_fix`` resolves, what the quantizer does with it, how a run records it,
and how a device reads the ISA that decides whether it matters."""

from __future__ import annotations

import struct

import pytest
import torch

from devices import isa
from devices.protocol import saturation_flag
from pipeline.config import build_config
from pipeline.errors import ConfigError
from pipeline.quant import overflow
from pipeline.quant.prepare import quant_layers, quantize_model
from pipeline.quant.quantizers import WeightQuantizer
from pipeline.quant.scheme import BitScheme
from pipeline.runner import RunContext
from pipeline.stages import STAGES
from pipeline.stages.qat import scheme


@pytest.mark.parametrize(("mode", "bits", "fl", "targets", "profile", "want"), [
    ("auto", 8, None, ["onnx"], "deploy", True),
    ("auto", 8, None, ["openvino", "tflite"], "deploy", True),
    ("auto", 8, None, ["tflite"], "deploy", False),  # XNNPACK widens to int16 first: no saturation to avoid
    ("auto", 4, None, ["onnx"], "deploy", False),  # ±7 is inside ±63 already
    ("auto", 4, 8, ["onnx"], "deploy", True),  # 8-bit first/last layers
    ("auto", 8, None, ["onnx"], "paper", False),  # no artifact
    ("on", 8, None, ["tflite"], "deploy", True),
    ("off", 8, None, ["onnx"], "deploy", False),
])
def test_resolve(mode, bits, fl, targets, profile, want):
    assert overflow.resolve(mode, bits, fl, targets, profile) is want


def test_config_key_flag_and_bad_value():
    assert build_config().qat.overflow_fix == "auto"
    assert build_config(cli={"qat.overflow_fix": "off"}).qat.overflow_fix == "off"
    with pytest.raises(ConfigError, match=r"qat.overflow_fix must be one of auto, on, off, got 'of'; did you mean 'off'\?"):
        build_config(sets=["qat.overflow_fix=of"])


def test_weight_quantizer_grid():
    w = torch.randn(4, 3, 3, 3)
    full, safe = WeightQuantizer(4, 8), WeightQuantizer(4, 8, qmax=63)
    assert full.qmax == 127 and safe.qmax == 63 and "qmax=63" in repr(safe)
    s = safe.channel_scale(w).view(-1, 1, 1, 1)
    ints = torch.round(safe(w) / s)
    assert ints.abs().max() <= 63 and ints.abs().max() == 63  # the whole narrowed grid is used, nothing beyond
    with pytest.raises(ValueError, match="qmax"):
        WeightQuantizer(4, 4, qmax=63)  # a 4-bit grid cannot hold ±63


def test_quantize_model_applies_the_grid_to_8bit_layers_only():
    from pipeline.models import create_model

    model = create_model("resnet20", in_channels=1, num_classes=10).eval()
    q = quantize_model(model, BitScheme(4, 4, first_last_bits=8, overflow_safe=True))
    qmax = [m.wq.qmax for m in quant_layers(q)]
    assert qmax[0] == qmax[-1] == 63 and set(qmax[1:-1]) == {7}
    assert q.zsq_meta["overflow_safe"] is True
    assert BitScheme(8, 8, overflow_safe=True).weight_grid.startswith("8-bit weights on ±63")


def test_qat_stage_key_follows_the_resolved_grid(tmp_path):
    """auto resolves from the targets: a tflite-only run and an onnx run of the same qat section train different grids."""
    qat_stage = next(s for s in STAGES if s.name == "qat")

    def key(targets: list[str]) -> tuple[bool, dict]:
        ctx = RunContext(build_config(cli={"export.targets": targets, "out": str(tmp_path)}), tmp_path, log=lambda m: None)
        return scheme(ctx).overflow_safe, qat_stage.extra(ctx)["overflow_safe"]

    assert key(["tflite"]) == (False, False)
    assert key(["onnx", "tflite"]) == (True, True)


X86_CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 fma avx512f avx512bw avx512_vnni vaes\n"
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\n"


def test_isa_reads_cpuinfo_and_numpy_views():
    assert isa.cpuinfo_features(X86_CPUINFO) >= {"avx2", "avx512_vnni"}
    assert isa.cpuinfo_features(ARM_CPUINFO) == {"fp", "asimd", "asimddp"}
    vnni = {"AVX2": True, "AVX512F": True, "AVX512BW": True, "AVX512VNNI": True, "VAES": True}
    feats = isa.process_features("x86_64", isa.cpuinfo_features(X86_CPUINFO), vnni)
    assert feats["avx512_vnni"] and not isa.u8s8_saturates("x86_64", feats)
    avx2 = {"AVX2": True, "AVX512F": False, "AVX512BW": False, "AVX512VNNI": False, "VAES": False}
    assert isa.u8s8_saturates("x86_64", isa.process_features("x86_64", {"avx2"}, avx2))
    assert not isa.u8s8_saturates("aarch64", {})  # ARM's int8 kernels accumulate in int32 or widen first


def test_isa_emulation_signals():
    # x86 emulated on an x86 host that lists more than the process sees (a smaller -cpu model)
    avx2_only = {"AVX2": True, "AVX512F": False, "AVX512BW": False, "AVX512VNNI": False, "VAES": False}
    assert "vaes" in isa.emulation("x86_64", X86_CPUINFO, avx2_only, kernel_arch="x86_64", comm="python3")
    assert isa.emulation("x86_64", X86_CPUINFO, {**avx2_only, "AVX512F": True, "AVX512BW": True, "AVX512VNNI": True, "VAES": True},
                         kernel_arch="x86_64", comm="python3") is None  # native: the process sees what the host lists
    # an arm64 process on an x86 kernel, or reading an x86 host's /proc/cpuinfo (qemu < 8.2 passes it through)
    assert "aarch64 on x86_64" in isa.emulation("aarch64", ARM_CPUINFO, None, kernel_arch="x86_64", comm="python3")
    assert "aarch64 on x86_64" in isa.emulation("aarch64", X86_CPUINFO, None, kernel_arch=None, comm="python3")
    assert "qemu-aarch64-st" in isa.emulation("aarch64", ARM_CPUINFO, None, kernel_arch=None, comm="qemu-aarch64-st")
    assert isa.emulation("aarch64", ARM_CPUINFO, None, kernel_arch="aarch64", comm="python3") is None


def test_arm_hwcap_bits():
    vector = struct.pack("<QQQQQQ", 16, (1 << 1) | (1 << 20), 26, 1 << 13, 0, 0)
    assert isa.arm_hwcap_features(isa.auxv(vector)) == {"asimd": True, "asimddp": True, "sve": False, "sve2": False, "i8mm": True}
    assert isa.arm_hwcap_features({}) is None


def test_saturation_flag_rules():
    sat = {"u8s8_saturates": True}
    assert "overflow-fix on" in saturation_flag("onnxruntime", 127, sat)
    assert saturation_flag("openvino", 63, sat) is None  # overflow-safe grid
    assert saturation_flag("litert", 127, sat) is None  # XNNPACK does not saturate
    assert saturation_flag("onnxruntime", 127, {"u8s8_saturates": False}) is None
    assert saturation_flag("onnxruntime", None, sat) is None  # FP32 artifact


def test_report_marks_emulated_devices_and_states_the_isa():
    from pipeline.reporting.html import device_label, isa_summary, speedups

    dev = {"device": {"name": "pi5"}, "latency_source": "emulated", "artifact": {"name": "model.w8a8.onnx", "runtime": "onnxruntime"},
           "runs": [{"threads": 1, "steady": {"p50_ms": 2.0}}]}
    fp = {**dev, "artifact": {"name": "model.fp32.onnx", "runtime": "onnxruntime"}, "runs": [{"threads": 1, "steady": {"p50_ms": 4.0}}]}
    assert device_label(dev) == "pi5 (emulated CPU)" and device_label({**dev, "latency_source": "device"}) == "pi5"
    # a speed-up measured under emulation is labelled so wherever it is shown, never as the device's own
    arts = [{"path": "model.w8a8.onnx", "precision": "w8a8"}, {"path": "model.fp32.onnx", "precision": "fp32"}]
    assert [s["device"] for s in speedups({"devices": [dev, fp], "artifacts": arts})] == ["pi5 (emulated CPU)"]
    env = {"isa": {"arch": "x86_64", "int8_features": {"avx2": True, "avx512_vnni": False}, "u8s8_saturates": True, "emulated": None}}
    assert isa_summary(env) == "x86_64: avx2; u8×s8 saturates (no VNNI)" and isa_summary({}) == "not recorded"
