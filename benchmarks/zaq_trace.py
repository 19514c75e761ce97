"""Benchmark: trace one ZAQ run (``fast`` budget) to see why it collapses at W3A3.

Not a test. Every ``--every`` Q steps it prints, as JSON lines: real accuracy on the
first 1,000 test images, the activation ranges (mean and max learned upper bound),
and, for the last batch of generator samples, pixel statistics, the teacher's mean
confidence and the number of distinct classes the teacher sees in the batch. A
generator that mode-collapses shows ``teacher_classes`` falling to 1; a range
collapse would show ``act_hi_mean`` moving instead.

    python -m benchmarks.zaq_trace --bits w3a3 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", default="w3a3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", default="fast")
    p.add_argument("--every", type=int, default=20)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, as `pipeline run --set`")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    os.environ.setdefault("ZSQ_QUIET", "1")
    torch.set_num_threads(args.threads)

    import pipeline.synthesis.methods.zaq as zaq
    from benchmarks.fashion_mnist import load_split
    from benchmarks.methods import _settings, accuracy, accuracy_mid_training, load_teacher
    from pipeline.config import build_config
    from pipeline.quant.prepare import QuantProfile, quantize_model
    from pipeline.quant.quantizers import ActQuantizer
    from pipeline.quant.scheme import BitScheme
    from pipeline.synthesis import QATJob, create_method

    teacher, card = load_teacher(None)
    xt, yt = load_split("test")
    x_eval, y_eval = torch.from_numpy(xt[:1000]), yt[:1000]
    cfg = build_config(args.budget, cli={"synthesis.method": "zaq", "synthesis.seed": args.seed, "qat.seed": args.seed},
                       sets=args.set)
    strategy = create_method("zaq", cfg.synthesis.options)
    torch.manual_seed(args.seed)
    pool = strategy.synthesize(teacher, card, cfg.synthesis.num_images, args.seed)
    torch.manual_seed(args.seed)
    student = quantize_model(teacher, BitScheme.parse(args.bits, None), QuantProfile.named("deploy"))
    job = QATJob(student, teacher, card, pool, _settings(cfg), seed=args.seed, calib_images=cfg.qat.calib_images)
    strategy.calibrate(job)

    last: dict[str, torch.Tensor] = {}
    sample = zaq.Sampler.__call__

    def recording_sample(self, n: int):  # the same samples, also kept for the trace
        x, y = sample(self, n)
        last["x"] = x.detach()
        return x, y

    def tracing_progress(steps, desc=None):  # zaq's loop iterates this: measure between Q steps
        for i in steps:
            if i % args.every == 0 or i == len(steps) - 1:
                row = {"step": i, "accuracy": accuracy_mid_training(student, x_eval, y_eval)}
                hi = [float(m.hi) for m in student.modules() if isinstance(m, ActQuantizer)]
                row.update(act_hi_mean=float(np.mean(hi)), act_hi_max=max(hi))
                if "x" in last:
                    x = last["x"]
                    with torch.no_grad():
                        prob = teacher(x).softmax(1)
                    row.update(pixel_mean=float(x.mean()), pixel_std=float(x.std()),
                               teacher_confidence=float(prob.max(1).values.mean()),
                               teacher_classes=int(prob.argmax(1).unique().numel()))
                print(json.dumps(row), flush=True)
            yield i

    progress = zaq.progress
    zaq.Sampler.__call__, zaq.progress = recording_sample, tracing_progress
    try:
        strategy.train(job)
    finally:
        zaq.Sampler.__call__, zaq.progress = sample, progress
    print(json.dumps({"final_accuracy_10k": accuracy(student, torch.from_numpy(xt), yt)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
