"""Config precedence, typed overrides and their errors."""

from __future__ import annotations

import pytest

from pipeline.config import build_config
from pipeline.errors import ConfigError


def test_precedence_defaults_budget_yaml_cli_set(tmp_path):
    y = tmp_path / "zsq.yaml"
    y.write_text("qat:\n  steps: 50\n  bits: w4a4\nsynthesis:\n  num_images: 100\n  options: {iterations: 7}\n")
    cfg = build_config("tiny", y, {"qat.bits": "w3a3"}, ["qat.steps=2000", "synthesis.options.batch_size=16", "check.bench=false"])
    assert cfg.qat.steps == 2000  # --set wins over YAML
    assert cfg.qat.bits == "w3a3"  # CLI flag wins over YAML
    assert cfg.synthesis.num_images == 100  # YAML wins over the budget
    assert cfg.synthesis.options == {"iterations": 7, "batch_size": 16}
    assert cfg.check.bench is False
    assert cfg.qat.lr == 1e-5  # untouched default


def test_set_values_are_typed():
    cfg = build_config(sets=["qat.lr=3e-4", "export.targets=onnx", "qat.first_last_bits=8"])
    assert cfg.qat.lr == 3e-4 and cfg.export.targets == ["onnx"] and cfg.qat.first_last_bits == 8


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["qat.stepz=3"], "did you mean qat.steps"),
        (["qta.steps=3"], "did you mean 'qat'"),
        (["qat.steps=many"], "bad value 'many' for qat.steps"),
        (["qat.bits=int8"], "bad bit preset"),
        (["export.targets=coreml"], "unknown target"),
        (["qat.steps"], "use section.key=value"),
        (["synthesis.holdout_seed=0"], "must differ"),
    ],
)
def test_bad_overrides_fail_with_a_hint(sets, message):
    with pytest.raises(ConfigError, match=message):
        build_config(sets=sets)


def test_config_snapshot_round_trips(tmp_path):
    import yaml

    cfg = build_config("tiny", sets=["qat.bits=w4a4"])
    path = tmp_path / "snap.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert build_config(yaml_path=path) == cfg


def test_targets_all_alias_everywhere(tmp_path):
    from exporters import registry

    every = list(registry.names())
    assert every == ["onnx", "openvino", "tflite"]
    y = tmp_path / "zsq.yaml"
    y.write_text("export:\n  targets: all\n")
    assert build_config(sets=["export.targets=all"]).export.targets == every
    assert build_config(yaml_path=y).export.targets == every
    assert build_config(cli={"export.targets": ["all"]}).export.targets == every
    # aliases resolve to the format's name, once, in the user's order
    assert build_config(sets=["export.targets=litert,ort,onnx"]).export.targets == ["tflite", "onnx"]
    with pytest.raises(ConfigError, match=r"unknown target 'tflit'; did you mean 'tflite'\?"):
        build_config(sets=["export.targets=onnx,tflit"])


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["qat.profile=papr"], r"qat.profile must be one of deploy, paper, got 'papr'; did you mean 'paper'\?"),
        (["qat.act_init=min"], r"qat.act_init must be one of mse, minmax, percentile, got 'min'; did you mean 'minmax'\?"),
        (["qat.act_range=EMA"], r"qat.act_range must be one of auto, learned, ema, got 'EMA'; did you mean 'ema'\?"),
        (["export.tflite_io=uint8"], r"export.tflite_io must be one of int8, float, got 'uint8'; did you mean 'int8'\?"),
        (["synthesis.method=gdfg"], r"unknown synthesis method 'gdfg'; did you mean 'gdfq'\?"),
        (["check.num_runs=0"], "bad check timing"),
    ],
)
def test_closed_choices_fail_with_valid_values_and_the_closest(sets, message):
    with pytest.raises(ConfigError, match=message):
        build_config(sets=sets)


def test_yaml_booleans_reach_on_off_choices():
    # YAML reads off/on as booleans; a choice spelled on/off takes them back
    assert build_config(sets=["qat.overflow_fix=off"]).qat.overflow_fix == "off"
    assert build_config(sets=["qat.overflow_fix=on"]).qat.overflow_fix == "on"


def test_defaults_come_from_the_modules_that_use_them():
    from pipeline.quant.settings import QATSettings
    from runtimes.benchmark import HOST_CHECK

    cfg = build_config()
    assert cfg.qat.settings() == QATSettings()  # one source for the QAT loop's defaults
    assert build_config(sets=["qat.lr=3e-4", "qat.steps=7"]).qat.settings() == QATSettings(lr=3e-4, steps=7)
    assert cfg.check.bench_settings() == HOST_CHECK  # the host's short protocol, named once


def test_method_without_a_preset_names_the_closest_that_has_one():
    from pipeline.synthesis import base
    from pipeline.synthesis.inversion import BNInversion, InversionConfig

    base.register_method("bn-inversion-nopreset", InversionConfig)(BNInversion)
    try:
        with pytest.raises(ConfigError, match=r"no preset for method 'bn-inversion-nopreset'; did you mean 'bn-inversion'\?"):
            build_config("fast", sets=["synthesis.method=bn-inversion-nopreset"])
    finally:
        del base._METHODS["bn-inversion-nopreset"]
