"""Fault injection on the run folder, with real processes: stale caches, concurrent runs, killed writers, planted
symlinks, read-only and full filesystems, corrupt bookkeeping. Each test drives the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.faults_doc import Fault, by_test
from tests.test_bad_input import FAST, assert_one_line_error, pipeline

WRONG, LOST, LATE = "Wrong answers presented as right", "Data lost or mixed", "Errors that arrive too late or as tracebacks"
FAULTS = [
    Fault(WRONG, "a module the model file imports is edited", "every stage runs again (the key holds a digest of the "
          "loaded model's code, graph and weights)", "test_editing_a_module_the_factory_imports_reruns_the_stages"),
    Fault(LOST, "a second run into a folder a run is writing", "the second run refuses; the first finishes", "test_second_run_into_a_busy_folder_is_refused",
          "is in use by another pipeline process", 3),
    Fault(LOST, "`--out ''`", "refused (it would be the current directory)", "test_out_that_is_empty_a_file_or_a_foreign_folder_is_refused",
          "--out is empty", 3),
    Fault(LOST, "`--out` names a file", "refused", "test_out_that_is_empty_a_file_or_a_foreign_folder_is_refused", "is a file, not a folder", 3),
    Fault(LOST, "`--out` is a non-empty folder that is not a run folder", "refused unless `--force`",
          "test_out_that_is_empty_a_file_or_a_foreign_folder_is_refused", "is not empty and is not a run folder", 3),
    Fault(LOST, "a run that fails (`--method foo`) or is killed mid-stage in a finished run folder", "the folder's "
          "config.json still describes its artifacts (it is written only when a stage finishes)",
          "test_a_failed_run_leaves_the_config_of_what_the_folder_holds"),
    Fault(LOST, "`--target` (or `--bits`) changed in an existing run folder", "the previous export's artifacts move to "
          "`superseded/`; the folder holds only what export.json lists", "test_switching_target_sets_the_old_artifacts_aside"),
    Fault(LOST, "`kill -9` after an artifact is written, before its integer gate ran", "no artifact under its final name; "
          "the next run removes the leftover temporary folder and finishes", "test_kill_before_the_integer_gate_leaves_no_artifact_and_the_next_run_sweeps"),
    Fault(LOST, "symlinks planted at the old fixed temporary names (`config.json.tmp`, `report.json.tmp`, ...)",
          "never followed: every write goes to a fresh unique temporary file", "test_planted_symlinks_at_temp_names_are_not_followed"),
    Fault(LATE, "corrupt `manifest.json`", "one line; `--force` redoes every stage", "test_corrupt_manifest_is_one_line_and_force_redoes",
          "manifest.json is corrupt", 3),
    Fault(LATE, "`--out` on a read-only filesystem", "one line", "test_read_only_out_is_one_line", "Read-only file system", 3),
    Fault(LATE, "the disk fills up while a stage writes", "one line; no partial file; finished stages kept",
          "test_full_disk_is_one_line_and_leaves_no_partial_file", "No space left on device", 3),
    Fault(LATE, "`pipeline run --device` naming a device that does not answer", "one line before the first stage, not after QAT",
          "test_unreachable_device_fails_before_the_first_stage", "is not reachable", 6),
    Fault(LATE, "`--dry-run`", "the resolved config and, per stage, cached or runs and why; nothing written",
          "test_dry_run_writes_nothing_and_says_what_would_run"),
]
ROW = by_test(FAULTS)


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A tiny run of the bundled model up to export (ONNX), copied by the tests that need a finished folder."""
    out = tmp_path_factory.mktemp("base") / "run"
    res = pipeline("export", *FAST, "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def copy_run(base: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(base, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


USER_MODEL = '''
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
from torch import nn
from blocks import Block


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(Block(1, 8), Block(8, 8))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


def build():
    torch.manual_seed(0)
    return Net()
'''
BLOCKS = '''
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout)

    def forward(self, x):
        return ACT(self.bn(self.conv(x)))


def ACT(x):
    return x.clamp(min=0)
'''


def test_editing_a_module_the_factory_imports_reruns_the_stages(tmp_path):
    (tmp_path / "net.py").write_text(USER_MODEL)
    (tmp_path / "blocks.py").write_text(BLOCKS)
    args = ["synth", *FAST, "--model", f"{tmp_path / 'net.py'}:build", "--input-shape", "1,16,16", "--out", str(tmp_path / "run")]
    first = pipeline(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    same = pipeline(*args)
    assert "[synth] up to date" in same.stderr, same.stderr[-2000:]
    (tmp_path / "blocks.py").write_text(BLOCKS.replace("x.clamp(min=0)", "x.clamp(min=0, max=6)"))  # the helper forward calls
    edited = pipeline(*args)
    assert edited.returncode == 0, edited.stderr[-3000:]
    assert "[synth] running" in edited.stderr, edited.stderr[-2000:]


def test_second_run_into_a_busy_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "ZSQ_QUIET": "1", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "pipeline", "synth", *FAST, "--seed", "1", "--out", str(out)],
                             cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in first.stderr:  # wait until the first run is inside its first stage
        lines.append(line)
        if "[synth] running" in line:
            break
    first.send_signal(signal.SIGSTOP)  # paused inside its stage (a tiny stage could end before the second run starts)
    try:
        second = pipeline("synth", *FAST, "--seed", "2", "--out", str(out))
    finally:
        first.send_signal(signal.SIGCONT)
    rest = first.stderr.read()
    assert first.wait(timeout=600) == 0, "".join(lines) + rest
    row = ROW["test_second_run_into_a_busy_folder_is_refused"]
    assert_one_line_error(second, row.message, "give another --out", code=row.exit_code)
    assert json.loads((out / "config.json").read_text())["_data"]["synthesis"]["seed"] == 1


def test_out_that_is_empty_a_file_or_a_foreign_folder_is_refused(tmp_path):
    rows = [f for f in FAULTS if f.test == "test_out_that_is_empty_a_file_or_a_foreign_folder_is_refused"]
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "config.json").write_text('{"mine": true}')
    before = tree_digest(tmp_path)
    for out, row in zip(["", str(tmp_path / "notes.txt"), str(tmp_path / "project")], rows):
        res = pipeline("synth", *FAST, "--out", out, cwd=tmp_path)
        assert_one_line_error(res, row.message, code=row.exit_code)
    assert tree_digest(tmp_path) == before  # nothing written, nothing overwritten
    forced = pipeline("synth", *FAST, "--out", str(tmp_path / "project"), "--force", "--dry-run")
    assert forced.returncode == 0 and "synth   runs" in forced.stdout, forced.stderr[-2000:]


