"""Per-layer bits and float layers (``qat.layer_bits``, ``qat.float_layers``): the resolution, the surgery, the deployment
spec, every exporter on its real runtime, and the integer gate that then says what it requires (docs/mixed-precision.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import fx, nn

from exporters.artifact import integer_gate, require_integer
from exporters.errors import ExportError
from pipeline.config import build_config
from pipeline.errors import ConfigError
from pipeline.quant import overflow
from pipeline.quant.modules import QConv2d, QLinear
from pipeline.quant.prepare import quantize_model
from pipeline.quant.quantizers import ActQuantizer
from pipeline.quant.scheme import BitScheme, layer_bits_option, resolve_layers
from runtimes.coverage import IntegerCoverage, read_coverage
from tests.conftest import ROOT

# The conv/linear layers of a ResNet-20 as the surgery names them (pipeline.quant.prepare.layer_names), trimmed.
NAMES = ("conv1", "layers.0.conv1", "layers.0.conv2", "layers.3.conv1", "layers.3.conv2", "layers.3.shortcut.0", "layers.8.conv1",
         "layers.8.conv2", "fc")
LAYERS_8 = {"layers.8.conv1": (8, 8), "layers.8.conv2": (8, 8)}
BLOCKS = ("layers.0.conv1", "layers.0.conv2", "layers.3.conv1", "layers.3.conv2", "layers.3.shortcut.0")


# --- the resolution: layer names + scheme + patterns -> each layer's bits and the float set ----------------------------

@pytest.mark.parametrize(("bits", "first_last", "layer_bits", "floats", "changed", "want_float"), [
    ("w4a4", None, {"layers.8.*": 8}, [], LAYERS_8, []),  # a glob; N means wNaN
    ("w4a4", None, {r"re:layers\.[03]\.conv1": "w6a5"}, [], {"layers.0.conv1": (6, 5), "layers.3.conv1": (6, 5)}, []),  # a regex
    ("w4a4", None, {"layers.*": "w6a6", "layers.8.*": 8}, [], {**{n: (6, 6) for n in BLOCKS}, **LAYERS_8}, []),  # the last wins
    ("w4a4", None, {"layers.8.*": 8, "layers.*": "w6a6"}, [], {n: (6, 6) for n in (*BLOCKS, *LAYERS_8)}, []),  # ... in order
    ("w4a4", 8, {}, [], {"conv1": (8, 8), "fc": (8, 4)}, []),  # first_last_bits as ever: first layer and its input, last layer
    ("w4a4", 8, {"conv1": "w5a5"}, [], {"conv1": (5, 5), "fc": (8, 4)}, []),  # layer_bits overrides first_last_bits
    ("w8a8", None, {"fc": "w4a8"}, ["layers.3.shortcut.?", "layers.0.*"], {"fc": (4, 8)},
     ["layers.0.conv1", "layers.0.conv2", "layers.3.shortcut.0"]),  # float layers, in network order
])
def test_resolution(bits, first_last, layer_bits, floats, changed, want_float):
    scheme = BitScheme.parse(bits, first_last, layer_bits=layer_bits, float_layers=floats)
    plan = resolve_layers(NAMES, scheme)
    base = (scheme.w_bits, scheme.a_bits)
    assert plan.float_layers == tuple(want_float)
    assert plan.bits == {n: changed.get(n, base) for n in NAMES if n not in want_float}


@pytest.mark.parametrize(("layer_bits", "floats", "fragments"), [
    ({"layers.9.*": 8}, [], ["qat.layer_bits pattern 'layers.9.*' matches no layer", "the model's 9 conv/linear layers: conv1, "
                             "layers.0.conv1,", "layers.8.conv2, fc"]),
    ({"re:layers": 8}, [], ["qat.layer_bits pattern 're:layers' matches no layer"]),  # a regex must match the whole name
    ({}, ["fx"], ["qat.float_layers pattern 'fx' matches no layer (did you mean 'fc'?)"]),
    ({"layers.8.*": 8, "fc": 8}, ["fc", "layers.8.conv2"],
     ["layers.8.conv2 (qat.layer_bits 'layers.8.*'), fc (qat.layer_bits 'fc') are also in qat.float_layers"]),
    ({}, ["*"], ["keeps every conv/linear layer in float"]),
])
def test_resolution_refuses_naming_the_layers(layer_bits, floats, fragments):
    with pytest.raises(ConfigError) as err:
        resolve_layers(NAMES, BitScheme.parse("w4a4", layer_bits=layer_bits, float_layers=floats))
    assert "\n" not in str(err.value)
    for f in fragments:
        assert f in str(err.value)


@pytest.mark.parametrize("bits", ["w9a8", "int8", "w8", "1", "w4a4a", True, 9, ""])
def test_bad_bits_fail_at_parse_time_saying_the_form(bits):
    with pytest.raises(ConfigError, match=r"bad bits .* for qat.layer_bits pattern 'fc': use wXaY \(e.g. w8a8, w4a8\) or one number N "
                                          r"meaning wNaN"):
        build_config(cli={"qat.layer_bits": {"fc": bits}})


def test_cli_items_yaml_and_set_give_one_spelling(tmp_path):
    assert layer_bits_option(["layers.8.*=8", "re:fc(?!x)=w4a8", "fc=4"]) == {"layers.8.*": "w8a8", "re:fc(?!x)": "w4a8", "fc": "w4a4"}
    with pytest.raises(ConfigError, match=r"bad --layer-bits 'fc': use PATTERN=BITS"):
        layer_bits_option(["fc"])
    with pytest.raises(ConfigError, match=r"bad regular expression 're:\(' in --layer-bits"):
        layer_bits_option(["re:(=8"])
    yaml = tmp_path / "zsq.yaml"
    yaml.write_text("qat:\n  bits: w4a4\n  layer_bits:\n    layers.8.*: 8\n    fc: w8a4\n  float_layers: [layers.0.conv1]\n")
    cfg = build_config(yaml_path=yaml)
    assert list(cfg.qat.layer_bits.items()) == [("layers.8.*", "w8a8"), ("fc", "w8a4")] and cfg.qat.float_layers == ["layers.0.conv1"]
    assert build_config(sets=["qat.layer_bits.layers.8.*=8"]).qat.layer_bits == {"layers.8.*": "w8a8"}
    # they are in the qat section, which the qat, export and check stages hash into their keys
    from pipeline.stages import STAGES

    assert {"layer_bits", "float_layers"} <= set(cfg.section("qat"))
    assert all("qat" in s.sections for s in STAGES if s.name in ("qat", "export", "check"))


def test_8bit_layers_in_a_w4_run_take_the_overflow_safe_grid():
    """A W4 run with some layers at 8 bits has 8-bit weights: on ±63 for onnx/openvino, as first_last_bits=8 always did."""
    assert overflow.resolve("auto", 4, None, ["onnx"], "deploy", {"layers.8.*": "w8a8"}) is True
    assert overflow.resolve("auto", 4, None, ["tflite"], "deploy", {"layers.8.*": "w8a8"}) is False  # XNNPACK cannot saturate
    assert overflow.resolve("auto", 4, None, ["onnx"], "deploy", {"layers.8.*": "w6a8"}) is False  # ±31 is inside ±63
    cfg = build_config(cli={"qat.bits": "w4a4", "qat.layer_bits": {"layers.8.*": "8"}, "export.targets": ["openvino"]})
    assert cfg.scheme.overflow_safe and cfg.scheme.has_8bit_weights


# --- the surgery on the bundled model ---------------------------------------------------------------------------------

def _feeding(q: fx.GraphModule) -> dict[str, int]:
    """The bits of the activation quantizer right before each quantized layer (the deploy profile puts one there)."""
    named = dict(q.named_modules())
    out = {}
    for node in q.graph.nodes:
        if node.op == "call_module" and isinstance(named[node.target], (QConv2d, QLinear)):
            src = node.args[0]
            assert isinstance(named[src.target], ActQuantizer), node.target
            out[node.target] = named[src.target].bits
    return out


@pytest.fixture(scope="module")
def mixed(bundled):
    """The bundled model at W4A4 with 8-bit last block, two shortcut readers asking different bits, a float fc; calibrated."""
    from pipeline.quant.calibrate import calibrate

    model, card = bundled
    scheme = BitScheme.parse("w4a4", overflow_safe=True, float_layers=["fc"],
                             layer_bits={"layers.8.*": 8, "layers.3.shortcut.0": "w4a6", "layers.3.conv1": "w4a5"})
    q = quantize_model(model, scheme)
    calibrate(q, [torch.rand(4, *card.input_shape, generator=torch.Generator().manual_seed(0))], "minmax", "minmax")  # fast: grids only
    return q.eval(), card, scheme


def test_surgery_gives_each_layer_its_bits_and_keeps_the_float_layer(mixed):
    q, _, _ = mixed
    named = dict(q.named_modules())
    meta = q.zsq_meta
    assert len(meta["layers"]) == 22 and meta["float_layers"] == ["fc"] and set(meta["layer_bits"]) == set(meta["layers"]) - {"fc"}
    assert type(named["fc"]) is nn.Linear  # no weight quantizer
    weights = {n: (named[n].wq.bits, named[n].wq.qmax) for n in meta["layer_bits"]}
    assert weights["layers.8.conv1"] == weights["layers.8.conv2"] == (8, 63)  # 8-bit layers on the overflow-safe grid
    assert {v for n, v in weights.items() if not n.startswith("layers.8.")} == {(4, 7)}
    feeding = _feeding(q)
    assert feeding["layers.8.conv1"] == feeding["layers.8.conv2"] == 8
    assert feeding["layers.3.conv1"] == feeding["layers.3.shortcut.0"] == 6  # one quantizer, two readers: the highest asked
    assert {feeding[n] for n in feeding if not n.startswith(("layers.8.", "layers.3.conv1", "layers.3.shortcut"))} == {4}
    assert meta["layer_bits"]["layers.3.conv1"] == "w4a6" and meta["layer_bits"]["layers.8.conv1"] == "w8a8"  # as built
    # the float layer reads the pool's quantizer and its output is quantized at 8 bits (the model output): Q/DQ around it
    fc = next(n for n in q.graph.nodes if n.target == "fc")
    assert isinstance(named[fc.args[0].args[0].target], ActQuantizer)  # fc(flatten(aq(pool)))
    (user,) = fc.users
    assert isinstance(named[user.target], ActQuantizer) and named[user.target].bits == 8


def test_spec_keeps_each_grid_and_records_the_float_layer(mixed):
    from pipeline.quant.deploy import deployment_spec

    q, card, scheme = mixed
    spec = deployment_spec(q, card, scheme)
    assert spec.float_layers == ("fc",) and type(spec.graph.fc) is nn.Linear
    assert spec.weight_qmax == 63  # the widest grid: what a device's saturation flag reads
    assert {m.grid.qmax for n, m in spec.layers().items() if not n.startswith("layers.8.")} == {7}
    notes = spec.training_notes()
    share = pytest.approx(640 / notes["layer_macs"], abs=1e-6)
    assert notes["float_layers"] == [{"name": "fc", "kind": "linear", "macs": 640, "share": share}]
    assert notes["layer_bits"]["layers.8.conv2"] == "w8a8" and notes["trained_bits"] == "w4a4" and "fc" not in notes["layer_bits"]
    assert "±63" in spec.weight_grid and "±7 (4-bit)" in spec.weight_grid
    assert torch.equal(spec.graph.fc.weight, q.fc.weight)  # the float layer computes with the trained float weights


# --- the integer gate with declared float layers ----------------------------------------------------------------------

ISLANDS = [{"name": "layers.4.conv1", "macs": 1000, "share": 0.1}, {"name": "fc", "macs": 10, "share": 0.001}]


def _coverage(floats: dict[str, int], int_macs: int = 8990, runtime: str = "onnxruntime") -> IntegerCoverage:
    cov = IntegerCoverage(runtime, 0, 0)
    cov.tally("QLinearConv", True, int_macs)
    for node, macs in floats.items():
        cov.tally(node.split()[-1].strip("()"), False, macs, node)
    return cov


def test_gate_requires_the_declared_layers_float_and_the_rest_integer():
    cov = _coverage({"/conv1/layer/Conv (Conv)": 1000, "/fc/layer/Gemm (Gemm)": 10})
    record = require_integer(cov, "m.onnx", 1.0, float_layers=ISLANDS, layer_macs=10_000)
    assert record["passed"] and record["undeclared_float_ops"] == [] and record["measured_share_outside_float_layers"] == 1.0
    assert record["float_layer_share"] == 0.101 and record["required_share"] == pytest.approx(0.899)
    assert [d["runtime_op"] for d in record["float_layers"]] == ["/conv1/layer/Conv (Conv)", "/fc/layer/Gemm (Gemm)"]


def test_gate_fails_on_an_undeclared_float_op_and_on_a_layer_the_runtime_quantized():
    cov = _coverage({"/conv1/layer/Conv (Conv)": 1000, "/fc/layer/Gemm (Gemm)": 10, "/other/Conv (Conv)": 5})
    with pytest.raises(ExportError) as err:
        require_integer(cov, "m.onnx", 1.0, float_layers=ISLANDS, layer_macs=10_000)
    assert str(err.value) == ("m.onnx: only 99.9% of the MACs outside the declared float layers (layers.4.conv1, fc) run in integer "
                              "on onnxruntime (required 100%); float ops: /other/Conv (Conv); quantize or replace these ops, or lower "
                              "export.min_integer_coverage to accept them in float, or declare them in qat.float_layers")
    assert require_integer(cov, "m.onnx", 0.99, float_layers=ISLANDS, layer_macs=10_000)["passed"]  # below 100 %: by its MACs
    cov.tally_unknown("Cumsum", True, 1, "/cumsum")  # deny by default, islands or not
    with pytest.raises(ExportError, match=r"float ops: /other/Conv \(Conv\), /cumsum \(Cumsum, unknown op"):
        require_integer(cov, "m.onnx", 1.0, float_layers=ISLANDS, layer_macs=10_000)
    quantized = _coverage({"/fc/layer/Gemm (Gemm)": 10}, int_macs=9990)  # the runtime ran layers.4.conv1 in integer itself
    with pytest.raises(ExportError, match=r"^m.onnx: declared float layer\(s\) layers.4.conv1 do not run in float on onnxruntime"):
        require_integer(quantized, "m.onnx", 0.5, float_layers=ISLANDS, layer_macs=10_000)
    structural = _coverage({"/conv1/layer/Conv (Conv)": 1000, "/fc/layer/Gemm (Gemm)": 10, "ADD#3 (ADD)": 0}, runtime="litert")
    with pytest.raises(ExportError, match=r"float ops: ADD#3 \(ADD\)"):  # LiteRT's rule: no float kernel outside the islands
        require_integer(structural, "m.tflite", 1.0, strict_kernels=True, float_layers=ISLANDS, layer_macs=10_000)


def test_gate_without_float_layers_says_what_it_always_said():
    cov = _coverage({"/c1/Conv (Conv)": 10})
    record, why = integer_gate(cov, "m.onnx", 1.0)
    assert why == (f"{cov.shortfall('m.onnx', 1.0)}; quantize or replace these ops, or lower export.min_integer_coverage to accept "
                   "them in float")
    assert record == {"min_integer_coverage": 1.0, "measured_share": round(cov.share, 6), "required_share": 1.0, "passed": False}


# --- one pipeline run to export, every target ------------------------------------------------------------------------

FLOATS = ["fc", "layers.4.conv1"]
# W4A8 (the fake-quant model is what the runtimes execute, so the parity bounds are the uniform tests'), the last block at
# 8 bits (so the run has 8-bit weights: the overflow-safe grid), a float conv in the middle and the float classifier.
FLAGS = ["--budget", "tiny", "--target", "all", "--bits", "w4a8", "--layer-bits", "layers.8.*=8",
         *(a for f in FLOATS for a in ("--float-layer", f))]
# The cheapest run that still trains and exports: parity is artifact vs fake-quant, whatever the images look like.
CHEAP = ["synthesis.options.iterations=2", "synthesis.holdout_options.iterations=2", "synthesis.num_images=16",
         "synthesis.holdout_images=16", "qat.steps=2", "qat.calib_images=16", "qat.batch_size=16"]
# Each target's float ops for a conv and a linear layer, as its coverage reader names them.
FLOAT_KERNELS = {"onnx": {"Conv", "FusedConv", "Gemm"}, "openvino": {"Convolution:f32", "FullyConnected:f32"},
                 "tflite": {"CONV_2D", "FULLY_CONNECTED"}}
# The parity bounds of tests/test_onnx_export.py, test_openvino.py and test_tflite.py (max output LSBs, top-1 agreement).
PARITY = {"onnx": (3.0, 0.9), "openvino": (3.0, 0.95), "tflite": (3.0, 0.99)}


def _pipeline(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZSQ_QUIET": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mixed") / "run"
    res = _pipeline("export", *FLAGS, *(a for s in CHEAP for a in ("--set", s)), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def _context(out: Path):
    """The run's context, from the config the flags mean (the test checks the run wrote the same one)."""
    from pipeline.runner import RunContext

    cfg = build_config("tiny", None, {"qat.bits": "w4a8", "qat.layer_bits": {"layers.8.*": "8"}, "qat.float_layers": FLOATS,
                                      "export.targets": ["all"], "out": str(out)}, CHEAP)
    return RunContext(cfg, out, log=lambda m: None)


