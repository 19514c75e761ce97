"""The command line as users meet it: --version, --help, refused borrowed flags, -q/-v/--log-file, progress off a
terminal, library noise, and how ImageFolder images become model inputs (docs/cli.md).

Cheap on purpose: parser-level checks, the loaders on a handful of real Fashion-MNIST images, one tiny synth stage
in a subprocess (stderr to a file, as in CI) and one in this process, one process that makes the libraries print.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

# A synth stage of seconds: 2 batches of 3 steps, then a held-out batch of 2
TINY_SYNTH = ["--set", "synthesis.num_images=8", "--set", "synthesis.holdout_images=8",
              "--set", 'synthesis.options={"batch_size": 4, "iterations": 3}',
              "--set", 'synthesis.holdout_options={"batch_size": 8, "iterations": 2}']


@pytest.fixture
def clean_output():
    """A command run in this process leaves the output settings as a fresh process has them."""
    from pipeline.cli import output

    yield
    output.reset()


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ZSQ_QUIET"}  # progress on, as a user's run has it
    return {**env, "PYTHONPATH": str(ROOT)}


# --- --version and --help ---------------------------------------------------------------------------------------

def test_version_is_the_package_version_and_needs_no_torch():
    from importlib import metadata

    code = ("import sys\nfrom pipeline.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nassert 'torch' not in sys.modules, 'pipeline --version imported torch'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == f"pipeline (zsq-edge) {metadata.version('zsq-edge')}"


def test_version_falls_back_to_the_source_tree(monkeypatch):
    import tomllib
    from importlib import metadata

    from pipeline.cli.parser import version

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert version() == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _subparser(name: str) -> argparse.ArgumentParser:
    from pipeline.cli.parser import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_help_groups_run_options_by_stage_with_the_configs_defaults():
    from pipeline.cli.parser import GROUPS

    text = _subparser("run").format_help()
    positions = [text.index(f"\n{title}:\n") for title in (*GROUPS, "output")]
    assert positions == sorted(positions), "groups out of order"
    flat = " ".join(text.split())
    for shown in ("(default: fmnist_resnet20; model.name)", "(default: w8a8; qat.bits)", "(default: onnx; export.targets)",
                  "(default: bn-inversion; synthesis.method)", "(default: center-crop; check.eval_transform)",
                  "(default: runs/default; out)", "(default: auto; host.accelerator)", "(default: not gated; check.min_agreement)"):
        assert shown in flat, shown
    assert "default: None" not in flat and "(default: none; model" not in flat
    for group, flag in (("model", "--weights"), ("synthesis", "--method"), ("quantization", "--bits"), ("export", "--target"),
                        ("evaluation", "--eval-transform"), ("device", "--bench-args"), ("run folder & host", "--budget")):
        section = text[text.index(f"\n{group}:\n"):]
        assert section.index(f"  {flag}") < section.index("\n\n", 1), f"{flag} not under {group}"


def test_stage_commands_are_the_stages():
    from pipeline.cli.parser import STAGE_COMMANDS
    from pipeline.stages import STAGE_NAMES

    assert list(STAGE_COMMANDS) == STAGE_NAMES[:-1]


SAMPLE = {"model": "resnet20", "weights": "w.pt", "input_shape": "3,32,32", "num_classes": "7", "method": "zeroq",
          "calib_data": "c.npz", "seed": "5", "bits": "w4a4", "profile": "paper", "overflow_fix": "on", "target": "tflite",
          "eval_data": "e.npz", "eval_transform": "squash", "min_agreement": "0.9", "max_accuracy_drop": "0.01",
          "accelerator": "cpu", "precision": "fp32", "out": "o", "runtime_accelerator": "openvino:AUTO",
          "layer_bits": "fc=w8a8", "float_layer": "fc"}


def test_each_shown_default_is_the_key_the_option_sets():
    """--help names a config key per option (CONFIG_KEYS); pipeline/cli/run.py must set that very key."""
    from pipeline.cli.parser import CONFIG_KEYS, build_parser
    from pipeline.cli.run import _cli_overrides

    assert set(SAMPLE) == set(CONFIG_KEYS)
    for dest, key in CONFIG_KEYS.items():
        flag = "--" + dest.replace("_", "-")
        args = build_parser().parse_args(["run", flag, SAMPLE[dest]])
        got = _cli_overrides(args).get(key)
        shown = ",".join(f"{k}={v}" for k, v in got.items()) if isinstance(got, dict) else ",".join(got) if isinstance(got, list) else got
        assert got is not None and str(shown) == SAMPLE[dest], (flag, key, got)


# --- flags borrowed from other tools ----------------------------------------------------------------------------

def test_borrowed_flags_are_refused_naming_the_replacement(capsys):
    from devices.agent import DROPPED, build_parser, validate_bench_args
    from devices.errors import DeviceError
    from pipeline.cli.parser import build_parser as pipeline_parser

    assert set(DROPPED) == {"-m", "-o", "-x", "-r", "--pin"}
    for flag, (instead, _) in DROPPED.items():
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(["--graph", "m.onnx", flag, "1"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}: use {instead} instead" in err, err
    for flag, instead in (("-x", "--num_threads"), ("-r", "--num_runs"), ("--pin", "--cpu_mask")):
        with pytest.raises(SystemExit):
            pipeline_parser().parse_args(["bench", "--artifact", "m.onnx", flag, "2"])
        assert f"use {instead} instead" in capsys.readouterr().err
        with pytest.raises(DeviceError, match=f"use {instead} instead"):
            validate_bench_args([flag, "2"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--graph", "m.onnx", "--json_stats", "true"])  # benchmark_app's switch, not a path
    assert "takes the result file's path" in capsys.readouterr().err
    kept = build_parser().parse_args(["--artifact", "m.onnx", "--num-threads", "1,4", "--num_runs", "7", "--cpu_mask", "f0",
                                      "--json_stats", "out.json"])
    assert (kept.graph, kept.num_threads, kept.num_runs, kept.cpu_mask, kept.json_stats) == (Path("m.onnx"), "1,4", 7, "f0", "out.json")


# --- -q, -v, --log-file and progress ----------------------------------------------------------------------------

def test_progress_off_a_terminal_is_lines_and_the_log_file_gets_everything(tmp_path):
    """stderr to a file, as in CI: stage lines, each loop's lines (batch i/n, the batch's own loss), no carriage-return
    bar; the log file holds the same and the summary."""
    log, err_path = tmp_path / "logs" / "run.log", tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        res = subprocess.run([sys.executable, "-m", "pipeline", "synth", *TINY_SYNTH, "--out", str(tmp_path / "run"),
                              "--log-file", str(log)], stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, env=_env(),
                             timeout=600)
    stderr = err_path.read_text()
    assert res.returncode == 0, stderr[-3000:]
    assert "\r" not in stderr, "a carriage-return progress bar in a file"
    lines = stderr.splitlines()
    assert any(l.startswith("stage 1/5 [synth] running · run 0:0") for l in lines), stderr
    assert any(l.startswith("stage 1/5 [synth] done in") for l in lines), stderr
    assert "stage 1/5 synth · synth seed 0: 0/6 steps · starting" in lines, stderr
    done = [l for l in lines if l.startswith("stage 1/5 synth · synth seed 0: 6/6 steps (100%)")]
    assert len(done) == 1 and "batch 2/2, this batch's loss " in done[0] and "done in" in done[0], stderr
    assert "stages up to synth done" in res.stdout
    logged = log.read_text()
    assert "\r" not in logged
    for line in (*[l for l in lines if l.startswith("stage ")], "stages up to synth done in"):
        assert line in logged, line


def test_quiet_hides_progress_never_the_summary_or_an_error(tmp_path, capsys, monkeypatch, clean_output):
    from pipeline.cli import main

    monkeypatch.delenv("ZSQ_QUIET", raising=False)
    assert main(["-q", "synth", *TINY_SYNTH, "--out", str(tmp_path / "run"), "--log-file", str(tmp_path / "q.log")]) == 0
    out, err = capsys.readouterr()
    assert "stages up to synth done" in out
    assert "stage 1/5" not in err and " steps" not in err, err
    assert "stage 1/5 [synth] running" in (tmp_path / "q.log").read_text()  # the log file gets what -q hides
    assert main(["run", "--dry-run", "-q", "--eval-data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "run2")]) == 3
    out, err = capsys.readouterr()
    assert [l for l in err.splitlines() if l.startswith("error: ")] and "missing.npz" in err


def test_quiet_and_verbose_together_and_an_unwritable_log_file_are_one_line_errors(tmp_path, capsys, clean_output):
    from pipeline.cli import output

    with pytest.raises(SystemExit) as exc:
        output.configure(argparse.Namespace(quiet=True, verbose=True, log_file=None))
    assert exc.value.code == 2 and "contradict" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exc:
        output.configure(argparse.Namespace(quiet=False, verbose=False, log_file=tmp_path / "file" / "run.log"))
    err = capsys.readouterr().err
    assert exc.value.code == 3 and err.startswith("error: --log-file") and err.count("\n") == 1, err


def test_eta_comes_from_this_folders_earlier_timings_of_the_same_config(tmp_path):
    from pipeline.config import build_config
    from pipeline.progress import StageInfo
    from pipeline.runner import Runner, RunContext, write_json
    from pipeline.stages import STAGES

    run = tmp_path / "run"
    run.mkdir()
    cfg = build_config("tiny", None, {"out": str(run)}, [])
    write_json(run / "manifest.json", {"stages": {"synth": {"seconds": 12.0}, "qat": {"seconds": 30.0}, "export": {"seconds": 5.0}}})
    write_json(run / "config.json", cfg.to_dict())
    assert Runner(STAGES, RunContext(cfg, run, log=print)).estimates(4) == {"synth": 12.0, "qat": 30.0, "export": 5.0}
    longer = build_config("tiny", None, {"out": str(run)}, ["qat.steps=500"])  # qat's and export's (it reads qat) say nothing now
    assert Runner(STAGES, RunContext(longer, run, log=print)).estimates(4) == {"synth": 12.0}
    info = StageInfo(2, 5, "qat", run_started=0.0, started=100.0, estimate_s=30.0, after_s=5.0)
    assert info.run_left(now=110.0) == 25.0 and info.run_left(now=110.0, loop_left=40.0) == 45.0
    assert StageInfo(2, 5, "qat", 0.0, 100.0, 30.0, None).run_left(110.0) is None  # a later stage without a timing


NOISE_TRIGGER = """
import argparse, sys
from pathlib import Path
from pipeline.cli import output
output.configure(argparse.Namespace(quiet=False, verbose=False, log_file=Path(sys.argv[1])))
import torch
import litert_torch  # torchao's "Failed to load", torch's pytree warning
out = Path(sys.argv[1]).with_suffix(".tflite")
litert_torch.convert(torch.nn.Conv2d(1, 2, 3).eval(), (torch.rand(1, 1, 8, 8),)).export(str(out))  # absl's C++ lines
from ai_edge_litert.interpreter import Interpreter
Interpreter(model_path=str(out)).allocate_tensors()  # TFLite's "INFO: Created TensorFlow Lite XNNPACK delegate"
print("made it", file=sys.stderr)
"""
NOISE = ("Failed to load", "is an Enum subclass", "absl::InitializeLog", "flatbuffer_export.cc", "XNNPACK delegate")


def test_library_noise_is_hidden_unless_verbose_and_kept_in_the_log(tmp_path):
    """What `pipeline run --target all` printed from torchao, torch, absl and LiteRT: not on stderr by default, in the
    log file (which proves the libraries did print it, so the test cannot pass by the noise going away)."""
    log = tmp_path / "noise.log"
    res = subprocess.run([sys.executable, "-c", NOISE_TRIGGER, str(log)], capture_output=True, text=True, cwd=ROOT,
                         env=_env(), timeout=600)
    assert res.returncode == 0 and "made it" in res.stderr, res.stderr[-3000:]
    for fragment in NOISE:
        assert fragment not in res.stderr, res.stderr[-3000:]
    # The log proves the libraries printed: a Python logger's line (torchao) and a native fd-2 line (LiteRT's INFO)
    # always; absl's converter lines did not appear in one full-suite run, so they are not required.
    logged = [f for f in NOISE if f in log.read_text()]
    assert {"Failed to load", "XNNPACK delegate"} <= set(logged), logged


# --- ImageFolder eval data: centre crop, squash, a user's function ----------------------------------------------

@pytest.fixture(scope="module")
def card():
    from pipeline.config import ModelConfig
    from pipeline.models.loading import load_model

    return load_model(ModelConfig())[1]


def _padded_folder(root: Path, images: np.ndarray, labels: np.ndarray, wide: bool) -> None:
    """Each 28×28 image centred on a black 28×56 (wide) or 56×28 canvas: a non-square picture of the same garment."""
    from PIL import Image

    for c in range(10):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i, (x, y) in enumerate(zip(images, labels)):
        canvas = np.zeros((28, 56) if wide else (56, 28), np.uint8)
        if wide:
            canvas[:, 14:42] = x
        else:
            canvas[14:42] = x
        Image.fromarray(canvas).save(root / f"c{y}" / f"{i}.png")


def test_image_folder_is_centre_cropped_not_squashed(tmp_path, card, fmnist_test):
    from pipeline.evaldata import digest, load_eval_data

    x, y = fmnist_test
    u8 = np.round(x[:20, 0] * 255).astype(np.uint8)
    _padded_folder(tmp_path / "wide", u8[:10], y[:10], wide=True)
    _padded_folder(tmp_path / "tall", u8[10:], y[10:], wide=False)
    for name, part in (("wide", slice(0, 10)), ("tall", slice(10, 20))):
        order = np.argsort(y[part], kind="stable")  # the loader reads class by class
        want = u8[part][order].astype(np.float32)[:, None] / 255
        crop, labels = load_eval_data(tmp_path / name, card)
        assert np.array_equal(labels, y[part][order])
        assert np.array_equal(crop, want)  # the garment itself, pixel for pixel
        squash, _ = load_eval_data(tmp_path / name, card, transform="squash")
        assert np.abs(squash - want).mean() > 0.05  # the old behaviour: squeezed to half its width or height
    assert digest(tmp_path / "wide", "center-crop") != digest(tmp_path / "wide", "squash")


def test_user_transform_function(tmp_path, card, fmnist_test, monkeypatch):
    from pipeline.errors import ConfigError, UserError
    from pipeline.evaldata import digest, load_eval_data

    x, y = fmnist_test
    u8 = np.round(x[:10, 0] * 255).astype(np.uint8)
    _padded_folder(tmp_path / "data", u8, y[:10], wide=True)
    fn = tmp_path / "prep.py"
    fn.write_text("import numpy as np\n\ndef left(img):\n    return np.asarray(img, dtype=np.float32)[None, :, 14:42] / 255\n\n"
                  "def wrong(img):\n    return np.zeros((3, 28, 28), np.float32)\n")
    order = np.argsort(y[:10], kind="stable")
    images, _ = load_eval_data(tmp_path / "data", card, transform=f"{fn}:left")
    assert np.array_equal(images, u8[order].astype(np.float32)[:, None] / 255)
    monkeypatch.chdir(tmp_path)  # module:function, imported from the working directory as `python -m` would
    assert np.array_equal(load_eval_data(tmp_path / "data", card, transform="prep:left")[0], images)
    with pytest.raises(UserError, match=r"returned shape \(3, 28, 28\) for .*\.png; the model takes \(1, 28, 28\)"):
        load_eval_data(tmp_path / "data", card, transform=f"{fn}:wrong")
    with pytest.raises(UserError, match="has no function 'nope'; callables there: left, wrong"):
        load_eval_data(tmp_path / "data", card, transform=f"{fn}:nope")
    with pytest.raises(ConfigError, match="center-crop, center-crop:RATIO"):
        load_eval_data(tmp_path / "data", card, transform="centre-crop")
    before = digest(tmp_path / "data", f"{fn}:left")
    fn.write_text(fn.read_text() + "\n# edited\n")
    assert digest(tmp_path / "data", f"{fn}:left") != before  # an edited function re-reads the data


def test_bad_transform_is_a_one_line_config_error(tmp_path, capsys, clean_output):
    from pipeline.cli import main

    assert main(["run", "--dry-run", "--set", "check.eval_transform=center-crop:1.5", "--out", str(tmp_path / "run")]) == 3
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("error: check.eval_transform (--eval-transform) 'center-crop:1.5'"), err


def test_a_refused_choice_is_one_line_even_through_the_libraries_teardown(tmp_path):
    """LiteRT's C++ destructors print "INFO: [accelerator_registry.cc] DestroyAccelerator" after Python's atexit; without -v
    they must not reach the terminal after the one-line error (they did: six lines after every LiteRT accelerator probe)."""
    from runtimes.accelerators import available

    if "gpu" in available("litert"):
        pytest.skip("this host has a LiteRT GPU accelerator: the refusal cannot be shown here")
    res = subprocess.run([sys.executable, "-m", "pipeline", "run", "--runtime-accelerator", "litert:gpu", "--target", "tflite",
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 3, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: litert delegate 'gpu' is not available") and "available: xnnpack" in lines[0], lines
