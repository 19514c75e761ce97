"""LiteRT target: full-integer .tflite with the QAT scales, read back by the real interpreter; parity with ORT and OpenVINO.

Real litert-torch converter, real ai-edge-litert interpreter, real converted files; small
random-weight models (the figures measure conversion fidelity, not accuracy): resnet20
(1×28×28, normalisation inside, residual adds, stride-2 shortcuts) and ConcatHardswishNet
(3×32×32: depth-wise conv, ReLU6, residual add, concat). Each file is converted once per
module (fixtures) and shared by the tests that read it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import runtimes  # noqa: E402
from exporters.artifact import Artifact  # noqa: E402
from exporters.tflite import PTQ_CALIBRATED, QAT_SCALES, TfliteOptions, check_integer_tflite, export_fp32, export_int8, export_ptq  # noqa: E402
from runtimes.litert_coverage import MAC_OPS, read_graph  # noqa: E402
from pipeline.errors import ExportError  # noqa: E402
from pipeline.models import ModelCard, create_model  # noqa: E402
from pipeline.quant.calibrate import calibrate  # noqa: E402
from pipeline.quant.deploy import deployment_spec, io_contract  # noqa: E402
from pipeline.quant.prepare import quant_layers, quantize_model  # noqa: E402
from pipeline.quant.scheme import BitScheme  # noqa: E402
from tests.conftest import run_without_torch  # noqa: E402
from tests.models import ConcatHardswishNet, WithConv1d  # noqa: E402

N_INPUTS = 128
MAX_LSB = 3.0  # fake-quant vs integer kernels: 1 LSB rounding floor (docs/conversion.md §6), a few LSB allowed
MODELS = {
    "resnet20": (lambda: create_model("resnet20", in_channels=1, num_classes=10, mean=[0.3], std=[0.35]), (1, 28, 28)),
    "dw_concat_relu6": (ConcatHardswishNet, (3, 32, 32)),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def pixel_images(n: int, shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    """Random images on the 8-bit pixel grid, like decoded image files (so an int8 input edge is exact)."""
    return np.round(np.random.default_rng(seed).random((n, *shape), dtype=np.float32) * 255) / 255


class Case:
    """One model quantized at ``bits``, its fake-quant reference outputs, and its int8 .tflite."""

    def __init__(self, name: str, bits: str, folder: Path, io: str = "int8", overflow_safe: bool = False) -> None:
        factory, shape = MODELS[name]
        torch.manual_seed(0)
        self.name, self.bits, self.shape = name, bits, shape
        self.card = ModelCard(name, shape, 10)
        self.model = factory().eval()
        # tflite-only runs keep full-range 8-bit weights (qat.overflow_fix=auto): XNNPACK's int8 kernels cannot saturate
        self.qmodel = quantize_model(self.model, BitScheme.parse(bits, overflow_safe=overflow_safe))
        calibrate(self.qmodel, [torch.rand(32, *shape, generator=torch.Generator().manual_seed(0))])
        self.qmodel.eval()
        self.spec = deployment_spec(self.qmodel, self.card)
        self.contract = self.spec.contract
        self.lsb = self.spec.output_scale
        self.x = pixel_images(N_INPUTS, shape)
        with torch.no_grad():  # A<8 deploys as A8 inside the learned range (same grid as q/dq): the spec's float graph
            self.fq = self.spec.graph(torch.from_numpy(self.x)).numpy()
        self.folder = folder
        self.art = export_int8(self.spec, folder / f"model.{bits}.tflite", TfliteOptions(io=io))
        check_integer_tflite(self.art, 1.0)  # the integer gate export_int8 ran itself before the format record took it over


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[tuple[str, str], Case]:
    """Converted once per module, shared by every test that reads the same (model, bits) file."""
    return {}


def _case(cases: dict, tmp_path_factory, name: str, bits: str) -> Case:
    if (name, bits) not in cases:
        cases[(name, bits)] = Case(name, bits, tmp_path_factory.mktemp(f"tfl_{name}_{bits}"))
    return cases[(name, bits)]


@pytest.fixture(params=[(m, b) for m in MODELS for b in ("w8a8", "w4a4")], ids=lambda p: f"{p[0]}-{p[1]}")
def case(request, cases, tmp_path_factory) -> Case:
    return _case(cases, tmp_path_factory, *request.param)


@pytest.fixture
def resnet_w8a8(cases, tmp_path_factory) -> Case:
    return _case(cases, tmp_path_factory, "resnet20", "w8a8")


def _lsb_diff(a: np.ndarray, b: np.ndarray, lsb: float) -> tuple[float, float]:
    return float(np.abs(a - b).max() / lsb), float((a.argmax(1) == b.argmax(1)).mean())


def test_every_mac_op_is_int8_and_nhwc(case: Case) -> None:
    g = read_graph(case.art.path)
    cov = case.art.coverage
    print(f"\n{case.name} {case.bits}: {case.art.notes['op_histogram']}, {cov.int_macs} MACs, convert {case.art.notes['convert_seconds']} s")
    assert cov.runtime == "litert" and cov.share == 1.0 and cov.float_macs == 0 and not cov.float_nodes and not cov.float_kernels
    n_convs = sum(isinstance(m, nn.Conv2d) for m in case.model.modules())
    hist = case.art.notes["op_histogram"]
    assert hist.get("CONV_2D", 0) + hist.get("DEPTHWISE_CONV_2D", 0) == n_convs and hist["FULLY_CONNECTED"] == 1
    assert "TRANSPOSE" not in hist and case.art.notes["transposes"] == 0
    for op in g.ops:  # the gate's reading, redone by hand: int8 in/out on every op that matters, int32 biases
        if op["op_name"] in MAC_OPS | {"ADD", "MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}:
            assert all(g.tensor(i)["dtype"] == np.int8 for i in op["outputs"]), op
            act, weight = g.tensor(op["inputs"][0]), g.tensor(op["inputs"][1])
            assert act["dtype"] == np.int8, op
            if op["op_name"] in MAC_OPS:
                assert weight["dtype"] == np.int8 and g.tensor(op["inputs"][2])["dtype"] == np.int32, op
    # edges: NHWC int8 in, int8 out, scale and zero point in the contract equal to the interpreter's
    (inp,), (out,) = case.art.inputs, case.art.outputs
    c, h, w = case.shape
    assert inp["name"] == "input" and inp["layout"] == "NHWC" and inp["shape"] == [1, h, w, c] and inp["dtype"] == "int8"
    assert out["name"] == "logits" and out["dtype"] == "int8" and out["scale"] == pytest.approx(case.lsb, rel=1e-6)
    pred = runtimes.load(case.art.path)
    assert pred.runtime == "litert" and pred.inputs[0].scale == pytest.approx(inp["scale"]) and pred.inputs[0].zero_point == inp["zero_point"]
    if case.name == "resnet20":  # normalisation inside: the input is the 8-bit pixel grid, the normalisation float between them
        assert (inp["scale"], inp["zero_point"]) == (pytest.approx(1 / 255), -128)
        assert cov.other_float_ops == {"SUB": 1, "MUL": 1} and case.art.notes["input_quantizer"] == "pixel grid"
    assert case.art.notes["mode"] == QAT_SCALES and case.art.notes["io"] == "int8"


def test_stored_weight_scales_are_the_learned_ones(case: Case) -> None:
    g = read_graph(case.art.path)
    per_axis = [t for t in g.tensors.values() if t["dtype"] == np.int8 and len(t["quantization_parameters"]["scales"]) > 1]
    layers = quant_layers(case.qmodel)
    assert len(per_axis) == len(layers)
    it = runtimes.load(case.art.path, use_xnnpack=False).interpreter
    for layer in layers:
        want = layer.wq.channel_scale(layer.weight).detach().numpy()
        match = [t for t in per_axis if len(t["quantization_parameters"]["scales"]) == len(want)
                 and np.allclose(t["quantization_parameters"]["scales"], want, rtol=1e-6, atol=0)]
        assert match, f"no per-axis tensor holds the scales of a {tuple(layer.weight.shape)} weight"
        q = it.get_tensor(match[0]["index"])
        assert np.abs(q).max() <= layer.wq.qmax  # 4-bit grid stored as int8 values in [-7, 7]
        assert (np.zeros_like(match[0]["quantization_parameters"]["zero_points"]) == match[0]["quantization_parameters"]["zero_points"]).all()


def test_outputs_match_fake_quant(case: Case) -> None:
    y = runtimes.predict_batched(runtimes.load(case.art.path), case.x)
    assert y.shape == case.fq.shape
    lsb, agree = _lsb_diff(y, case.fq, case.lsb)
    print(f"\n{case.name} {case.bits} LiteRT int8 vs torch fake-quant: max {lsb:.2f} LSB, top-1 agreement {agree:.1%}")
    assert lsb <= MAX_LSB and agree >= 0.99


def test_batch_resize_gives_the_same_numbers(case: Case) -> None:
    pred = runtimes.load(case.art.path)
    one = runtimes.predict_batched(pred, case.x[:5])
    five = runtimes.run_single(pred, case.x[:5])  # resizes the input to batch 5
    np.testing.assert_array_equal(one, five)


@pytest.fixture(scope="module")
def resnet_fp32(tmp_path_factory) -> tuple[Artifact, nn.Module]:
    factory, shape = MODELS["resnet20"]
    torch.manual_seed(0)
    model = factory().eval()
    return export_fp32(model, io_contract(ModelCard("resnet20", shape, 10)), tmp_path_factory.mktemp("tfl_fp32") / "model.fp32.tflite"), model


def test_fp32_twin_matches_torch_and_fails_the_gate(resnet_fp32) -> None:
    art, model = resnet_fp32
    x = pixel_images(16, (1, 28, 28))
    y = runtimes.predict_batched(runtimes.load(art.path), x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    assert art.inputs[0]["dtype"] == "float32" and art.inputs[0]["layout"] == "NHWC" and art.notes["transposes"] == 0
    with pytest.raises(ExportError, match=r"model\.fp32\.tflite: only 0\.0% of MACs.*float ops: .*CONV_2D#"):
        check_integer_tflite(art, 1.0)
    assert art.coverage.float_kernels["CONV_2D"] == 20 and art.coverage.float_kernels["ADD"] == 9


def test_float_io_option(tmp_path) -> None:
    c = Case("dw_concat_relu6", "w8a8", tmp_path, io="float")
    (inp,), (out,) = c.art.inputs, c.art.outputs
    assert inp["dtype"] == out["dtype"] == "float32" and inp["scale"] is None and c.art.notes["io"] == "float"
    hist = c.art.notes["op_histogram"]
    assert hist["DEQUANTIZE"] == 1 and hist["QUANTIZE"] >= 1 and c.art.coverage.share == 1.0 and not c.art.coverage.float_kernels
    pred = runtimes.load(c.art.path)
    assert pred.inputs[0].scale is None and pred.inputs[0].name == "input" and pred.outputs[0].name == "logits"
    lsb, agree = _lsb_diff(runtimes.predict_batched(pred, c.x), c.fq, c.lsb)
    assert lsb <= MAX_LSB and agree >= 0.99


def test_ptq_calibrated_fallback(tmp_path) -> None:
    factory, shape = MODELS["dw_concat_relu6"]
    torch.manual_seed(0)
    teacher = factory().eval()
    calib = pixel_images(32, shape, seed=7)
    art = export_ptq(teacher, io_contract(ModelCard("dw", shape, 10)), tmp_path / "model.w8a8.tflite", calib)
    check_integer_tflite(art, 1.0)  # the integer gate export_ptq ran itself before the format record took it over
    assert art.notes["mode"] == PTQ_CALIBRATED and art.notes["calibration_images"] == 32
    assert art.coverage.share == 1.0 and not art.coverage.float_kernels and art.inputs[0]["dtype"] == "int8"
    x = pixel_images(64, shape)
    y = runtimes.predict_batched(runtimes.load(art.path), x)
    with torch.no_grad():
        ref = teacher(torch.from_numpy(x)).numpy()
    err = float(np.abs(y - ref).max() / np.abs(ref).max())
    print(f"\nPT2E-calibrated int8 vs FP32 teacher: max |Δ| {err:.3%} of the logit range, {art.notes['op_histogram']}")
    assert err < 0.05 and (y.argmax(1) == ref.argmax(1)).mean() >= 0.9


def test_gate_fails_naming_the_float_op_and_leaves_nothing(tmp_path) -> None:
    from exporters import registry
    from exporters.format import ExportInputs

    model = WithConv1d().eval()
    q = quantize_model(model, BitScheme(8, 8))
    calibrate(q, [torch.rand(8, 1, 12, 12)])
    card = ModelCard("c1", (1, 12, 12), 10)
    spec = deployment_spec(q.eval(), card)
    sample = np.random.default_rng(0).random((1, 1, 12, 12), dtype=np.float32)
    fmt = registry.get("tflite")
    with pytest.raises(ExportError, match=r"m\.tflite: only \d+\.\d% of MACs run in integer on litert.*float ops: CONV_2D#\d+"):
        fmt.write_integer(ExportInputs(model, spec.contract, spec, sample, 1.0), tmp_path / "m.tflite", fmt.options({}))
    assert list(tmp_path.iterdir()) == []  # no artifact, no temporary folder
    lowered = ExportInputs(model, spec.contract, spec, sample, 0.3)  # the gate lowered
    art = fmt.write_integer(lowered, tmp_path / "m.tflite", fmt.options({}))
    assert 0.3 < art.coverage.share < 1.0 and art.coverage.float_kernels == {"CONV_2D": 1, "MEAN": 1}


def test_bad_input_is_one_line_export_error(tmp_path) -> None:
    factory, shape = MODELS["dw_concat_relu6"]
    from exporters import registry
    from exporters.format import ExportInputs

    card = ModelCard("d", shape, 10)
    q = quantize_model(factory().eval(), BitScheme(8, 8))  # not calibrated
    with pytest.raises(ExportError, match="not calibrated"):
        export_int8(deployment_spec(q, card), tmp_path / "m.tflite")
    with pytest.raises(ExportError, match="int8 or float|must be one of"):
        TfliteOptions(io="uint8")
    model = factory().eval()
    calibrated = quantize_model(model, BitScheme(8, 8))
    calibrate(calibrated, [torch.rand(8, *shape)])
    spec = deployment_spec(calibrated.eval(), card)
    fmt = registry.get("tflite")  # the path suffix is the format record's to check
    inputs = ExportInputs(model, spec.contract, spec, np.random.default_rng(0).random((1, *shape), dtype=np.float32), 1.0)
    with pytest.raises(ExportError, match=r"\.tflite"):
        fmt.write_integer(inputs, tmp_path / "m.onnx", fmt.options({}))
    with pytest.raises(ExportError, match="quantize_model"):
        export_int8(deployment_spec(factory().eval(), card), tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_three_runtimes_agree(tmp_path) -> None:
    """ORT (QDQ ONNX), OpenVINO (IR of that ONNX) and LiteRT on the same quantized model and inputs agree with each other
    and with the torch fake-quant model (8-bit weights on the overflow-safe grid, as a run with onnx/openvino targets trains)."""
    from exporters.onnx import export_qdq
    from exporters.openvino import export_ir

    c = Case("resnet20", "w8a8", tmp_path, overflow_safe=True)
    onnx_art = export_qdq(c.spec, tmp_path / "model.w8a8.onnx")
    ir_art = export_ir(onnx_art.path, tmp_path / "model.w8a8.xml", "w8a8", c.contract)
    outs = {a.target: runtimes.predict_batched(runtimes.load(a.path, threads=1), c.x) for a in (onnx_art, ir_art, c.art)}
    outs["fake-quant"] = c.fq
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            lsb, agree = _lsb_diff(outs[a], outs[b], c.lsb)
            print(f"\n{a} vs {b}: max {lsb:.2f} LSB, top-1 agreement {agree:.1%}")
            assert lsb <= MAX_LSB and agree >= 0.99, (a, b)


def test_export_stage_tflite(tmp_path) -> None:
    """The pipeline's tflite format record: FP32 twin + integer artifact named by the deployed precision, notes for the check stage."""
    from exporters import registry
    from exporters.format import ExportInputs
    from pipeline.config import build_config
    from pipeline.runner import RunContext, write_json
    from pipeline.stages.export import load_artifacts, outputs

    assert "tflite" in registry.names()
    factory, shape = MODELS["dw_concat_relu6"]
    torch.manual_seed(0)
    model = factory().eval()
    q = quantize_model(model, BitScheme(8, 8))
    calibrate(q, [torch.rand(16, *shape)])
    cfg = build_config(cli={"export.targets": ["tflite"], "out": str(tmp_path / "run")})
    ctx = RunContext(cfg, tmp_path / "run", log=lambda m: None)
    ctx.run_dir.mkdir(parents=True)
    spec = deployment_spec(q.eval(), ModelCard("d", shape, 10))
    inputs = ExportInputs(model, spec.contract, spec, torch.rand(1, *shape).numpy(), cfg.export.min_integer_coverage)
    (name,) = registry.resolve(cfg.export.targets)
    fmt = registry.get(name)
    options = fmt.options(cfg.section("export"))
    arts = [fmt.write_float(inputs, ctx.layout.artifact("fp32", fmt.info), options),
            fmt.write_integer(inputs, ctx.layout.artifact(fmt.precision(spec, options), fmt.info), options)]
    assert [a.path.name for a in arts] == ["model.fp32.tflite", "model.w8a8.tflite"]
    assert arts[1].notes["output_scale"] == pytest.approx(spec.output_scale) and arts[1].coverage.share == 1.0
    write_json(ctx.layout.export_index, {"artifacts": [a.to_dict(ctx.run_dir) for a in arts]})
    assert {"export.json", "model.fp32.tflite", "model.w8a8.tflite"} <= {p.name for p in outputs(ctx)}
    back = load_artifacts(ctx)
    assert back[1].coverage.share == 1.0 and back[1].target == "tflite" and back[1].inputs[0]["layout"] == "NHWC"
    bench_feeds = runtimes.prepare_feeds(runtimes.load(back[1].path), np.random.rand(1, *shape).astype(np.float32))
    assert bench_feeds["input"].dtype == np.int8 and bench_feeds["input"].shape == (1, shape[1], shape[2], shape[0])
    # the config knobs: a bad edge type is refused; --target all includes tflite
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="tflite_io"):
        build_config(sets=["export.tflite_io=uint8"])
    assert build_config(sets=["export.tflite_calibrate=true"]).export.tflite_calibrate is True


def test_runtimes_load_tflite_without_torch(resnet_w8a8: Case) -> None:
    case = resnet_w8a8
    run_without_torch(
        "import sys, numpy as np, runtimes\n"
        "assert 'ai_edge_litert' not in sys.modules, 'importing runtimes imported the interpreter'\n"
        f"p = runtimes.load({str(case.art.path)!r})\n"
        "y = runtimes.run_single(p, np.random.rand(2, 1, 28, 28).astype(np.float32))\n"
        "assert y.shape == (2, 10) and p.runtime == 'litert' and p.inputs[0].layout == 'NHWC'\n"
    )