def test_flags_reach_the_qat_section(mixed_run):
    written = json.loads((mixed_run / "config.json").read_text())["_data"]["qat"]
    assert written["layer_bits"] == {"layers.8.*": "w8a8"} and written["float_layers"] == FLOATS, \
        "pipeline/cli/run.py must map --layer-bits / --float-layer to qat.layer_bits / qat.float_layers"
    assert written == _context(mixed_run).cfg.section("qat")
    meta = json.loads((mixed_run / "qat" / "qat.json").read_text())["meta"]
    assert meta["float_layers"] == ["layers.4.conv1", "fc"] and meta["layer_bits"]["layers.8.conv1"] == "w8a8"


def test_every_target_runs_the_islands_in_float_and_the_rest_integer(mixed_run):
    index = {a["target"]: a for a in json.loads((mixed_run / "export.json").read_text())["artifacts"] if a["precision"] != "fp32"}
    assert set(index) == {"onnx", "openvino", "tflite"} and all(a["precision"] == "w4a8" for a in index.values())
    for name in ("model.fp32.onnx", "model.fp32.xml", "model.fp32.bin", "model.fp32.tflite", "model.w4a8.bin"):
        assert (mixed_run / name).is_file(), name
    sample = np.load(mixed_run / "synthetic" / "holdout.npz")["images"][:1]
    for target, art in index.items():
        notes, gate = art["notes"], art["notes"]["integer_gate"]
        assert [d["name"] for d in notes["float_layers"]] == ["layers.4.conv1", "fc"], target
        island_macs = sorted(d["macs"] for d in notes["float_layers"])
        assert notes["layer_bits"]["layers.8.conv1"] == "w8a8" and notes["layer_bits"]["layers.0.conv1"] == "w4a8"
        assert notes["weight_qmax"] == 63 and notes["overflow_safe"] is True  # the 8-bit layers' grid, for the device's flag
        assert gate["passed"] and gate["undeclared_float_ops"] == [] and gate["measured_share_outside_float_layers"] == 1.0
        assert gate["required_share"] == pytest.approx(1 - gate["float_layer_share"]) and all(d["runtime_op"] for d in gate["float_layers"])
        cov = read_coverage(mixed_run / art["path"], sample)  # read from the runtime itself, now
        assert sorted(cov.float_node_macs) == island_macs and len(cov.float_nodes) == 2, (target, cov.float_nodes)
        assert set(cov.float_kernels) <= FLOAT_KERNELS[target] and cov.int_macs > 0 and not cov.unrecognised, (target, cov)
        assert cov.share == pytest.approx(gate["required_share"], abs=2e-6), target
    # the report's schema takes the new notes; its "trained vs deployed bits" lines say what the layers got
    from pipeline.reporting.html import bits_explanation
    from pipeline.reporting.schema import REPORT_SCHEMA, validate

    assert all(validate(a, {"$defs": REPORT_SCHEMA["$defs"], "$ref": "#/$defs/artifact"}) == [] for a in index.values())
    qat = json.loads((mixed_run / "qat" / "qat.json").read_text())
    lines = bits_explanation({"qat": qat, "artifacts": list(index.values())})
    assert len(lines) == 3 and all("integers within ±7" in line and "per-layer bits (qat.layer_bits): layers.8.conv1 w8a8, "
                                   "layers.8.conv2 w8a8; every other quantized layer w4a8" in line and "kept in float "
                                   "(qat.float_layers): layers.4.conv1, fc (5.8% of the MACs)" in line and "(measured 100.0%)" in line
                                   for line in lines), lines


