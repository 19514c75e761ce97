"""Bad config and unconvertible models: one line, exit code 2, before any stage runs where that is possible.

* config values that cannot mean anything (a key below a scalar, NaN/inf/negative/zero rates, booleans where
  numbers go, empty or repeated targets, a folder or a non-mapping as ``--config``, unknown or bad method
  options) fail in :func:`pipeline.config.build_config`, with the key and what is valid;
* :func:`pipeline.preflight.check_config` checks what needs the filesystem (``--eval-data``, ``--calib-data``)
  and :func:`pipeline.preflight.check_model` the model (BatchNorm for synthesis, a route for every op on every
  requested target, through :func:`exporters.preflight.check_routes`), all without running a stage;
* an op a converter cannot handle (torch.onnx, litert-torch, OpenVINO) is an ``ExportError`` naming the op
  and the target, with no artifact left, through the real converters.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from exporters.errors import ExportError
from pipeline.config import build_config
from pipeline.errors import ConfigError, UserError
from tests.faults_doc import Fault, by_test
from tests.test_bad_input import FAST, assert_one_line_error, pipeline

LATE = "Errors that arrive too late or as tracebacks"

FAULTS = [
    Fault(LATE, "`--set qat.steps.x=1` (a key below a plain value)", "one line naming the key, exit 3 (was a TypeError traceback)",
          "test_key_below_a_scalar_is_one_line", "qat.steps is a single value, not a mapping", 3),
    Fault(LATE, "`--config` a folder, a missing file, not YAML, not a mapping, binary",
          "one line each, nothing runs (a folder was an IsADirectoryError traceback, binary a UnicodeDecodeError)",
          "test_config_file_that_is_not_a_yaml_mapping", "is a folder, not a YAML file"),
    Fault(LATE, "`qat.lr` NaN, inf, negative or zero (and every other numeric field out of its range)",
          "one line with the key and its range (NaN was accepted and trained on)", "test_numbers_out_of_range_are_refused",
          "qat.lr must be > 0"),
    Fault(LATE, "`--set qat.steps=true` (a boolean where an integer goes)", "one line (was 1 step)",
          "test_boolean_where_a_number_goes", "expected int, got a boolean"),
    Fault(LATE, "`--target ''`", "one line listing the targets (was a silent onnx run)", "test_empty_target", "no target given", 3),
    Fault(LATE, "`--target onnx,onnx`", "one line: each target once (aliases and `all` still merge)",
          "test_repeated_target_is_refused", "'onnx' is listed twice"),
    Fault(LATE, "unknown method option (`synthesis.options.iterationz`) or bad value (NaN, text, 0 iterations)",
          "one line with the closest option, before synthesis (was found by the synth stage, or never)",
          "test_method_options_are_checked_with_the_config", "did you mean 'iterations'"),
    Fault(LATE, "`--method zaq --budget paper`", "runs with zaq's own defaults (was refused by the synth stage: bn-inversion's options)",
          "test_every_method_and_budget_resolves_to_options_the_method_has"),
    Fault(LATE, "`--eval-data`/`--calib-data` missing, a `.npy`, an `.npz` without labels, calib data for a data-free method",
          "one line listing every problem, before the first stage", "test_data_paths_are_checked_before_any_stage",
          "check.eval_data"),
    Fault(LATE, "a model without BatchNorm, with any method (zaq included)",
          "one line that says no method can run it (the held-out set is always bn-inversion), suggesting none",
          "test_no_batchnorm_suggests_no_method_that_needs_it", "held-out check images are always made by bn-inversion"),
    Fault(LATE, "an op with no ONNX export (`torch.fft.rfft`) on onnx / openvino",
          "one line naming `aten::fft_rfft` and the targets, no file (was an UnsupportedOperatorError traceback)",
          "test_onnx_unsupported_op_is_named_with_its_target", "no ONNX export for 'aten::fft_rfft'"),
    Fault(LATE, "an ONNX op OpenVINO cannot convert (`Bernoulli`)",
          "one line naming the op and the target, no IR left (was only the converter's C++ source location)",
          "test_openvino_unconvertible_op_is_named", "OpenVINO cannot convert the ONNX op(s) Bernoulli"),
    Fault(LATE, "an op litert-torch writes but LiteRT cannot run (`torch.sort` → `STABLEHLO_SORT`)",
          "one line naming the op and the target, no file (was a ValueError traceback)", "test_tflite_op_without_a_kernel_is_named",
          "LiteRT has no kernel for STABLEHLO_SORT"),
    Fault(LATE, "`pipeline export` of a model with `torch.fft.rfft`", "one line before any stage, exit 4 (the export gate), no artifact, no temp files (was a traceback)",
          "test_cli_unsupported_op_is_one_line_and_leaves_nothing", "aten::fft_rfft", 4),
    Fault(LATE, "ops with no route on a requested target, an untraceable forward",
          "named with op, target and source line before any stage, converting nothing (was: after synthesis and QAT)",
          "test_check_routes_names_each_op_and_target", "torch.fx"),
]
ROW = by_test(FAULTS)

MODEL_PY = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, kind="plain", bn=True):
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2) if kind == "deconv" else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.up(torch.relu(self.bn(self.conv(x))))
        if self.kind == "fft":  # spectral magnitude: torch.onnx has no opset-17 export of aten::fft_rfft
            x = x + torch.fft.rfft(x, dim=-1).abs().mean(-1, keepdim=True)
        elif self.kind == "sort":  # litert-torch writes STABLEHLO_SORT, which the LiteRT interpreter cannot run
            x = torch.sort(x, dim=-1).values
        elif self.kind == "dynamic" and x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 2
        return self.fc(torch.flatten(self.pool(x), 1))


def build():
    return Net()


def build_fft():
    return Net("fft")


def build_sort():
    return Net("sort")


def build_deconv():
    return Net("deconv")


def build_dynamic():
    return Net("dynamic")


def build_no_bn():
    return Net(bn=False)
'''


@pytest.fixture(scope="module")
def user_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("user")
    (d / "nets.py").write_text(MODEL_PY)
    return d / "nets.py"


def _build(path: Path, factory: str) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("zsq_test_nets", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    return getattr(mod, factory)().eval()


# ---------------------------------------------------------------- config values

def test_key_below_a_scalar_is_one_line(tmp_path):
    res = pipeline("run", "--set", "qat.steps.x=1", "--out", str(tmp_path / "run"))
    assert_one_line_error(res, ROW["test_key_below_a_scalar_is_one_line"].message, "qat.steps=",
                          code=ROW["test_key_below_a_scalar_is_one_line"].exit_code)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="qat.bits is a single value"):
        build_config(sets=["qat.bits.x=1"])


def test_config_file_that_is_not_a_yaml_mapping(tmp_path):
    with pytest.raises(ConfigError, match=ROW["test_config_file_that_is_not_a_yaml_mapping"].message):
        build_config(yaml_path=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(yaml_path=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("qat: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(yaml_path=bad)
    bad.write_text("- qat\n- steps\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        build_config(yaml_path=bad)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(ConfigError, match="not a text file"):
        build_config(yaml_path=bad)


@pytest.mark.parametrize(("sets", "message"), [
    (["qat.lr=nan"], r"qat.lr must be > 0"),
    (["qat.lr=.inf"], r"qat.lr must be > 0, got inf"),
    (["qat.lr=-1e-4"], r"qat.lr must be > 0, got -0.0001"),
    (["qat.lr=0"], r"qat.lr must be > 0, got 0.0"),
    (["qat.quant_lr=0"], r"qat.quant_lr must be > 0"),
    (["qat.temperature=0"], r"qat.temperature must be > 0"),
    (["qat.ce_weight=-1"], r"qat.ce_weight must be >= 0"),
    (["qat.steps=-1"], r"qat.steps must be >= 0"),
    (["qat.batch_size=0"], r"qat.batch_size must be >= 1"),
    (["qat.calib_images=0"], r"qat.calib_images must be >= 1"),
    (["qat.seed=-1"], r"qat.seed must be >= 0"),
    (["synthesis.num_images=1"], r"synthesis.num_images must be >= 2"),
    (["synthesis.holdout_images=0"], r"synthesis.holdout_images must be >= 1"),
    (["export.min_integer_coverage=nan"], r"export.min_integer_coverage must be in \[0, 1\], got nan"),
    (["export.min_integer_coverage=1.5"], r"export.min_integer_coverage must be in \[0, 1\]"),
    (["check.threads=0"], r"check.threads must be >= 1"),
    (["check.eval_limit=0"], r"check.eval_limit must be >= 1"),
    (["check.min_secs=nan"], r"check.min_secs must be >= 0, got nan"),
    (["model.num_classes=0"], r"model.num_classes must be >= 1"),
    (["model.std=[0.5,0]"], r"model.std\[1\] must be > 0"),
    (["model.mean=[0.5,.nan]"], r"model.mean\[1\] must be a finite number"),
    (["model.pixel_range=[1,0]"], r"model.pixel_range must be two numbers \[low, high\] with low < high"),
])
def test_numbers_out_of_range_are_refused(sets, message):
    if sets == ["qat.lr=nan"]:
        assert ROW["test_numbers_out_of_range_are_refused"].message in message
    with pytest.raises(ConfigError, match=message):
        build_config(sets=sets)


def test_boolean_where_a_number_goes(tmp_path):
    with pytest.raises(ConfigError, match=ROW["test_boolean_where_a_number_goes"].message):
        build_config(sets=["qat.steps=true"])
    y = tmp_path / "zsq.yaml"
    y.write_text("qat:\n  lr: yes\n")
    with pytest.raises(ConfigError, match=r"bad value True for qat.lr: expected float, got a boolean"):
        build_config(yaml_path=y)
    with pytest.raises(ConfigError, match=r"bad value 3 for check.bench: expected bool"):
        build_config(sets=["check.bench=3"])
    assert build_config(sets=["check.bench=0"]).check.bench is False  # 0/1 stay booleans


def test_empty_target(tmp_path):
    with pytest.raises(ConfigError, match=ROW["test_empty_target"].message):
        build_config(sets=["export.targets="])
    with pytest.raises(ConfigError, match=ROW["test_empty_target"].message):
        build_config(cli={"export.targets": [""]})
    # --dry-run and the tiny budget: should an empty target ever be taken for the default again, this fails in seconds
    res = pipeline("run", "--target", "", "--dry-run", "--out", str(tmp_path / "run"), *FAST)
    assert_one_line_error(res, ROW["test_empty_target"].message, "onnx, openvino, tflite", code=ROW["test_empty_target"].exit_code)
    assert not (tmp_path / "run").exists()


def test_repeated_target_is_refused():
    with pytest.raises(ConfigError, match=ROW["test_repeated_target_is_refused"].message):
        build_config(cli={"export.targets": ["onnx", "onnx"]})
    with pytest.raises(ConfigError, match="'tflite' is listed twice"):
        build_config(sets=["export.targets=tflite,onnx,tflite"])
    # one format named two ways, or inside "all", is not a slip: it is exported once, in the user's order
    assert build_config(sets=["export.targets=ort,onnx"]).export.targets == ["onnx"]
    assert build_config(sets=["export.targets=all,tflite"]).export.targets == ["onnx", "openvino", "tflite"]


@pytest.mark.parametrize(("sets", "message"), [
    (["synthesis.options.iterationz=3"], r"method 'bn-inversion' has no option 'iterationz'; did you mean 'iterations'\?"),
    (["synthesis.holdout_options.btach_size=3"], r"synthesis.holdout_options: method 'bn-inversion' has no option 'btach_size'; "
                                                 r"did you mean 'batch_size'\?"),
    (["synthesis.method=gdfq", "synthesis.options.iterations=3"], r"method 'gdfq' has no option 'iterations'"),
    (["synthesis.options.lr=.nan"], r"synthesis.options.lr must be > 0, got nan"),
    (["synthesis.options.lr=-0.1"], r"synthesis.options.lr must be > 0"),
    (["synthesis.options.iterations=abc"], r"bad value 'abc' for synthesis.options.iterations: expected int"),
    (["synthesis.options.iterations=0"], r"synthesis.options.iterations must be >= 1"),
    (["synthesis.options.flip=3"], r"bad value 3 for synthesis.options.flip: expected bool"),
    (["synthesis.options.stat_loss=l3"], r"method 'bn-inversion': stat_loss must be one of mse, l2, per-sample"),
    (["synthesis.method=zaq", "synthesis.options.latent_dim=0"], r"method 'zaq': latent_dim >= 1"),
])
def test_method_options_are_checked_with_the_config(sets, message):
    if sets == ["synthesis.options.iterationz=3"]:
        assert ROW["test_method_options_are_checked_with_the_config"].message in message.replace("\\", "")
    with pytest.raises(ConfigError, match=message):
        build_config(sets=sets)


def test_every_method_and_budget_resolves_to_options_the_method_has():
    """``--method zaq --budget paper`` handed zaq bn-inversion's options and failed in the synth stage; now every pair resolves."""
    from pipeline.config import budget_names
    from pipeline.synthesis import create_method, list_methods

    for method in list_methods():
        for budget in budget_names():
            cfg = build_config(budget, sets=[f"synthesis.method={method}"])
            create_method(method, cfg.synthesis.options)  # the synth stage's own check
    assert build_config("paper", sets=["synthesis.method=zaq"]).synthesis.options == {}  # zaq's defaults are its paper's


