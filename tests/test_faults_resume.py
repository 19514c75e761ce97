"""Data lost: a long stage killed in the middle resumes inside the stage and ends bit-for-bit where an uninterrupted run ends.

Real processes for the kills: the CLI runs into folder A uninterrupted, and into folder B with
``ZSQ_KILL_AT=<point>:<n>`` (the process SIGKILLs itself there, :mod:`runtimes.faults`) after a checkpoint
was written; the same command without the variable then finishes B. B's student (and its synthetic set)
must equal A's. The default method covers image inversion (``synth.batch``) and the QAT loop every
recipe uses (``qat.step``); GDFQ covers a generator's warm-up (``synth.generator_step``) and a QAT whose
recipe trains a generator too. The other recipes' state (ZAQ's adversarial generator, HAST's hard-sample
stream and FGSM, FDDA's noise stream) is checked in-process, interrupted by an exception at the same points.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from tests.faults_doc import Fault, by_test

AREA = "Data lost or mixed"
FAULTS = [
    Fault(AREA, "`kill -9` during image inversion, then during QAT (default method)",
          "the rerun resumes at the last finished batch and QAT step; student and synthetic set equal an uninterrupted run's",
          "test_default_method_resumes_inside_synth_and_qat", message="resumed qat at step 4/6 from checkpoints/qat.pt", exit_code=0),
    Fault(AREA, "`kill -9` during a generator warm-up, then during QAT (gdfq)",
          "the rerun resumes the generator and the QAT loop; student and synthetic set equal an uninterrupted run's",
          "test_generator_method_resumes_inside_warmup_and_qat", message="resumed synth warmup at step 4/6", exit_code=0),
    Fault(AREA, "QAT of zaq, hast, fdda interrupted after a checkpoint",
          "the rerun resumes every stream and generator the recipe carries; the student equals an uninterrupted run's",
          "test_every_recipe_resumes_bit_for_bit", message="resumed qat at step 2/5"),
    Fault(AREA, "a checkpoint left by another config (other stage key)", "it is removed and the stage starts from step 0",
          "test_a_checkpoint_of_another_key_is_removed", message="removing stale checkpoint"),
    Fault(AREA, "a truncated checkpoint file", "it is removed and the stage starts from step 0",
          "test_a_truncated_checkpoint_is_ignored", message="ignoring unreadable checkpoint"),
    Fault(AREA, "a checkpoint cannot be written (full disk, unwritable folder)", "one log line; the loop goes on without it",
          "test_a_checkpoint_that_cannot_be_written_does_not_stop_the_loop", message="could not write checkpoint"),
]
ROW = by_test(FAULTS)

SMALL = ["--budget", "tiny", "--no-bench", "--set", "synthesis.num_images=16", "--set", "synthesis.holdout_images=8",
         "--set", "synthesis.holdout_options.iterations=2", "--set", "qat.steps=6", "--set", "qat.calib_images=8",
         "--set", "qat.batch_size=8", "--set", "qat.act_init=minmax"]  # minmax: calibration is most of a tiny qat stage
BN = [*SMALL, "--set", "synthesis.options.batch_size=8", "--set", "synthesis.options.iterations=3"]
GDFQ = [*SMALL, "--method", "gdfq", "--set", "synthesis.options.warmup_steps=6", "--set", "synthesis.options.gen_batch_size=8",
        "--set", "synthesis.options.gen_width=16"]
# a checkpoint every 2 steps (every inversion batch), with no time floor: small enough for a 6-step run
CHECKPOINTS = ["--set", "host.checkpoint_every=2", "--set", "host.warmup_checkpoint_every=2", "--set", "host.checkpoint_min_s=0"]


def _pipeline(*args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZSQ_QUIET": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}  # a killed process's log too
    env.pop("ZSQ_KILL_AT", None)
    if kill_at:
        env["ZSQ_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def _ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def _killed(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == -9, f"expected the process to kill itself (rc {res.returncode}): " + res.stderr[-3000:]
    return res


def _same_student(a: Path, b: Path) -> None:
    """Byte-identical files, or (should torch.save ever stop being byte-deterministic) identical tensors."""
    fa, fb = a / "qat" / "student.pt", b / "qat" / "student.pt"
    if fa.read_bytes() == fb.read_bytes():
        return
    sa, sb = torch.load(fa, weights_only=True), torch.load(fb, weights_only=True)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"student differs at {k}"


def _same_set(a: Path, b: Path, which: str = "train_set") -> None:
    """A synthetic set (``train_set`` or ``holdout_set``): images, labels, meta and extras (a generator's weights)
    equal; the files themselves are not compared, their zip headers carry times."""
    from pipeline.layout import RunLayout
    from pipeline.synthesis import SyntheticSet

    sa, sb = (SyntheticSet.load(getattr(RunLayout(p), which)) for p in (a, b))
    assert np.array_equal(sa.images, sb.images) and np.array_equal(sa.labels, sb.labels)
    assert json.dumps(sa.meta, sort_keys=True) == json.dumps(sb.meta, sort_keys=True)
    assert sa.extras.keys() == sb.extras.keys()
    for k in sa.extras:
        assert np.array_equal(sa.extras[k], sb.extras[k]), f"extra {k} differs"


def _kill_and_resume(tmp_path: Path, args: list[str], synth_point: str) -> tuple[Path, Path, list[str]]:
    """A: uninterrupted, default checkpoint settings. B: killed in synth, rerun killed in qat, rerun to the end."""
    a, b = tmp_path / "a", tmp_path / "b"
    _ok(_pipeline("qat", "--out", str(a), *args))
    _killed(_pipeline("qat", "--out", str(b), *args, *CHECKPOINTS, kill_at=synth_point))
    assert list((b / "checkpoints").glob("synth.*.pt")), "no synth checkpoint before the kill"
    second = _killed(_pipeline("qat", "--out", str(b), *args, *CHECKPOINTS, kill_at="qat.step:5"))
    assert (b / "checkpoints" / "qat.pt").exists(), "no qat checkpoint before the kill"
    assert not (b / "qat" / "student.pt").exists()
    third = _ok(_pipeline("qat", "--out", str(b), *args, *CHECKPOINTS))
    return a, b, [second.stdout + second.stderr, third.stdout + third.stderr]


def test_default_method_resumes_inside_synth_and_qat(tmp_path):
    a, b, (second, third) = _kill_and_resume(tmp_path, BN, "synth.batch:2")
    assert "resumed synth inversion at batch 1/2" in second, second
    assert ROW["test_default_method_resumes_inside_synth_and_qat"].message in third, third
    _same_set(a, b)
    _same_set(a, b, "holdout_set")
    _same_student(a, b)
    assert not list((b / "checkpoints").glob("synth*.pt"))  # a finished stage leaves no checkpoint


def test_generator_method_resumes_inside_warmup_and_qat(tmp_path):
    a, b, (second, third) = _kill_and_resume(tmp_path, GDFQ, "synth.generator_step:5")
    assert ROW["test_generator_method_resumes_inside_warmup_and_qat"].message in second, second
    assert "resumed qat at step 4/6 from checkpoints/qat.pt" in third, third
    _same_set(a, b)
    _same_student(a, b)


# --- in-process: every recipe's state --------------------------------------------------------------------------

class Interrupted(Exception):
    pass


def _interrupt_at(monkeypatch, name: str, nth: int) -> None:
    """Raise at the ``nth`` arrival at fault point ``name`` (an in-process stand-in for ZSQ_KILL_AT)."""
    from runtimes import faults

    seen = {"n": 0}
    real = faults.point

    def point(at: str) -> None:
        if at == name:
            seen["n"] += 1
            if seen["n"] >= nth:
                raise Interrupted(at)
        real(at)

    monkeypatch.setattr(faults, "point", point)


RECIPES = {
    "zaq": {"gen_width": 16, "q_steps_per_gen_step": 2},
    "hast": {"batch_size": 8, "iterations": 2, "gen_warmup_steps": 3, "gen_batch_size": 8, "gen_width": 16},
    "fdda": {"warmup_steps": 3, "gen_batch_size": 8, "gen_width": 16},
}


@pytest.mark.parametrize("method", list(RECIPES))
def test_every_recipe_resumes_bit_for_bit(method, tmp_path, monkeypatch, fmnist_test):
    from pipeline.config import build_config
    from pipeline.runner import RunContext, Runner
    from pipeline.stages import STAGES

    sets = [f"synthesis.method={method}", "synthesis.num_images=8", "synthesis.holdout_images=8",
            'synthesis.holdout_options={"batch_size": 8, "iterations": 2}', f"synthesis.options={json.dumps(RECIPES[method])}",
            "qat.steps=5", "qat.batch_size=4", "qat.calib_images=8", "qat.bits=w4a4", "qat.act_init=minmax",
            "host.checkpoint_every=2", "host.warmup_checkpoint_every=1", "host.checkpoint_min_s=0"]
    if method == "fdda":
        x, y = fmnist_test
        idx = np.concatenate([np.nonzero(y == c)[0][:1] for c in range(10)])
        np.savez(tmp_path / "calib.npz", images=x[idx], labels=y[idx])
        sets.append(f"synthesis.calib_data={tmp_path / 'calib.npz'}")
    logs: list[str] = []
    out = tmp_path / "run"

    def run(redo: str | None = None) -> None:
        cfg = build_config("default", None, {"out": str(out)}, sets)
        Runner(STAGES, RunContext(cfg, out, log=logs.append)).run(until="qat", redo_from=redo)

    run()  # uninterrupted: synth, then qat
    uninterrupted = (out / "qat" / "student.pt").read_bytes()
    with monkeypatch.context() as m:
        _interrupt_at(m, "qat.step", 4)  # steps 0-2 done; the checkpoint after steps 0-1 is on disk
        with pytest.raises(Interrupted):
            run(redo="qat")
    assert (out / "checkpoints" / "qat.pt").exists()
    logs.clear()
    run(redo="qat")
    assert any(ROW["test_every_recipe_resumes_bit_for_bit"].message in line for line in logs), logs
    assert (out / "qat" / "student.pt").read_bytes() == uninterrupted


# --- the checkpoint file itself ---------------------------------------------------------------------------------

def _checkpointer(tmp_path: Path, key: str, logs: list[str]):
    from pipeline.train.checkpoint import Checkpointer

    return Checkpointer(tmp_path / "checkpoints" / "qat.pt", key, every=1, total=4, min_interval_s=0, log=logs.append, root=tmp_path)


def test_a_checkpoint_of_another_key_is_removed(tmp_path):
    logs: list[str] = []
    old = _checkpointer(tmp_path, "key-a", logs)
    old.resume()
    assert old.maybe_save(1, lambda: {"w": torch.ones(2)}, lambda: {})
    assert _checkpointer(tmp_path, "key-a", logs).resume().step == 1
    assert _checkpointer(tmp_path, "key-b", logs).resume() is None
    assert ROW["test_a_checkpoint_of_another_key_is_removed"].message in logs[-1]
    assert not (tmp_path / "checkpoints" / "qat.pt").exists()


def test_a_truncated_checkpoint_is_ignored(tmp_path):
    logs: list[str] = []
    ck = _checkpointer(tmp_path, "key-a", logs)
    ck.resume()
    ck.maybe_save(1, lambda: {"w": torch.ones(1000)}, lambda: {})
    path = tmp_path / "checkpoints" / "qat.pt"
    path.write_bytes(path.read_bytes()[:200])
    assert _checkpointer(tmp_path, "key-a", logs).resume() is None
    assert ROW["test_a_truncated_checkpoint_is_ignored"].message in logs[-1]
    assert not path.exists()


def test_every_random_stream_survives_a_checkpoint(tmp_path):
    """torch, numpy (with its cached Gaussian), python ``random`` and a loop's own generator draw on after a reload
    exactly as they would have: the weights_only-compatible conversions lose nothing."""
    import random

    from pipeline.train.checkpoint import rank_state, set_rank_state

    gen = torch.Generator().manual_seed(5)
    np.random.standard_normal()  # leaves numpy's second Gaussian cached: part of the state
    random.gauss(0, 1)  # the same for python's

    def draw() -> list:
        return [torch.rand(3).tolist(), np.random.standard_normal(3).tolist(), random.gauss(0, 1), random.random(),
                torch.rand(3, generator=gen).tolist()]

    logs: list[str] = []
    ck = _checkpointer(tmp_path, "key-a", logs)
    ck.resume()
    ck.maybe_save(1, dict, lambda: rank_state({"g": gen}))
    expected = draw()
    resumed = _checkpointer(tmp_path, "key-a", logs).resume()
    set_rank_state(resumed.rank, {"g": gen})
    assert draw() == expected


def test_a_checkpoint_that_cannot_be_written_does_not_stop_the_loop(tmp_path):
    logs: list[str] = []
    (tmp_path / "checkpoints").write_text("a file where the folder goes")
    ck = _checkpointer(tmp_path, "key-a", logs)
    ck.resume()
    assert ck.maybe_save(1, lambda: {"w": torch.ones(2)}, lambda: {})  # no exception
    assert ROW["test_a_checkpoint_that_cannot_be_written_does_not_stop_the_loop"].message in logs[-1]
    assert "\n" not in logs[-1]