def test_artifacts_agree_with_the_fake_quant_model_as_a_uniform_run(mixed_run):
    import runtimes
    from pipeline.quant.qat import predict
    from pipeline.stages.qat import load_student

    student = load_student(_context(mixed_run))  # rebuilt from the config: the same islands and bits as trained
    assert student.zsq_meta["float_layers"] == ["layers.4.conv1", "fc"] and type(student.fc) is nn.Linear
    images = np.load(mixed_run / "synthetic" / "holdout.npz")["images"]
    fq = predict(student, torch.from_numpy(images)).numpy()
    for art in json.loads((mixed_run / "export.json").read_text())["artifacts"]:
        if art["precision"] == "fp32":
            continue
        y = runtimes.predict_batched(runtimes.load(mixed_run / art["path"]), images)
        lsb, agree = float(np.abs(y - fq).max() / art["notes"]["output_scale"]), float((y.argmax(1) == fq.argmax(1)).mean())
        max_lsb, min_agree = PARITY[art["target"]]
        assert lsb <= max_lsb and agree >= min_agree, (art["path"], lsb, agree)


def test_an_undeclared_float_op_still_fails_on_each_runtime(mixed_run, tmp_path):
    """The run's artifacts with one of their two float layers left undeclared: each runtime's gate names the other op."""
    from exporters.artifact import Artifact
    from exporters.onnx import check_integer
    from exporters.openvino import check_integer_openvino
    from exporters.tflite import check_integer_tflite

    sample = np.load(mixed_run / "synthetic" / "holdout.npz")["images"][:1]
    for d in json.loads((mixed_run / "export.json").read_text())["artifacts"]:
        if d["precision"] == "fp32":
            continue
        art = Artifact.from_dict(d, mixed_run)
        art.notes["float_layers"] = [f for f in art.notes["float_layers"] if f["name"] == "fc"]  # layers.4.conv1 undeclared
        check = {"onnx": lambda a: check_integer(a, sample, 1.0), "openvino": lambda a: check_integer_openvino(a, sample, 1.0),
                 "tflite": lambda a: check_integer_tflite(a, 1.0)}[d["target"]]
        with pytest.raises(ExportError, match=r"of the MACs outside the declared float layers \(fc\) run in integer .* float ops: "):
            check(art)
        assert art.notes["integer_gate"]["passed"] is False and len(art.notes["integer_gate"]["undeclared_float_ops"]) == 1
        del art.notes["float_layers"]  # none declared: today's message
        with pytest.raises(ExportError, match=r": only 94\.\d% of MACs run in integer on .* \(required 100%\); float ops: .*\(2 in all\)"):
            check(art)


