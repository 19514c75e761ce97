"""Bad input through the real CLI: a one-line error, its exit status (3 input, 4 export gate), no traceback, no half-written artifact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

FAST = ["--budget", "tiny", "--no-bench", "--set", "synthesis.options.iterations=2", "--set", "qat.steps=1",
        "--set", "synthesis.holdout_options.iterations=2",
        "--set", "synthesis.num_images=16", "--set", "synthesis.holdout_images=8", "--set", "qat.calib_images=16"]


def pipeline(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZSQ_QUIET": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def assert_one_line_error(res: subprocess.CompletedProcess, *fragments: str, code: int = 3) -> str:
    """One ``error:`` line holding every fragment, no traceback, exit ``code`` (3: input or config, pipeline/cli/exits.py)."""
    assert res.returncode == code, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    err = [l for l in res.stderr.splitlines() if l.startswith("error: ")]
    assert len(err) == 1, res.stderr
    for f in fragments:
        assert f in err[0], err[0]
    return err[0]


MODEL_PY = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, bn=True, deconv=False):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.relu = nn.ReLU()
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2) if deconv else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.up(self.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.pool(x), 1))

def build():
    return Net()

def build_no_bn():
    return Net(bn=False)

def build_deconv():
    return Net(deconv=True)
'''


@pytest.fixture(scope="module")
def user_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("user")
    (d / "mynet.py").write_text(MODEL_PY)
    return d


def test_missing_weights(tmp_path):
    res = pipeline("run", "--weights", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "run"), *FAST)
    assert_one_line_error(res, "weights file", "not found")


def test_corrupt_weights(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    res = pipeline("run", "--weights", str(bad), "--out", str(tmp_path / "run"), *FAST)
    assert_one_line_error(res, "corrupt")


def test_weights_that_do_not_match_list_the_keys(tmp_path):
    from pipeline.models import create_model

    state = create_model("resnet20", in_channels=3, num_classes=10).state_dict()
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "other.pt"
    torch.save(state, path)
    res = pipeline("run", "--weights", str(path), "--out", str(tmp_path / "run"), *FAST)
    assert_one_line_error(res, "missing keys: fc.bias", "unexpected keys: extra.weight", "shape mismatch: conv1.weight (16, 3, 3, 3) vs (16, 1, 3, 3)")


def test_model_without_batchnorm_says_which_methods_need_it(tmp_path, user_model):
    res = pipeline("run", "--model", f"{user_model / 'mynet.py'}:build_no_bn", "--input-shape", "1,28,28", "--out", str(tmp_path / "run"), *FAST)
    assert_one_line_error(res, "no BatchNorm2d", "bn-inversion")


def test_unknown_factory_and_bad_shape(tmp_path, user_model):
    res = pipeline("run", "--model", f"{user_model / 'mynet.py'}:nope", "--input-shape", "1,28,28", "--out", str(tmp_path / "r"), *FAST)
    assert_one_line_error(res, "has no callable 'nope'", "build")
    res = pipeline("run", "--model", f"{user_model / 'mynet.py'}:build", "--input-shape", "1,28", "--out", str(tmp_path / "r"), *FAST)
    assert_one_line_error(res, "bad input shape")


def test_op_the_onnx_export_cannot_quantize_is_named_and_no_artifact_is_left(tmp_path, user_model):
    run = tmp_path / "run"
    res = pipeline("run", "--model", f"{user_model / 'mynet.py'}:build_deconv", "--input-shape", "1,28,28", "--out", str(run), *FAST)
    line = assert_one_line_error(res, "ConvTranspose", "integer", code=4)  # the integer gate: export gate
    assert "model.w8a8.onnx" in line
    assert not (run / "model.w8a8.onnx").exists()
    assert not list(run.rglob("*.tmp*"))


def test_bad_set_key(tmp_path):
    res = pipeline("run", "--set", "qat.stepz=3", "--out", str(tmp_path / "run"))
    assert_one_line_error(res, "did you mean qat.steps")
    assert not (tmp_path / "run").exists()


def test_user_model_runs_end_to_end_with_a_lower_coverage_gate(tmp_path, user_model):
    """The same deconv model passes when the user accepts float ops explicitly; the report says how much is integer."""
    import json

    run = tmp_path / "run"
    res = pipeline("run", "--model", f"{user_model / 'mynet.py'}:build_deconv", "--input-shape", "1,28,28", "--out", str(run), *FAST,
                   "--set", "export.min_integer_coverage=0.005")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    cov = next(a for a in report["artifacts"] if a["precision"] == "w8a8")["integer_coverage"]
    assert 0.005 <= cov["share"] < 1.0
    assert any("ConvTranspose" in n for n in cov["float_nodes"])
