"""The QDQ ONNX exporter on real onnxruntime: int8-sized, integer kernels only, same numbers as the fake-quant model."""

from __future__ import annotations


import numpy as np
import onnx
import pytest
import torch
from torch import nn

import runtimes
from exporters.onnx import check_integer, export_fp32, export_qdq
from pipeline.errors import ExportError
from pipeline.models import ModelCard, create_model
from pipeline.quant.calibrate import calibrate
from pipeline.quant.deploy import deployment_spec, io_contract
from pipeline.quant.prepare import quantize_model
from pipeline.quant.scheme import BitScheme
from tests.conftest import run_without_torch
from tests.models import ConcatHardswishNet, WithConv1d


def _quantized(model, shape, bits="w8a8", n=32, overflow_safe=True):
    """The fake-quant model as an onnx run trains it (``qat.overflow_fix=auto``: 8-bit weights on ±63)."""
    q = quantize_model(model.eval(), BitScheme.parse(bits, overflow_safe=overflow_safe))
    g = torch.Generator().manual_seed(0)
    calibrate(q, [torch.rand(n, *shape, generator=g)])
    return q


def _sample(shape) -> np.ndarray:
    """One N×C×H×W float image for the integer gate."""
    return np.random.default_rng(0).random((1, *shape), dtype=np.float32)


MODELS = {
    "resnet20": (lambda: create_model("resnet20", in_channels=1, num_classes=10, mean=[0.3], std=[0.35]), (1, 28, 28)),
    "mobilenetv2": (lambda: create_model("mobilenetv2", in_channels=3, num_classes=10, width_mult=0.5), (3, 32, 32)),
    "dw_concat_relu6": (ConcatHardswishNet, (3, 32, 32)),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("bits", ["w8a8", "w4a4"])
def test_qdq_export_is_integer_and_matches_fake_quant(tmp_path, name, bits):
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    model = factory().eval()
    q = _quantized(model, shape, bits)
    card = ModelCard(name, shape, 10)
    spec = deployment_spec(q, card)
    art = export_qdq(spec, tmp_path / f"model.{spec.precision}.onnx")
    fp = export_fp32(model, io_contract(card), tmp_path / "model.fp32.onnx")
    cov = check_integer(art, _sample(shape), 1.0, tmp_path / "opt.onnx")
    assert cov.share == 1.0 and cov.float_macs == 0 and not cov.float_nodes
    assert cov.int_kernels.get("QLinearConv", 0) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert cov.int_kernels.get("QGemm", 0) == 1
    optimized_ops = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert not optimized_ops & {"Conv", "FusedConv", "Gemm", "MatMul"}
    if name != "dw_concat_relu6":
        assert "Add" not in optimized_ops  # residual adds run as QLinearAdd
    # int8 weights: the file is about a quarter of the FP32 one
    if fp.size_bytes > 200_000:  # tiny models are dominated by graph overhead
        assert art.size_bytes < 0.4 * fp.size_bytes
    # conv weights are int8 initializers (the 1×C×1×1 normalisation constants at the input edge stay float)
    init_types = {i.data_type for i in onnx.load(str(art.path)).graph.initializer if len(i.dims) == 4 and i.dims[0] > 1}
    assert init_types == {onnx.TensorProto.INT8}
    # same numbers as the fake-quant model (exactly what was trained), within a few output LSBs
    x = torch.rand(16, *shape, generator=torch.Generator().manual_seed(1))
    y = runtimes.predict_batched(runtimes.load(art.path), x.numpy())
    with torch.no_grad():
        if bits == "w8a8":
            ref = q(x).numpy()
        else:  # A4 deploys as A8 inside the learned range: compare with the deployed model (the spec's float graph)
            ref = spec.graph(x).numpy()
    lsb = spec.output_scale
    assert np.abs(y - ref).max() <= 3 * lsb + 1e-6
    assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.9


def _fq_vs_ort(q, path, shape, bits="w8a8") -> tuple[float, float]:
    """(max |ORT - fake-quant| in output LSBs, top-1 agreement) on 16 random images."""
    spec = deployment_spec(q, ModelCard("m", shape, 10))
    assert spec.precision == bits
    art = export_qdq(spec, path)
    x = torch.rand(16, *shape, generator=torch.Generator().manual_seed(1))
    y = runtimes.predict_batched(runtimes.load(art.path), x.numpy())
    with torch.no_grad():
        ref = q(x).numpy()
    return float(np.abs(y - ref).max() / spec.output_scale), float((y.argmax(1) == ref.argmax(1)).mean())


def test_overflow_safe_grid_keeps_8bit_weights_within_63(tmp_path):
    factory, shape = MODELS["resnet20"]
    q = _quantized(factory(), shape, "w8a8")
    art = export_qdq(deployment_spec(q, ModelCard("r", shape, 10)), tmp_path / "model.w8a8.onnx")
    ints = [onnx.numpy_helper.to_array(i) for i in onnx.load(str(art.path)).graph.initializer
            if i.data_type == onnx.TensorProto.INT8 and len(i.dims) in (2, 4)]
    assert ints and max(int(np.abs(w).max()) for w in ints) == 63  # the grid is used to its edge, never beyond


def test_full_range_w8_is_exact_only_where_u8s8_cannot_saturate(tmp_path):
    """Full-range 8-bit weights: exact on VNNI x86 (and ARM), off by many LSBs on x86 without VNNI, which is
    why ``qat.overflow_fix`` exists. The expectation is computed from this CPU's features, never skipped."""
    from devices import isa

    factory, shape = MODELS["resnet20"]
    torch.manual_seed(0)
    q = _quantized(factory(), shape, "w8a8", overflow_safe=False)
    lsb, agree = _fq_vs_ort(q, tmp_path / "full.onnx", shape)
    saturates = isa.u8s8_saturates()
    print(f"\nfull-range W8 on {isa.capture()['int8_features']}: {lsb:.1f} LSB, saturating kernels: {saturates}")
    if saturates:
        assert lsb > 3, "full-range weights were exact on a CPU whose u8×s8 kernels saturate: the overflow model is wrong"
    else:
        assert lsb <= 3 and agree >= 0.9


def test_w4_weights_stay_on_the_4bit_grid(tmp_path):
    factory, shape = MODELS["resnet20"]
    q = _quantized(factory(), shape, "w4a4")
    spec = deployment_spec(q, ModelCard("r", shape, 10))
    assert spec.precision == "w4a8"
    art = export_qdq(spec, tmp_path / "model.w4a8.onnx")
    for init in onnx.load(str(art.path)).graph.initializer:
        if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 4:
            w = onnx.numpy_helper.to_array(init)
            assert w.min() >= -7 and w.max() <= 7


def test_gate_fails_naming_the_float_op(tmp_path):
    q = _quantized(WithConv1d(), (1, 12, 12))
    art = export_qdq(deployment_spec(q, ModelCard("c1", (1, 12, 12), 10)), tmp_path / "m.onnx")
    with pytest.raises(ExportError, match=r"c1/Conv.*\(Conv\)"):
        check_integer(art, _sample((1, 12, 12)), 1.0)


def test_runtimes_import_neither_torch_nor_tensorflow(tmp_path):
    factory, shape = MODELS["resnet20"]
    art = export_fp32(factory().eval(), io_contract(ModelCard("r", shape, 10)), tmp_path / "m.onnx")
    run_without_torch(
        "import numpy as np, runtimes\n"
        f"p = runtimes.load({str(art.path)!r})\n"
        "y = runtimes.run_single(p, np.zeros((1, 1, 28, 28), np.float32))\n"
        "assert y.shape == (1, 10)\n"
    )
