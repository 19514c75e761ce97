"""Bad eval data and bad models: refused in one line before they can yield a wrong accuracy or a traceback.

Issue 15 items 3, 4 and the model/data part of 14. Real Fashion-MNIST test images
(never seen by the pipeline) and the real bundled model; the CLI cases run the real
``python -m pipeline`` in a subprocess. Most cases are in-process calls of the loaders
the stages use (:func:`pipeline.evaldata.load_eval_data`, :func:`pipeline.models.loading.load_model`),
which raise the same :class:`~pipeline.errors.UserError` the CLI prints as ``error: ...``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.errors import ModelLoadError, UserError
from tests.conftest import ROOT
from tests.faults_doc import Fault, by_test
from tests.test_bad_input import FAST, assert_one_line_error, pipeline

W, E = "Wrong answers presented as right", "Errors that arrive too late or as tracebacks"
FAULTS = [
    Fault(W, "--eval-data labels of -1 (half the set)", "refused, count and values named (was scored: 47.5 % for a 95 % model)",
          "test_negative_labels_are_refused_not_scored", "labels must be class indices 0..9"),
    Fault(W, "--eval-data labels of -1 through the CLI", "one-line error before the first stage runs",
          "test_cli_check_refuses_negative_labels", "labels must be class indices 0..9", 3),
    Fault(W, "--eval-data float images in 0..255 for a 0..1 model", "refused with the range found and the range taken",
          "test_float_images_outside_the_pixel_range_are_refused", "pixel values span 0..255, the model takes 0..1"),
    Fault(W, "hidden .ipynb_checkpoints folder and dot-files in an ImageFolder", "skipped; labels unchanged",
          "test_dot_entries_in_an_image_folder_are_skipped"),
    Fault(W, "ImageFolder with a class folder missing or one too many", "refused: sorted-folder labels would shift",
          "test_image_folder_needs_one_folder_per_class", "9 class folders, the model has 10 classes"),
    Fault(W, "an image of the --eval-data folder edited after a check", "the check stage runs again",
          "test_edited_image_folder_reruns_check"),
    Fault(W, "eval/calib folder contents change (key of check and synth)", "stage key changes; dot entries do not count",
          "test_stage_keys_follow_the_data_folders"),
    Fault(W, "bundled model with --input-shape 3,32,32 --num-classes 100", "refused, says what it takes and how to use another model",
          "test_bundled_model_refuses_another_shape_or_class_count",
          "the bundled model 'fmnist_resnet20' takes 1×28×28 images and 10 classes", 3),
    Fault(W, "--num-classes 0 or negative (bundled, zoo, file.py:factory)", "refused instead of becoming 10",
          "test_num_classes_below_two_is_refused_for_every_model_kind", "--num-classes 0: a classifier has at least 2 classes"),
    Fault(E, "NaN or Inf in the --weights file", "one-line error naming the tensors",
          "test_nan_weights_in_the_file_are_refused", "has NaN or Inf values in conv1.weight, fc.weight"),
    Fault(E, "meta-device tensors in the --weights file", "one-line error, not a load_state_dict traceback",
          "test_meta_weights_in_the_file_are_refused", "has meta-device tensors (no values)"),
    Fault(E, "factory builds a model with Inf weights or on the meta device", "one-line error naming the tensor",
          "test_factory_models_with_nan_or_meta_tensors_are_refused", "has meta-device tensors (no values)"),
    Fault(E, "--eval-data given a .npy", "says to give an .npz with images and labels or a folder",
          "test_npy_eval_data_is_refused", "give an .npz with arrays images and labels, or an ImageFolder directory"),
    Fault(E, "--eval-data .npz with object arrays", "says object arrays are never loaded",
          "test_object_array_npz_is_refused", "holds Python objects (dtype=object), which are never loaded"),
    Fault(E, "--eval-data with 0 images", "refused instead of a NaN accuracy", "test_empty_eval_data_is_refused", "no images"),
    Fault(E, "corrupt PNG inside an ImageFolder", "one-line error naming the file", "test_corrupt_png_names_the_file",
          "bad.png: not a readable image"),
    Fault(E, "sys.exit() inside a user factory or at import of its file", "one-line error, exit 3 (was a silent exit 0)",
          "test_sys_exit_in_a_factory_is_a_one_line_error", "called sys.exit", 3),
    Fault(E, "factory returns a tuple, or a model with 1 output", "one-line error instead of a traceback",
          "test_other_factory_mistakes_are_one_line_errors", "model returns tuple"),
    Fault(E, "pickled objects in --weights (torch's message has colour codes)", "the reason, whole, no colour codes",
          "test_weight_errors_are_whole_sentences_without_colour_codes", "Unsupported global: GLOBAL"),
]
ROW = by_test(FAULTS)
ANSI = re.compile(r"\x1b")


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def card():
    from pipeline.models.loading import load_model

    return load_model(ModelConfig())[1]


@pytest.fixture(scope="module")
def teacher():
    from pipeline.models.loading import load_model

    return load_model(ModelConfig())[0]


def u8(x: np.ndarray) -> np.ndarray:
    """Fashion-MNIST floats (N×1×28×28 in 0..1) as the N×28×28 uint8 the original files hold."""
    return np.round(x[:, 0] * 255).astype(np.uint8)


def image_folder(root: Path, x: np.ndarray, y: np.ndarray, per_class: int = 2, classes: range = range(10)) -> Path:
    """root/c<k>/<i>.png with ``per_class`` real images of each class (folders sort as c0..c9: labels = k)."""
    from PIL import Image

    for k in classes:
        d = root / f"c{k}"
        d.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(y == k)[:per_class]:
            Image.fromarray(u8(x[i : i + 1])[0]).save(d / f"{i}.png")
    return root


def fp_accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    from pipeline.quant.qat import predict
    from pipeline.stages.check import accuracy

    return accuracy(predict(model, torch.from_numpy(images)).numpy(), labels)


def refused(path: Path, card, name: str) -> str:
    """load_eval_data must raise a one-line UserError carrying the row's message fragment; returns it."""
    from pipeline.evaldata import load_eval_data

    with pytest.raises(UserError) as err:
        load_eval_data(path, card)
    msg = str(err.value)
    assert ROW[name].message in msg and "\n" not in msg and not ANSI.search(msg), msg
    return msg


