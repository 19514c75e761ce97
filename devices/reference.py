"""Does the device compute what the host computed? Agreement of an artifact's outputs with the expected outputs.

The reference inputs (the held-out synthetic set) and the expected outputs (the FP
model's logits for an FP32 artifact, the fake-quant model's for an integer one) travel
with the artifact as ``.npy`` files; see :mod:`devices.bundle`. Only numpy here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_MIN_AGREEMENT = 0.98


@dataclass(frozen=True)
class Tolerance:
    min_top1_agreement: float = DEFAULT_MIN_AGREEMENT  # below: status "mismatch"
    max_abs_diff: float | None = None  # above: flagged (a runtime computing in another precision, say)
    output_scale: float | None = None  # one output LSB at an integer edge: diffs are also given in LSBs


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def metrics(outputs: np.ndarray, expected: np.ndarray, output_scale: float | None = None) -> dict:
    """Top-1 agreement, KL(expected‖outputs), cosine and absolute differences (also in output LSBs), both N×C.

    The one comparison of the project: the host check stage and the device reference check both use it.
    """
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    r = expected.reshape(len(expected), -1).astype(np.float64)
    diff = np.abs(a - r)
    la, lr = _log_softmax(a), _log_softmax(r)
    cos = (a * r).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(r, axis=1), 1e-12)
    out: dict = {
        "images": int(len(a)),
        "top1_agreement": float((a.argmax(1) == r.argmax(1)).mean()),
        "kl": float((np.exp(lr) * (lr - la)).sum(1).mean()),
        "min_cosine": float(cos.min()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
    }
    if output_scale:
        out["max_abs_diff_lsb"] = out["max_abs_diff"] / output_scale
        out["mean_abs_diff_lsb"] = out["mean_abs_diff"] / output_scale
    return out


def compare(outputs: np.ndarray, expected: np.ndarray, tol: Tolerance = Tolerance()) -> dict:
    """:func:`metrics` judged against a tolerance: status ``ok`` or ``mismatch``."""
    if outputs.shape != expected.shape:
        return {"status": "mismatch", "reason": f"output shape {list(outputs.shape)} differs from the expected {list(expected.shape)}"}
    out = {**metrics(outputs, expected, tol.output_scale), "min_top1_agreement": tol.min_top1_agreement}
    out["status"] = "ok" if out["top1_agreement"] >= tol.min_top1_agreement else "mismatch"
    if tol.max_abs_diff is not None:
        out["max_abs_diff_limit"] = tol.max_abs_diff
        out["within_abs_diff_limit"] = bool(out["max_abs_diff"] <= tol.max_abs_diff)
    return out