def test_method_options_keep_their_values():
    cfg = build_config("tiny", sets=["synthesis.options.iterations=7", "synthesis.options.lr=0.2"])
    assert cfg.synthesis.options == {"batch_size": 64, "iterations": 7, "lr": 0.2}
    assert build_config("fast", sets=["synthesis.method=gdfq"]).synthesis.options["warmup_steps"] == 200


# ---------------------------------------------------------------- preflight: paths and the model

def test_data_paths_are_checked_before_any_stage(tmp_path):
    from pipeline.preflight import check_config

    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((2, 1, 28, 28), np.float32))
    cfg = build_config(cli={"check.eval_data": str(tmp_path / "missing"), "synthesis.calib_data": str(npy)})
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    line = str(err.value)
    assert "\n" not in line
    assert ROW["test_data_paths_are_checked_before_any_stage"].message in line
    assert f"check.eval_data {tmp_path / 'missing'} does not exist" in line
    assert "synthesis.calib_data" in line and "a .npy file" in line
    assert "is only used by methods that need real images" in line  # bn-inversion is data-free
    no_labels = tmp_path / "e.npz"
    np.savez(no_labels, images=np.zeros((2, 1, 28, 28), np.float32))
    empty = tmp_path / "folder"
    (empty / ".ipynb_checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"e.npz has no 'labels' array.*no class sub-folders"):
        check_config(build_config(cli={"check.eval_data": str(no_labels), "synthesis.method": "fdda", "synthesis.calib_data": str(empty)}))
    with pytest.raises(ConfigError, match=r"method 'fdda' is not data-free: give --calib-data"):
        check_config(build_config(cli={"synthesis.method": "fdda"}))
    good = tmp_path / "good.npz"
    np.savez(good, images=np.zeros((2, 1, 28, 28), np.float32), labels=np.zeros(2, np.int64))
    check_config(build_config(cli={"check.eval_data": str(good)}))  # no error


def test_no_batchnorm_suggests_no_method_that_needs_it(user_model):
    from pipeline.models.card import ModelCard
    from pipeline.preflight import check_model
    from pipeline.synthesis import list_methods

    model = _build(user_model, "build_no_bn")
    card = ModelCard(name="nets", input_shape=(1, 28, 28), num_classes=10)
    for method in ("zaq", "bn-inversion"):
        cfg = build_config(sets=[f"synthesis.method={method}"])
        with pytest.raises(UserError) as err:
            check_model(cfg, model, card)
        line = str(err.value)
        assert "no BatchNorm2d" in line and ROW["test_no_batchnorm_suggests_no_method_that_needs_it"].message in line
        # no "try method X" for any method: none of them can run without BN here
        assert "try" not in line and "use --method" not in line
        assert all(m in line for m in list_methods() if m != "zaq")


# ---------------------------------------------------------------- conversion errors, through the real converters

def _inputs(model: torch.nn.Module):
    from exporters.format import ExportInputs
    from exporters.spec import IOContract

    contract = IOContract("nets", (1, 28, 28), 10)
    return ExportInputs(model, contract, None, np.random.rand(2, 1, 28, 28).astype(np.float32))


def test_onnx_unsupported_op_is_named_with_its_target(tmp_path, user_model):
    from exporters import registry

    model = _build(user_model, "build_fft")
    for target, name in (("onnx", "model.fp32.onnx"), ("openvino", "model.fp32.xml")):
        with pytest.raises(ExportError) as err:
            registry.get(target).write_float(_inputs(model), tmp_path / name)
        line = str(err.value)
        assert "\n" not in line
        assert ROW["test_onnx_unsupported_op_is_named_with_its_target"].message in line
        assert "onnx and openvino" in line and "--target tflite" in line
    assert list(tmp_path.iterdir()) == []  # no artifact, no temp folder


def _bernoulli_onnx(path: Path) -> None:
    """A one-node ONNX model of a standard op (opset 17) that OpenVINO's ONNX frontend has no conversion rule for."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Bernoulli", ["input"], ["logits"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_openvino_unconvertible_op_is_named(tmp_path):
    from exporters.openvino import export_ir
    from exporters.spec import IOContract

    src = tmp_path / "src"
    src.mkdir()
    _bernoulli_onnx(src / "model.fp32.onnx")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ExportError) as err:
        export_ir(src / "model.fp32.onnx", out / "model.fp32.xml", "fp32", IOContract("m", (1, 2, 2), 4))
    line = str(err.value)
    assert "\n" not in line
    assert ROW["test_openvino_unconvertible_op_is_named"].message in line
    assert "openvino target" in line and "model.fp32.xml" in line
    assert list(out.iterdir()) == []


def test_tflite_op_without_a_kernel_is_named(tmp_path, user_model):
    from exporters import registry

    with pytest.raises(ExportError) as err:
        registry.get("tflite").write_float(_inputs(_build(user_model, "build_sort")), tmp_path / "model.fp32.tflite")
    line = str(err.value)
    assert "\n" not in line
    assert ROW["test_tflite_op_without_a_kernel_is_named"].message in line
    assert "tflite target" in line and "model.fp32.tflite" in line and "--target onnx" in line
    assert list(tmp_path.iterdir()) == []


def test_cli_unsupported_op_is_one_line_and_leaves_nothing(tmp_path, user_model):
    run = tmp_path / "run"
    res = pipeline("export", "--model", f"{user_model}:build_fft", "--input-shape", "1,28,28", "--target", "onnx", "--out", str(run), *FAST)
    assert_one_line_error(res, ROW["test_cli_unsupported_op_is_one_line_and_leaves_nothing"].message, "onnx",
                          code=ROW["test_cli_unsupported_op_is_one_line_and_leaves_nothing"].exit_code)
    assert "Torch IR graph" not in res.stderr  # torch.onnx's C++ log of the whole graph stays off the terminal
    assert not list(run.glob("model.*")) and not list(run.rglob("*.tmp*")) and not list(run.glob(".model*"))


# ---------------------------------------------------------------- routes, without converting

def test_check_routes_is_clean_on_the_bundled_model():
    from exporters.preflight import check_routes
    from pipeline.config import ModelConfig
    from pipeline.models.loading import load_model

    model, card = load_model(ModelConfig())
    assert check_routes(model, card.input_shape, ["onnx", "openvino", "tflite"]) == []


def test_check_routes_names_each_op_and_target(user_model):
    from exporters.preflight import check_routes, raise_for

    every = ["onnx", "openvino", "tflite"]
    fft = check_routes(_build(user_model, "build_fft"), (1, 28, 28), every)
    assert {(p.target, p.op) for p in fft if p.fatal} == {("onnx", "aten::fft_rfft"), ("openvino", "aten::fft_rfft")}
    assert all("nets.py" in p.where for p in fft)  # the user's source line
    srt = check_routes(_build(user_model, "build_sort"), (1, 28, 28), every)
    assert {(p.target, p.op) for p in srt if p.fatal} == {("tflite", "aten::sort")}
    dyn = check_routes(_build(user_model, "build_dynamic"), (1, 28, 28), every)
    assert [p.op for p in dyn] == ["torch.fx"] and dyn[0].fatal
    assert ROW["test_check_routes_names_each_op_and_target"].message in dyn[0].message
    deconv = check_routes(_build(user_model, "build_deconv"), (1, 28, 28), ["onnx"])
    assert [(p.op, p.fatal) for p in deconv] == [("ConvTranspose2d", False)]  # a warning: the integer gate decides
    assert "export.min_integer_coverage" in deconv[0].message
    with pytest.raises(ExportError) as err:
        raise_for(fft + srt)
    line = str(err.value)
    assert "\n" not in line and line.count("aten::fft_rfft") == 1 and "aten::sort" in line  # one entry per op, targets merged
    raise_for(deconv)  # warnings only: no error


def test_check_routes_agrees_with_the_model_zoo():
    """Every zoo architecture exports on every target today, so the route check must find nothing in any."""
    from exporters.preflight import check_routes
    from pipeline.models import create_model
    from pipeline.models.registry import list_models

    for name in list_models():
        model = create_model(name, in_channels=3, num_classes=10).eval()
        assert [p for p in check_routes(model, (3, 32, 32), ["onnx", "openvino", "tflite"]) if p.fatal] == [], name
