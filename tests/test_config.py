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
    from pipeline.config import TARGETS

    y = tmp_path / "zsq.yaml"
    y.write_text("export:\n  targets: all\n")
    assert build_config(sets=["export.targets=all"]).export.targets == list(TARGETS)
    assert build_config(yaml_path=y).export.targets == list(TARGETS)
    assert build_config(cli={"export.targets": ["all"]}).export.targets == list(TARGETS)