def test_a_student_from_another_plan_is_one_line(mixed_run, tmp_path):
    from pipeline.errors import UserError
    from pipeline.runner import RunContext
    from pipeline.stages.qat import load_student

    run = tmp_path / "run"
    shutil.copytree(mixed_run, run, ignore=shutil.ignore_patterns(".lock", "*.onnx", "*.xml", "*.bin", "*.tflite"))
    ctx = _context(run)
    other = build_config("tiny", None, {"qat.bits": "w4a8", "qat.layer_bits": {"layers.8.*": "8"}, "qat.float_layers": ["fc"],
                                        "export.targets": ["all"], "out": str(run)}, CHEAP)
    with pytest.raises(UserError, match=r"was trained as another model than this config builds \(layer_bits, float_layers differ\): "
                                        r"redo the qat stage \(--from qat\)$"):
        load_student(RunContext(other, run, log=lambda m: None))
    assert load_student(ctx) is not None


def test_an_unmatched_pattern_or_bad_bits_exit_3_before_synthesis(tmp_path):
    from tests.test_bad_input import assert_one_line_error

    out = tmp_path / "run"
    cheap = [a for s in CHEAP for a in ("--set", s)]
    res = _pipeline("synth", "--budget", "tiny", *cheap, "--layer-bits", "layers.9.*=8", "--float-layer", "fc", "--out", str(out))
    assert_one_line_error(res, "qat.layer_bits pattern 'layers.9.*' matches no layer", "conv1, layers.0.conv1,", "layers.8.conv2, fc")
    assert not (out / "synthetic").exists(), "synthesis ran before the pattern was checked"
    res = _pipeline("synth", "--budget", "tiny", *cheap, "--layer-bits", "fc=w9a8", "--out", str(out))
    assert_one_line_error(res, "bad bits 'w9a8'", "use wXaY (e.g. w8a8, w4a8) or one number N meaning wNaN")