def load_error(cfg: ModelConfig) -> str:
    """load_model must raise a one-line ModelLoadError without colour codes; returns its message."""
    from pipeline.models.loading import load_model

    with pytest.raises(ModelLoadError) as err:
        load_model(cfg)
    msg = str(err.value)
    assert "\n" not in msg and not ANSI.search(msg), msg
    return msg


def load_refused(cfg: ModelConfig, name: str) -> str:
    """load_error, carrying the row's message fragment."""
    msg = load_error(cfg)
    assert ROW[name].message in msg, msg
    return msg


# ---------------------------------------------------------------- item 3: eval data that would give a wrong accuracy


def test_negative_labels_are_refused_not_scored(tmp_path, card, teacher, fmnist_test):
    """The issue's 46.5 %: half the labels -1 halve the accuracy of a 94 % model, silently. Now refused."""
    from pipeline.evaldata import load_eval_data

    x, y = fmnist_test
    xs, ys = u8(x[:600]), y[:600].copy()
    np.savez(tmp_path / "good.npz", images=xs, labels=ys)
    assert fp_accuracy(teacher, *load_eval_data(tmp_path / "good.npz", card)) >= 0.9
    ys[::2] = -1
    np.savez(tmp_path / "neg.npz", images=xs, labels=ys)
    msg = refused(tmp_path / "neg.npz", card, "test_negative_labels_are_refused_not_scored")
    assert "300" in msg and "-1" in msg  # how many, and which
    np.savez(tmp_path / "frac.npz", images=xs[:4], labels=np.array([0.0, 1.5, 2.0, 3.0]))
    with pytest.raises(UserError, match="whole class indices"):
        load_eval_data(tmp_path / "frac.npz", card)


def test_float_images_outside_the_pixel_range_are_refused(tmp_path, card, fmnist_test):
    from pipeline.evaldata import load_eval_data

    x, y = fmnist_test
    np.savez(tmp_path / "f255.npz", images=x[:64] * 255, labels=y[:64])
    msg = refused(tmp_path / "f255.npz", card, "test_float_images_outside_the_pixel_range_are_refused")
    assert "uint8" in msg  # says how to fix it
    np.savez(tmp_path / "norm.npz", images=(x[:64] - 0.286) / 0.353, labels=y[:64])  # normalised outside: also wrong
    with pytest.raises(UserError, match="the model takes 0..1"):
        load_eval_data(tmp_path / "norm.npz", card)
    np.savez(tmp_path / "i64.npz", images=u8(x[:64]).astype(np.int64), labels=y[:64])  # integer codes: same as uint8
    xi, _ = load_eval_data(tmp_path / "i64.npz", card)
    assert xi.dtype == np.float32 and 0.0 <= xi.min() and xi.max() <= 1.0 and xi.max() > 0.5
    np.savez(tmp_path / "near.npz", images=np.clip(x[:64] * 1.01 - 0.005, -1, 2), labels=y[:64])  # rounding noise: a tolerance
    assert len(load_eval_data(tmp_path / "near.npz", card)[0]) == 64


