"""Benchmark: does KD QAT on a small synthetic pool overfit it, and is it the pool's size or its images?

Not a test. Trains the pipeline's default QAT loop (KD at T=1, Adam, cosine) on the
bundled model from several fixed pools: BN-inverted images after N inversion steps,
and real Fashion-MNIST training images of the same count (and a large real set).
Real accuracy is measured at chosen steps along the way, plus the final KD loss on
the pool and on real images: a pool the student fits while real images drift away
(loss on the pool near 0, on real images growing, accuracy peaking then falling) is
overfit. This is how the spine's 77 % at W4A4 was traced to 60-step inversion.

    python -m benchmarks.pool_overfit                                    # W4A4, the table in RESULTS.md
    python -m benchmarks.pool_overfit --bits w3a3 --inversion-steps 300 --no-large-real
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch


def inverted_pool(teacher, card, n: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from pipeline.synthesis import create_method

    torch.manual_seed(seed)
    pool = create_method("bn-inversion", {"batch_size": 64, "iterations": steps}).synthesize(teacher, card, n, seed)
    return torch.from_numpy(pool.images), torch.from_numpy(pool.labels)


def real_pool(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = np.random.default_rng(seed).permutation(len(y))[:n]
    return torch.from_numpy(x[idx]), torch.from_numpy(y[idx])


def train_and_trace(teacher, bits: str, x: torch.Tensor, y: torch.Tensor, x_eval: torch.Tensor, y_eval: np.ndarray,
                    steps: int, batch_size: int, eval_at: set[int]) -> dict:
    """Calibrate on the pool, train ``steps`` KD steps, and return real accuracy at ``eval_at`` steps and KD losses."""
    from benchmarks.methods import accuracy, accuracy_mid_training
    from pipeline.quant.calibrate import calibrate
    from pipeline.quant.distill import kd_kl
    from pipeline.quant.prepare import QuantProfile, quantize_model
    from pipeline.quant.qat import QATSettings, train_qat
    from pipeline.quant.scheme import BitScheme

    torch.manual_seed(0)
    student = quantize_model(teacher, BitScheme.parse(bits, None), QuantProfile.named("deploy"))
    calib = x[:256]
    calibrate(student, [calib[i : i + 64] for i in range(0, len(calib), 64)], act_init="mse")
    curve = {0: accuracy(student, x_eval, y_eval)}
    seen = {"step": 0}

    def trace(s, _t, _x, _y, _sl, _tl) -> torch.Tensor:  # an extra-loss hook that only measures
        done = seen["step"]  # optimiser steps taken before this one
        seen["step"] += 1
        if done in eval_at and done:
            curve[done] = accuracy_mid_training(s, x_eval, y_eval)
        return torch.zeros(())

    train_qat(student, teacher, x, y, QATSettings(steps=steps, batch_size=batch_size, lr=1e-5, quant_lr=1e-4), seed=0,
              extra_loss=trace)
    curve[steps] = accuracy(student, x_eval, y_eval)
    with torch.no_grad():
        kd_pool = kd_kl(student(x[:256]), teacher(x[:256]), 1.0).item()
        kd_real = kd_kl(student(x_eval[:256]), teacher(x_eval[:256]), 1.0).item()
    return {"accuracy_at_step": curve, "kd_loss_pool": kd_pool, "kd_loss_real": kd_real}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", default="w4a4")
    p.add_argument("--pool-size", type=int, default=256)
    p.add_argument("--inversion-steps", type=int, nargs="+", default=[60, 120, 200, 300])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-at", type=int, nargs="+", default=[40, 100, 200])
    p.add_argument("--test-images", type=int, default=2000, help="first N images of the test split (default 2000)")
    p.add_argument("--no-large-real", dest="large_real", action="store_false", help="skip the 12,000-real-image pool")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    os.environ.setdefault("ZSQ_QUIET", "1")
    torch.set_num_threads(args.threads)
    from benchmarks.fashion_mnist import load_split
    from benchmarks.methods import load_teacher

    teacher, card = load_teacher(None)
    xt, yt = load_split("test")
    xtr, ytr = load_split("train")
    x_eval, y_eval = torch.from_numpy(xt[: args.test_images]), yt[: args.test_images]
    pools = [(f"inverted, {s} steps", lambda s=s: inverted_pool(teacher, card, args.pool_size, s, seed=0))
             for s in args.inversion_steps]
    pools.append((f"{args.pool_size} real training images", lambda: real_pool(xtr, ytr, args.pool_size, 0)))
    if args.large_real:
        pools.append(("12,000 real training images", lambda: real_pool(xtr, ytr, 12_000, 0)))
    steps = sorted({*args.eval_at, args.steps})
    print(f"| pool ({args.bits}) | after calibration | " + " | ".join(f"{s} steps" for s in steps) + " | KD loss pool / real (end) |")
    print("|---|" + "---:|" * (len(steps) + 2))
    for name, make in pools:
        t0 = time.time()
        x, y = make()
        r = train_and_trace(teacher, args.bits, x, y, x_eval, y_eval, args.steps, args.batch_size, set(args.eval_at))
        print(json.dumps({"pool": name, "seconds": round(time.time() - t0), **r}), file=sys.stderr, flush=True)
        acc = r["accuracy_at_step"]
        print(f"| {name} | {100 * acc[0]:.1f} | " + " | ".join(f"{100 * acc[s]:.1f}" for s in steps)
              + f" | {r['kd_loss_pool']:.4f} / {r['kd_loss_real']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
