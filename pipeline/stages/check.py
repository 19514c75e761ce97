"""Stage 4: does each artifact compute the model? Fidelity on held-out synthetic data, real accuracy, latency, size.

Label-free evidence first (the user has no data): top-1 agreement of every
artifact with the FP model and with the fake-quant model, KL divergence and
output differences (in output-LSB units at an integer edge) on the held-out
synthetic set, which QAT never saw. With ``--eval-data``, real accuracy of the
FP model, the fake-quant model and every artifact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import runtimes
from pipeline.evaldata import load_eval_data
from pipeline.quant.qat import predict
from pipeline.runner import RunContext, write_json
from pipeline.stages.export import INDEX, load_artifacts
from pipeline.stages.qat import load_student
from pipeline.stages.synth import HOLDOUT
from pipeline.synthesis import SyntheticSet

RESULT = "check.json"


def compare(logits: np.ndarray, ref: np.ndarray, lsb: float | None = None) -> dict:
    a, r = torch.from_numpy(logits.astype(np.float32)), torch.from_numpy(ref.astype(np.float32))
    diff = (a - r).abs()
    out = {
        "top1_agreement": float((a.argmax(1) == r.argmax(1)).float().mean()),
        "kl": float(F.kl_div(F.log_softmax(a, 1), F.log_softmax(r, 1), reduction="batchmean", log_target=True)),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
    }
    if lsb:
        out["max_abs_diff_lsb"] = float(diff.max()) / lsb
        out["mean_abs_diff_lsb"] = float(diff.mean()) / lsb
    return out


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def run(ctx: RunContext) -> None:
    teacher, card = ctx.teacher()
    c = ctx.cfg.check
    holdout = SyntheticSet.load(ctx.run_dir / HOLDOUT)
    xh = torch.from_numpy(holdout.images)
    fp = predict(teacher, xh).numpy()
    deployable = ctx.cfg.qat.profile == "deploy"
    student = load_student(ctx)
    fq = predict(student, xh).numpy()
    result: dict = {"holdout": {"images": len(holdout), "seed": holdout.seed, "fake_quant_vs_fp": compare(fq, fp)}, "artifacts": {}}
    real = None
    if c.eval_data:
        xr, yr = load_eval_data(c.eval_data, card, c.eval_limit)
        fp_r, fq_r = predict(teacher, torch.from_numpy(xr)).numpy(), predict(student, torch.from_numpy(xr)).numpy()
        real = (xr, yr, fp_r, fq_r)
        result["eval_data"] = {"source": str(c.eval_data), "images": int(len(yr)), "fp_accuracy": accuracy(fp_r, yr),
                               "fake_quant_accuracy": accuracy(fq_r, yr)}
        ctx.log(f"  real data ({len(yr)} images): FP {accuracy(fp_r, yr):.2%}, fake-quant {accuracy(fq_r, yr):.2%}")
    settings = runtimes.BenchSettings(c.warmup_runs, c.warmup_min_secs, c.num_runs, c.min_secs, c.max_secs)
    for art in load_artifacts(ctx):
        pred = runtimes.load(art.path, threads=c.threads)
        out = runtimes.predict_batched(pred, holdout.images)
        lsb = art.notes.get("output_scale")
        entry: dict = {"runtime": pred.runtime, "precision": art.precision, "size_bytes": art.size_bytes,
                       "vs_fp": compare(out, fp), "vs_fake_quant": compare(out, fq, lsb) if art.precision != "fp32" and deployable else None}
        if real is not None:
            xr, yr, _, _ = real
            entry["accuracy"] = accuracy(runtimes.predict_batched(pred, xr), yr)
        if c.bench:
            feeds = runtimes.prepare_feeds(pred, holdout.images[:1])  # layout and integer edge as the artifact wants
            ctx.log(f"  benchmarking {art.path.name} on {pred.runtime} ({c.threads} thread)")
            entry["latency"] = runtimes.benchmark(pred, feeds, settings).to_dict()
            entry["latency"]["threads"] = c.threads
        result["artifacts"][art.path.name] = entry
        ctx.log(f"  {art.path.name}: agreement with FP {entry['vs_fp']['top1_agreement']:.1%}"
                + (f", real accuracy {entry['accuracy']:.2%}" if "accuracy" in entry else ""))
    write_json(ctx.path(RESULT), result)


def outputs(ctx: RunContext) -> list[Path]:
    return [ctx.run_dir / RESULT]


def inputs(ctx: RunContext) -> list[Path]:
    from pipeline.stages.export import outputs as export_outputs

    extra = [Path(ctx.cfg.check.eval_data)] if ctx.cfg.check.eval_data and Path(ctx.cfg.check.eval_data).is_file() else []
    return [ctx.run_dir / HOLDOUT, *export_outputs(ctx), *extra]


__all__ = ["INDEX", "compare", "run"]
