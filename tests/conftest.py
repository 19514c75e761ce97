"""Shared fixtures: the real bundled model and real Fashion-MNIST test images (never seen by the pipeline)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ZSQ_QUIET", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def bundled():
    from pipeline.config import ModelConfig
    from pipeline.models.loading import load_model

    return load_model(ModelConfig())


@pytest.fixture(scope="session")
def fmnist_test() -> tuple[np.ndarray, np.ndarray]:
    from benchmarks.fashion_mnist import load_split

    return load_split("test")


@pytest.fixture(scope="session")
def fmnist_npz(tmp_path_factory, fmnist_test) -> Path:
    """2,000 real test images as an --eval-data .npz (uint8, N×28×28 like the original files)."""
    x, y = fmnist_test
    path = tmp_path_factory.mktemp("evaldata") / "fmnist_test_2k.npz"
    np.savez(path, images=np.round(x[:2000, 0] * 255).astype(np.uint8), labels=y[:2000])
    return path


def run_without_torch(code: str, timeout: int = 120) -> str:
    """Run ``code`` in a fresh interpreter, then fail if it imported torch or tensorflow; returns its stdout.

    ``runtimes/`` and ``devices/`` run on devices that have neither, so importing and
    using them must not pull either in.
    """
    import subprocess

    check = "\nimport sys as _s\n_bad = [m for m in ('torch', 'tensorflow') if m in _s.modules]\nassert not _bad, f'imported {_bad}'\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code + check], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> dict:
    """W8A8 ResNet-20 artifacts of every target on both weight grids, with references, for the emulated-CPU tests."""
    from tests.emulated import make_artifacts

    return make_artifacts(tmp_path_factory.mktemp("cpu_kinds"))
