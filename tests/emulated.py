"""Artifacts made natively and checked by the bench agent on an emulated CPU (qemu-user): shared by the CPU-kind tests.

Torch never runs under emulation (far too slow): the models are quantized and exported here,
their fake-quant outputs computed here, and only the agent (numpy + one runtime) runs on the
emulated CPU, its worker processes too (``ZSQ_AGENT_EMULATOR``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from devices.agent import CHECK_ONLY_ARGS
from tests.conftest import ROOT

N = 16
MAX_LSB = 3.0  # fake-quant vs integer kernels: 1 LSB rounding floor, a few LSB allowed (as in the native parity tests)
TARGETS = ("onnx", "openvino", "tflite")
GRIDS = {"safe": True, "full": False}  # 8-bit weights on ±63 (overflow-safe) or ±127


def pixel_images(n: int, shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    """Random images on the 8-bit pixel grid (an int8 .tflite input edge represents them exactly)."""
    return np.round(np.random.default_rng(seed).random((n, *shape), dtype=np.float32) * 255) / 255


def make_artifacts(folder: Path) -> dict:
    """ResNet-20 (random weights, 1×28×28) at W8A8, both weight grids, every target, with the fake-quant references."""
    from exporters.onnx import export_qdq
    from exporters.openvino import export_ir
    from exporters.tflite import TfliteOptions, check_integer_tflite, export_int8
    from pipeline.models import ModelCard, create_model
    from pipeline.quant.calibrate import calibrate
    from pipeline.quant.deploy import deployment_spec
    from pipeline.quant.prepare import quant_layers, quantize_model
    from pipeline.quant.scheme import BitScheme

    shape = (1, 28, 28)
    card = ModelCard("resnet20", shape, 10)
    x = pixel_images(N, shape)
    np.save(folder / "inputs.npy", x)
    out: dict = {"folder": folder}
    for grid, safe in GRIDS.items():
        torch.manual_seed(0)
        model = create_model("resnet20", in_channels=1, num_classes=10, mean=[0.3], std=[0.35]).eval()
        q = quantize_model(model, BitScheme(8, 8, overflow_safe=safe))
        calibrate(q, [torch.rand(32, *shape, generator=torch.Generator().manual_seed(0))])
        q.eval()
        with torch.no_grad():
            np.save(folder / f"expected.{grid}.npy", q(torch.from_numpy(x)).numpy())
        qmax = max(m.wq.qmax for m in quant_layers(q))
        spec = deployment_spec(q, card)
        onnx_art = export_qdq(spec, folder / f"{grid}.w8a8.onnx")
        ir = export_ir(onnx_art.path, folder / f"{grid}.w8a8.xml", "w8a8", spec.contract)
        tfl = export_int8(spec, folder / f"{grid}.w8a8.tflite", TfliteOptions())
        check_integer_tflite(tfl, 1.0)  # the integer gate export_int8 ran itself before the format records took it over
        for target, art in zip(TARGETS, (onnx_art, ir, tfl)):
            out[(grid, target)] = (art.path, spec.output_scale, qmax)
    return out


def run_agent_emulated(artifacts: dict, grid: str, target: str, emulator: list[str], python: str = sys.executable,
                       pythonpath: list[str] = ()) -> dict:
    """The bench agent, and each of its worker processes, under ``emulator``; minimal timing, full output check."""
    artifact, lsb, qmax = artifacts[(grid, target)]
    folder = artifacts["folder"]
    inputs, expected = folder / "inputs.npy", folder / f"expected.{grid}.npy"
    tag = "-".join(Path(a).name for a in emulator if not a.startswith("-"))
    out = folder / f"{grid}.{target}.{tag}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*pythonpath, str(ROOT)]), "ZSQ_AGENT_EMULATOR": " ".join(emulator),
           "ORT_DISABLE_TELEMETRY": "1"}
    cmd = [*emulator, python, "-m", "devices.agent", "--graph", str(artifact), "--inputs", str(inputs),
           "--expected", str(expected), "--output_scale", repr(lsb), "--weight_qmax", str(qmax), "--min_agreement", "0.99",
           *CHECK_ONLY_ARGS, "--json_stats", str(out), "-q"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(out.read_text())