def test_dot_entries_in_an_image_folder_are_skipped(tmp_path, card, teacher, fmnist_test):
    """A Jupyter .ipynb_checkpoints folder sorts first: counted as class 0 it shifted every label."""
    from PIL import Image

    from pipeline.evaldata import load_eval_data

    x, y = fmnist_test
    root = image_folder(tmp_path / "eval", x, y, per_class=3)
    (root / ".ipynb_checkpoints").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(root / ".ipynb_checkpoints" / "0-checkpoint.png")
    (root / "c1" / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")  # AppleDouble: not an image at all
    images, labels = load_eval_data(root, card)
    assert len(labels) == 30 and sorted(set(labels.tolist())) == list(range(10))
    assert fp_accuracy(teacher, images, labels) >= 0.8


def test_image_folder_needs_one_folder_per_class(tmp_path, card, fmnist_test):
    """Labels are folder positions in sorted order: a missing class folder shifts every later class by one."""
    x, y = fmnist_test
    root = image_folder(tmp_path / "nine", x, y, classes=range(1, 10))
    refused(root, card, "test_image_folder_needs_one_folder_per_class")
    (root / "c0").mkdir()  # an empty folder keeps the positions right
    from pipeline.evaldata import load_eval_data

    assert sorted(set(load_eval_data(root, card)[1].tolist())) == list(range(1, 10))
    (root / "logs").mkdir()
    with pytest.raises(UserError, match="11 class folders"):
        load_eval_data(root, card)


def test_stage_keys_follow_the_data_folders(tmp_path, fmnist_test):
    """The check key follows check.eval_data's contents and the synth key synthesis.calib_data's, folders included."""
    from pipeline.config import build_config
    from pipeline.evaldata import digest
    from pipeline.runner import RunContext, Runner
    from pipeline.stages import STAGES

    x, y = fmnist_test
    root = image_folder(tmp_path / "eval", x, y)
    stage = {s.name: s for s in STAGES}

    def keys() -> tuple[str, str]:
        cli = {"check.eval_data": str(root), "synthesis.calib_data": str(root), "out": str(tmp_path / "run")}
        cfg = build_config("tiny", None, cli, [])
        runner = Runner(STAGES, RunContext(cfg, tmp_path / "run", log=lambda m: None))
        return runner.key(stage["check"]), runner.key(stage["synth"])

    d0, k0 = digest(root), keys()
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "a.png").write_bytes(b"x")
    (root / "c2" / ".DS_Store").write_bytes(b"x")
    (root / "c2" / "notes.txt").write_text("not read by the loader")
    assert digest(root) == d0 and keys() == k0  # what the loader skips does not count
    png = next((root / "c3").glob("*.png"))
    data = bytearray(png.read_bytes())
    data[-20] ^= 1
    png.write_bytes(bytes(data))
    k1 = keys()
    assert digest(root) != d0 and k1[0] != k0[0] and k1[1] != k0[1]
    png.rename(root / "c4" / png.name)  # same bytes, another class
    assert keys()[0] not in (k0[0], k1[0])
    f = tmp_path / "e.npz"
    np.savez(f, images=u8(x[:8]), labels=y[:8])
    d = digest(f)
    np.savez(f, images=u8(x[:8]), labels=y[1:9])
    assert digest(f) != d and digest(tmp_path / "absent") == "missing"


# ---------------------------------------------------------------- item 14: eval files that crashed


def test_npy_eval_data_is_refused(tmp_path, card, fmnist_test):
    np.save(tmp_path / "images.npy", u8(fmnist_test[0][:8]))
    refused(tmp_path / "images.npy", card, "test_npy_eval_data_is_refused")


def test_object_array_npz_is_refused(tmp_path, card, fmnist_test):
    imgs = u8(fmnist_test[0][:2])
    np.savez(tmp_path / "obj.npz", images=np.array([imgs[0], imgs[1][:5]], dtype=object), labels=np.array([0, 1]))
    refused(tmp_path / "obj.npz", card, "test_object_array_npz_is_refused")


def test_empty_eval_data_is_refused(tmp_path, card):
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 28, 28), np.uint8), labels=np.zeros(0, np.int64))
    refused(tmp_path / "empty.npz", card, "test_empty_eval_data_is_refused")
    (tmp_path / "zero.npz").write_bytes(b"")
    from pipeline.evaldata import load_eval_data

    with pytest.raises(UserError, match="zero.npz"):
        load_eval_data(tmp_path / "zero.npz", card)


