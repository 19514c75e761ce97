"""OpenVINO target: QDQ ONNX → IR, int8 execution on the CPU plugin, parity with ORT and the torch fake-quant model.

Real OpenVINO, real ONNX Runtime, small random-weight models (so the figures measure conversion
fidelity, not accuracy): resnet20 (1×28×28) and mobilenetv2 (3×32×32, depth-wise convs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from exporters.onnx import export_fp32, export_qdq  # noqa: E402
from exporters.openvino import check_integer_openvino, export_ir, openvino_coverage  # noqa: E402
from pipeline.errors import ExportError  # noqa: E402
from pipeline.models import ModelCard, create_model  # noqa: E402
from pipeline.quant.calibrate import calibrate  # noqa: E402
from pipeline.quant.deploy import deployment_spec, io_contract  # noqa: E402
from pipeline.quant.prepare import quantize_model  # noqa: E402
from pipeline.quant.scheme import BitScheme  # noqa: E402

import runtimes  # noqa: E402
from tests.conftest import run_without_torch  # noqa: E402

N_INPUTS = 32
MAX_LSB = 3.0  # torch fake-quant vs integer kernels: 1 LSB rounding floor (docs/conversion.md §6), a few LSB allowed
CASES = {
    "resnet20": {"kwargs": {"in_channels": 1, "num_classes": 10}, "shape": (1, 28, 28)},
    "mobilenetv2": {"kwargs": {"in_channels": 3, "num_classes": 10}, "shape": (3, 32, 32)},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


class Case:
    """One model taken through quantize → QDQ ONNX → IR, with reference outputs on the same random inputs."""

    def __init__(self, name: str, folder: Path | None) -> None:
        spec = CASES[name]
        torch.manual_seed(0)
        self.name = name
        self.card = ModelCard(name, spec["shape"], 10)
        self.model = create_model(name, **spec["kwargs"]).eval()
        self.qmodel = quantize_model(self.model, BitScheme(8, 8, overflow_safe=True))  # as an openvino run trains it (auto)
        calibrate(self.qmodel, [torch.rand(8, *spec["shape"]) for _ in range(2)])
        self.qmodel.eval()
        self.spec = deployment_spec(self.qmodel, self.card)
        self.contract = io_contract(self.card)
        self.lsb = self.spec.output_scale
        self.x = torch.rand(N_INPUTS, *spec["shape"], generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            self.fp_out = self.model(self.x).numpy()
            self.fq_out = self.qmodel(self.x).numpy()
        self.folder = folder
        if folder is None:  # model and references only
            return
        self.onnx_q = export_qdq(self.spec, folder / "model.w8a8.onnx")
        self.onnx_fp = export_fp32(self.model, self.contract, folder / "model.fp32.onnx")
        self.ir_q = export_ir(self.onnx_q.path, folder / "model.w8a8.xml", "w8a8", self.contract)
        self.ir_fp = export_ir(self.onnx_fp.path, folder / "model.fp32.xml", "fp32", self.contract)


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory) -> Case:
    return Case(request.param, tmp_path_factory.mktemp(f"ov_{request.param}"))


def _compare(a: np.ndarray, b: np.ndarray, lsb: float | None = None) -> dict:
    diff = np.abs(a - b)
    out = {"argmax_agreement": float((a.argmax(1) == b.argmax(1)).mean()), "max_abs_diff": float(diff.max())}
    if lsb:
        out["max_abs_diff_lsb"] = float(diff.max()) / lsb
        out["mean_abs_diff_lsb"] = float(diff.mean()) / lsb
    return out


def test_ir_files_written_atomically(case: Case) -> None:
    for art in (case.ir_q, case.ir_fp):
        xml, bin_ = art.path, art.path.with_suffix(".bin")
        assert xml.exists() and bin_.exists()
        assert art.target == "openvino" and art.size_bytes == xml.stat().st_size + bin_.stat().st_size
        assert art.notes["weights_file"] == bin_.name and art.notes["compress_to_fp16"] is False
    assert not [p for p in case.folder.iterdir() if p.is_dir()], "temporary folder left behind"
    # int8 weights: the quantized IR's .bin is about a quarter of the FP32 one
    assert case.ir_q.notes["bin_bytes"] < 0.4 * case.ir_fp.notes["bin_bytes"]
    with pytest.raises(ExportError, match=r"\.xml"):
        export_ir(case.onnx_q.path, case.folder / "model.bin", "w8a8", case.contract)


def test_int8_ir_matches_ort_and_fake_quant(case: Case) -> None:
    ov_pred = runtimes.load(case.ir_q.path, threads=1)
    assert ov_pred.runtime == "openvino" and ov_pred.precision_hint == "f32" and ov_pred.inference_precision == "f32"
    assert ov_pred.inputs[0].shape == ("batch", *case.card.input_shape) and ov_pred.outputs[0].shape == ("batch", 10)
    ov_out = runtimes.predict_batched(ov_pred, case.x.numpy())
    ort_out = runtimes.predict_batched(runtimes.load(case.onnx_q.path, threads=1), case.x.numpy())
    assert ov_out.shape == case.fq_out.shape == ort_out.shape
    vs_fq = _compare(ov_out, case.fq_out, case.lsb)
    vs_ort = _compare(ov_out, ort_out, case.lsb)
    print(f"\n{case.name} OV int8 vs torch fake-quant: {vs_fq}\n{case.name} OV int8 vs ORT int8: {vs_ort}")
    for cmp in (vs_fq, vs_ort):
        assert cmp["argmax_agreement"] >= 0.95
        assert cmp["max_abs_diff_lsb"] <= MAX_LSB


def test_dynamic_batch(case: Case) -> None:
    pred = runtimes.load(case.ir_q.path, threads=1)
    x = case.x.numpy()
    full = pred.run({"input": x})["logits"]
    assert full.shape == (N_INPUTS, 10)
    one = np.concatenate([pred.run({"input": x[i : i + 1]})["logits"] for i in range(4)])
    np.testing.assert_allclose(full[:4], one, atol=1e-5)
    odd = runtimes.predict_batched(pred, x, batch_size=7)  # 7, 7, 7, 7, 4
    np.testing.assert_allclose(full, odd, atol=1e-5)


def test_integer_coverage(case: Case) -> None:
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in case.model.modules())
    cov = check_integer_openvino(case.ir_q, case.x[:1].numpy(), min_share=1.0)
    print(f"\n{case.name} OV runtime layers: {case.ir_q.notes['openvino_runtime_layers']}")
    assert cov.runtime == "openvino" and cov.share == 1.0 and cov.float_macs == 0 and not cov.float_nodes
    int_convs = cov.int_kernels.get("Convolution:u8", 0) + cov.int_kernels.get("Convolution:i8", 0)
    assert int_convs == n_convs  # every conv, depth-wise included, runs in int8
    assert cov.int_kernels.get("FullyConnected:u8", 0) + cov.int_kernels.get("FullyConnected:i8", 0) == 1
    assert not cov.float_kernels
    assert case.ir_q.notes["precision_hint"] == "f32" and case.ir_q.coverage is cov
    # the same reading without the gate, and the gate failing on the FP32 IR, naming its float convs
    assert openvino_coverage(case.ir_q.path, case.x[:1].numpy(), threads=1).int_macs == cov.int_macs
    with pytest.raises(ExportError, match=r"0\.0% of MACs.*Convolution:f32"):
        check_integer_openvino(case.ir_fp, case.x[:1].numpy(), min_share=1.0)
    assert case.ir_fp.coverage.float_kernels.get("Convolution:f32") == n_convs
    assert case.ir_fp.coverage.float_macs == cov.int_macs  # same layers, same MAC count


def test_fp32_ir_with_f32_hint_matches_torch(case: Case) -> None:
    pred = runtimes.load(case.ir_fp.path, threads=1, precision_hint="f32")
    assert pred.precision_hint == "f32" and pred.inference_precision == "f32"
    out = runtimes.predict_batched(pred, case.x.numpy())
    cmp = _compare(out, case.fp_out)
    print(f"\n{case.name} OV FP32 (hint f32) vs torch FP32: {cmp}")
    assert cmp["argmax_agreement"] == 1.0
    np.testing.assert_allclose(out, case.fp_out, rtol=1e-4, atol=1e-4 * float(np.abs(case.fp_out).max()))
    with pytest.raises(ValueError, match="precision_hint"):
        runtimes.load(case.ir_fp.path, precision_hint="fp32")


def test_export_stage_openvino_only(tmp_path: Path) -> None:
    """The pipeline's openvino format record alone: converts its own private ONNX intermediates (not kept), the IRs,
    the gate's notes, and export.json outputs that cover the .bin files."""
    from exporters import registry
    from exporters.format import ExportInputs
    from pipeline.config import build_config
    from pipeline.runner import RunContext, write_json
    from pipeline.stages.export import load_artifacts, outputs

    assert "openvino" in registry.names()
    c = Case("resnet20", None)  # the format writes every file itself, into run/
    cfg = build_config(cli={"export.targets": ["openvino"], "out": str(tmp_path / "run")})
    ctx = RunContext(cfg, tmp_path / "run", log=lambda m: None)
    ctx.run_dir.mkdir(parents=True)
    (name,) = registry.resolve(cfg.export.targets)
    fmt = registry.get(name)
    options = fmt.options(cfg.section("export"))
    inputs = ExportInputs(c.model, c.contract, c.spec, c.x[:1].numpy(), cfg.export.min_integer_coverage)
    arts = [fmt.write_float(inputs, ctx.layout.artifact("fp32", fmt.info), options),
            fmt.write_integer(inputs, ctx.layout.artifact(fmt.precision(c.spec, options), fmt.info), options)]
    assert [a.path.name for a in arts] == ["model.fp32.xml", "model.w8a8.xml"]
    # the ONNX intermediates are the format's own, converted in a temporary folder and not left in the run
    assert not (ctx.run_dir / "model.fp32.onnx").exists() and not (ctx.run_dir / "model.w8a8.onnx").exists()
    assert all("private intermediate" in a.notes["source_onnx"] for a in arts)
    assert not [p for p in ctx.run_dir.iterdir() if p.is_dir()], "temporary folder left behind"
    q = arts[1]
    assert q.coverage.share == 1.0 and q.notes["precision_hint"] == "f32" and arts[0].notes["precision_hint"] == "f32"
    assert q.notes["output_scale"] == pytest.approx(c.lsb)
    write_json(ctx.layout.export_index, {"artifacts": [a.to_dict(ctx.run_dir) for a in arts]})
    names = {p.name for p in outputs(ctx)}
    assert {"export.json", "model.fp32.xml", "model.fp32.bin", "model.w8a8.xml", "model.w8a8.bin"} <= names
    back = load_artifacts(ctx)
    assert back[1].coverage.share == 1.0 and back[1].target == "openvino"


def test_runtimes_load_xml_without_torch(case: Case) -> None:
    run_without_torch(
        "import sys, numpy as np, runtimes\n"
        "assert 'openvino' not in sys.modules, 'importing runtimes imported openvino'\n"
        f"p = runtimes.load({str(case.ir_q.path)!r})\n"
        f"y = runtimes.run_single(p, np.random.rand(2, {', '.join(map(str, case.card.input_shape))}).astype(np.float32))\n"
        "assert y.shape == (2, 10) and p.runtime == 'openvino'\n"
    )