def test_a_failed_run_leaves_the_config_of_what_the_folder_holds(base_run, tmp_path):
    run = copy_run(base_run, tmp_path)
    config = (run / "config.json").read_text()
    res = pipeline("run", *FAST, "--method", "foo", "--out", str(run))
    assert res.returncode == 3 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert (run / "config.json").read_text() == config
    env = {**os.environ, "ZSQ_QUIET": "1", "PYTHONPATH": str(ROOT), "ZSQ_KILL_AT": "qat.step"}  # dies inside the qat stage
    killed = subprocess.run([sys.executable, "-m", "pipeline", "run", *FAST, "--set", "qat.steps=3", "--out", str(run)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (run / "config.json").read_text() == config  # still the config of the artifacts the folder holds


def test_switching_target_sets_the_old_artifacts_aside(base_run, tmp_path):
    run = copy_run(base_run, tmp_path)
    old = sorted(p.name for p in run.glob("model.*"))
    assert "model.w8a8.onnx" in old
    res = pipeline("export", *FAST, "--target", "openvino", "--out", str(run))
    assert res.returncode == 0, res.stderr[-3000:]
    listed = {Path(a["path"]).name for a in json.loads((run / "export.json").read_text())["artifacts"]}
    now = {p.name for p in run.glob("model.*")}
    assert listed and all(n.endswith((".xml", ".bin")) for n in now), now
    assert {n for n in now if n.endswith(".xml")} == listed
    assert sorted(p.name for p in (run / "superseded").iterdir()) == old


def test_kill_before_the_integer_gate_leaves_no_artifact_and_the_next_run_sweeps(base_run, tmp_path):
    run = copy_run(base_run, tmp_path)
    for p in [*run.glob("model.*"), run / "export.json"]:
        p.unlink()
    env = {**os.environ, "ZSQ_QUIET": "1", "PYTHONPATH": str(ROOT), "ZSQ_KILL_AT": "export.before_gate"}
    killed = subprocess.run([sys.executable, "-m", "pipeline", "export", *FAST, "--out", str(run)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (run / "model.w8a8.onnx").exists()  # the fp32 twin may be in place; the unproven integer file is not
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".zsq-tmp-")]
    assert leftovers, sorted(p.name for p in run.iterdir())
    again = pipeline("export", *FAST, "--out", str(run))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "an interrupted run left" in again.stderr
    assert (run / "model.w8a8.onnx").exists()
    assert not [p for p in run.rglob(".zsq-tmp-*")]


def test_planted_symlinks_at_temp_names_are_not_followed(base_run, tmp_path):
    run = copy_run(base_run, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    names = ["config.json.tmp", "manifest.json.tmp", "report.json.tmp", "report.html.tmp", "export.json.tmp"]
    for name in names:
        (run / name).symlink_to(victim)
    res = pipeline("report", str(run))
    assert res.returncode == 0, res.stderr[-2000:]
    res = pipeline("run", *FAST, "--out", str(run))  # every stage up to date; the report stage and the manifest write
    assert res.returncode == 0, res.stderr[-2000:]
    assert victim.read_text() == "precious"
    assert all((run / n).is_symlink() for n in names)  # not replaced either: our writes never use these names


def test_corrupt_manifest_is_one_line_and_force_redoes(base_run, tmp_path):
    run = copy_run(base_run, tmp_path)
    (run / "manifest.json").write_text('{"stages": {"synth": ')
    res = pipeline("run", *FAST, "--out", str(run))
    row = ROW["test_corrupt_manifest_is_one_line_and_force_redoes"]
    assert_one_line_error(res, row.message, "--force", code=row.exit_code)
    forced = pipeline("run", *FAST, "--out", str(run), "--force", "--dry-run")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert "synth   runs (never ran in this folder)" in forced.stdout, forced.stdout


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"needs root to mount a tmpfs ({res.stderr.strip()[:200]})")


@pytest.fixture
def mounts():
    made: list[Path] = []
    yield made
    for m in made:
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


def test_read_only_out_is_one_line(tmp_path, mounts):
    ro = tmp_path / "ro"
    _mount_tmpfs(ro, "ro,size=1m")
    mounts.append(ro)
    res = pipeline("synth", *FAST, "--out", str(ro / "run"))
    assert_one_line_error(res, ROW["test_read_only_out_is_one_line"].message, "--out", code=ROW["test_read_only_out_is_one_line"].exit_code)


def test_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, mounts):
    small = tmp_path / "small"
    _mount_tmpfs(small, "size=700k")  # room for the synthetic sets, not for the 1.1 MB student
    mounts.append(small)
    run = small / "run"
    res = pipeline("qat", *FAST, "--out", str(run))
    row = ROW["test_full_disk_is_one_line_and_leaves_no_partial_file"]
    assert_one_line_error(res, row.message, "finished stages are kept", code=row.exit_code)
    assert (run / "synthetic" / "train.npz").exists()  # the finished stage is kept
    assert not [p.name for p in run.rglob("*") if p.is_file() and (p.name.startswith(".zsq-tmp-") or p.name.endswith(".tmp")
                                                                  or p.name == "student.pt")]


def test_dry_run_writes_nothing_and_says_what_would_run(base_run, tmp_path):
    run = copy_run(base_run, tmp_path)
    before = tree_digest(run)
    res = pipeline("run", *FAST, "--out", str(run), "--dry-run")
    assert res.returncode == 0, res.stderr[-2000:]
    plan = dict(line.split(None, 1) for line in res.stdout.splitlines() if line.split(" ")[0] in
                ("synth", "qat", "export", "check", "report"))
    assert plan["synth"].startswith("cached") and plan["export"].startswith("cached"), res.stdout
    assert plan["check"].startswith("runs (never ran"), res.stdout
    assert "out: " in res.stdout and "qat:" in res.stdout  # the resolved config
    changed = pipeline("run", *FAST, "--out", str(run), "--dry-run", "--set", "qat.steps=2")
    plan = dict(line.split(None, 1) for line in changed.stdout.splitlines() if line.split(" ")[0] in ("synth", "qat", "export"))
    assert plan["synth"].startswith("cached") and plan["qat"].startswith("runs (its config") and plan["export"].startswith("runs (an earlier"), changed.stdout
    assert tree_digest(run) == before
    fresh = tmp_path / "fresh"
    assert pipeline("run", *FAST, "--out", str(fresh), "--dry-run").returncode == 0
    assert not fresh.exists()


def test_unreachable_device_fails_before_the_first_stage(tmp_path):
    out = tmp_path / "run"
    res = pipeline("run", *FAST, "--device", "ssh://zsq@127.0.0.1:9", "--out", str(out))  # nothing listens on port 9
    row = ROW["test_unreachable_device_fails_before_the_first_stage"]
    assert_one_line_error(res, row.message, code=row.exit_code)  # 6: the device, not the input
    assert "[synth]" not in res.stderr and not out.exists()


def test_the_faults_table_in_docs_matches_the_tests():
    """docs/faults.md is generated from every FAULTS row (python -m tests.faults_doc); stale means the page lies."""
    from tests import faults_doc

    rows = faults_doc.collect()
    assert len({f.area for _, f in rows}) == len(faults_doc.AREAS), "every area has rows"
    assert faults_doc.DOC.read_text() == faults_doc.render(), "docs/faults.md is stale: run python -m tests.faults_doc"