def test_corrupt_png_names_the_file(tmp_path, card, fmnist_test):
    x, y = fmnist_test
    root = image_folder(tmp_path / "eval", x, y)
    (root / "c3" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    msg = refused(root, card, "test_corrupt_png_names_the_file")
    assert str(root / "c3" / "bad.png") in msg


# ---------------------------------------------------------------- item 4 and 14: models


def test_bundled_model_refuses_another_shape_or_class_count(tmp_path):
    """It recorded 3,32,32 / 100 in config.json and built 1×28×28 / 10 artifacts."""
    name = "test_bundled_model_refuses_another_shape_or_class_count"
    res = pipeline("run", "--input-shape", "3,32,32", "--num-classes", "100", "--out", str(tmp_path / "run"), *FAST)
    line = assert_one_line_error(res, ROW[name].message, "--model path/to/file.py:factory", code=ROW[name].exit_code)
    assert "--input-shape 3,32,32" in line and "--num-classes 100" in line
    assert not (tmp_path / "run" / "synthetic").exists()
    load_refused(ModelConfig(num_classes=100), name)
    from pipeline.models.loading import load_model

    assert load_model(ModelConfig(input_shape="1,28,28", num_classes=10))[1].num_classes == 10  # what it takes: fine


def test_num_classes_below_two_is_refused_for_every_model_kind(tmp_path):
    name = "test_num_classes_below_two_is_refused_for_every_model_kind"
    (tmp_path / "net.py").write_text(USER_NETS)
    for model in ("fmnist_resnet20", "resnet20", f"{tmp_path / 'net.py'}:net"):
        load_refused(ModelConfig(name=model, num_classes=0, input_shape="1,28,28"), name)
        assert "--num-classes -3: a classifier" in load_error(ModelConfig(name=model, num_classes=-3, input_shape="1,28,28"))


def _state_file(path: Path, edit) -> Path:
    from pipeline.models.loading import load_model

    state = {k: v.clone() for k, v in load_model(ModelConfig())[0].state_dict().items()}
    edit(state)
    torch.save(state, path)
    return path


def test_nan_weights_in_the_file_are_refused(tmp_path):
    def nan(state):
        state["fc.weight"][0, 0] = float("nan")
        state["conv1.weight"][0, 0, 0, 0] = float("inf")

    path = _state_file(tmp_path / "nan.pt", nan)
    msg = load_refused(ModelConfig(weights=str(path)), "test_nan_weights_in_the_file_are_refused")
    assert str(path) in msg


def test_meta_weights_in_the_file_are_refused(tmp_path):
    def meta(state):
        state["fc.weight"] = torch.empty_like(state["fc.weight"], device="meta")

    path = _state_file(tmp_path / "meta.pt", meta)
    msg = load_refused(ModelConfig(weights=str(path)), "test_meta_weights_in_the_file_are_refused")
    assert "fc.weight" in msg


USER_NETS = '''
import sys
import torch
from torch import nn

def net(classes=10):
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))

def on_meta():
    with torch.device("meta"):
        return net()

def with_inf():
    m = net()
    m[0].weight.data[0] = float("inf")
    return m

def exits():
    sys.exit()

def tuple_out():
    class T(nn.Module):
        def __init__(self):
            super().__init__()
            self.n = net()

        def forward(self, x):
            return (self.n(x),)
    return T()

def one_logit():
    return net(1)

def exits_in_forward():
    class F(nn.Module):
        def forward(self, x):
            sys.exit(4)
    return F()
'''


def test_factory_models_with_nan_or_meta_tensors_are_refused(tmp_path):
    (tmp_path / "net.py").write_text(USER_NETS)
    spec = f"{tmp_path / 'net.py'}:"
    name = "test_factory_models_with_nan_or_meta_tensors_are_refused"
    msg = load_refused(ModelConfig(name=spec + "on_meta", input_shape="1,28,28"), name)
    assert "0.weight" in msg
    assert "has NaN or Inf values in 0.weight" in load_error(ModelConfig(name=spec + "with_inf", input_shape="1,28,28"))


def test_sys_exit_in_a_factory_is_a_one_line_error(tmp_path):
    """sys.exit() in a factory ended the run with exit code 0 and no output; at import, with the file's own code."""
    name = "test_sys_exit_in_a_factory_is_a_one_line_error"
    (tmp_path / "net.py").write_text(USER_NETS)
    res = pipeline("synth", "--model", f"{tmp_path / 'net.py'}:exits", "--input-shape", "1,28,28", "--out", str(tmp_path / "run"), *FAST)
    assert_one_line_error(res, ROW[name].message, "exits()", code=ROW[name].exit_code)
    (tmp_path / "bye.py").write_text("import sys\nsys.exit(3)\n")
    load_refused(ModelConfig(name=f"{tmp_path / 'bye.py'}:net", input_shape="1,28,28"), name)
    load_refused(ModelConfig(name=f"{tmp_path / 'net.py'}:exits_in_forward", input_shape="1,28,28"), name)


def test_other_factory_mistakes_are_one_line_errors(tmp_path):
    """A tuple output crashed in ``out.dim()``; a 1-logit model in the model card's ValueError."""
    (tmp_path / "net.py").write_text(USER_NETS)
    spec = f"{tmp_path / 'net.py'}:"
    load_refused(ModelConfig(name=spec + "tuple_out", input_shape="1,28,28"), "test_other_factory_mistakes_are_one_line_errors")
    assert "at least 2 classes" in load_error(ModelConfig(name=spec + "one_logit", input_shape="1,28,28"))  # was the card's ValueError
    assert "model.std must be positive" in load_error(ModelConfig(name="resnet20", input_shape="1,28,28", mean=[0.5], std=[0.0]))


class Pickled:
    """A class a weights-only load refuses: stands in for any pickled object in a checkpoint."""


def test_weight_errors_are_whole_sentences_without_colour_codes(tmp_path):
    """torch's weights-only refusal starts with advice wrapped in ANSI bold; the reason (the refused global) came after the cut."""
    from pipeline.models.loading import read_state_dict

    torch.save({"fc.weight": torch.zeros(1), "extra": Pickled()}, tmp_path / "pickled.pt")
    with pytest.raises(ModelLoadError) as err:
        read_state_dict(tmp_path / "pickled.pt")
    msg = str(err.value)
    assert ROW["test_weight_errors_are_whole_sentences_without_colour_codes"].message in msg and "Pickled" in msg
    assert not ANSI.search(msg) and "\n" not in msg and "weights_only=False" not in msg  # never advise running the pickle
    from pipeline.models.loading import exception_text

    long = "\x1b[31mThe first sentence says what failed at some length, " + "with detail " * 30 + "and ends here.\x1b[0m Second one."
    text = exception_text(RuntimeError(long))
    assert "\x1b" not in text and "ends here." in text and not text.endswith("detail")


# ---------------------------------------------------------------- the check stage through the CLI


@pytest.fixture(scope="module")
def checked_run(tmp_path_factory, fmnist_test) -> tuple[Path, Path]:
    """A tiny run up to the check stage with an ImageFolder --eval-data of 20 real images: (run folder, image folder)."""
    import json

    base = tmp_path_factory.mktemp("faults_inputs")
    root = image_folder(base / "eval", *fmnist_test)
    out = base / "run"
    res = pipeline("check", *FAST, "--eval-data", str(root), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((out / "check.json").read_text())["eval_data"]["images"] == 20
    return out, root


def test_edited_image_folder_reruns_check(checked_run):
    """The check key hashed the eval path, not a folder's contents: an edited folder kept serving the old accuracy.

    (That an unchanged folder, or one with only dot entries added, keeps the key is in test_stage_keys_follow_the_data_folders.)
    """
    import json

    out, root = checked_run
    png = next((root / "c5").glob("*.png"))
    png.rename(root / "c6" / png.name)  # a mislabelled image moved to its right class: same bytes, another label
    next((root / "c7").glob("*.png")).unlink()  # and one removed
    res = pipeline("check", *FAST, "--eval-data", str(root), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[export] up to date, skipped" in res.stderr and "[check] running" in res.stderr
    assert json.loads((out / "check.json").read_text())["eval_data"]["images"] == 19


def test_cli_check_refuses_negative_labels(checked_run, tmp_path, fmnist_test):
    out, _ = checked_run
    x, y = fmnist_test
    labels = y[:64].copy()
    labels[::2] = -1
    np.savez(tmp_path / "neg.npz", images=u8(x[:64]), labels=labels)
    res = pipeline("check", *FAST, "--eval-data", str(tmp_path / "neg.npz"), "--out", str(out))
    assert_one_line_error(res, ROW["test_cli_check_refuses_negative_labels"].message, code=ROW["test_cli_check_refuses_negative_labels"].exit_code)
    assert "[synth]" not in res.stderr  # refused before the first stage, not after synthesis and QAT
