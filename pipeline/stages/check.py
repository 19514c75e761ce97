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

import runtimes
from devices.reference import metrics
from pipeline.evaldata import digest
from pipeline.quant.qat import predict
from pipeline.runner import RunContext, write_json
from pipeline.stages.export import load_artifacts
from pipeline.stages.qat import load_student
from pipeline.synthesis import SyntheticSet

BUNDLE_MAX_BYTES = 16 << 20  # reference inputs that travel to a device: at most this much (and 128 images)
AGREEMENT_MARGIN = 0.02  # a device may flip this share of top-1 decisions more than the host did


def layer_sqnr(teacher: torch.nn.Module, student: torch.nn.Module, x: torch.Tensor, fold_bn: bool) -> list[dict]:
    """SQNR (dB) of every quantized conv/linear output against the same layer of the FP model, in network order.

    The FP side is the teacher traced the way the student was built (BN folded for
    ``deploy``), so layer names and outputs line up; the error accumulates along the
    network, as it does in the artifact.
    """
    from pipeline.quant.modules import QConv2d, QLinear
    from pipeline.quant.prepare import fold_batchnorm, trace

    fp = trace(teacher)
    if fold_bn:
        fold_batchnorm(fp)
    names = [n for n, m in student.named_modules() if isinstance(m, (QConv2d, QLinear))]
    fp_mods = dict(fp.named_modules())
    names = [n for n in names if n in fp_mods]
    acts: dict[str, dict[str, torch.Tensor]] = {"fp": {}, "q": {}}
    hooks = []
    for side, model in (("fp", fp), ("q", student)):
        mods = dict(model.named_modules())
        for n in names:
            hooks.append(mods[n].register_forward_hook(lambda _m, _i, out, n=n, side=side: acts[side].__setitem__(n, out.detach())))
    try:
        with torch.no_grad():
            fp.eval()(x)
            student.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for i, n in enumerate(names):
        a, b = acts["fp"].get(n), acts["q"].get(n)
        if a is None or b is None or a.shape != b.shape:
            continue
        noise = float(((a - b) ** 2).sum())
        signal = float((a**2).sum())
        sqnr = 10 * np.log10(signal / noise) if noise > 0 else float("inf")
        mod = dict(student.named_modules())[n]
        rows.append({"index": i, "name": n, "kind": "linear" if isinstance(mod, QLinear) else "conv",
                     "weight_bits": int(mod.wq.bits) if hasattr(mod.wq, "bits") else None,
                     "sqnr_db": round(sqnr, 3) if np.isfinite(sqnr) else None})
    return rows


def write_bench_bundle(ctx: RunContext, images: np.ndarray, fp: np.ndarray, fq: np.ndarray | None, arts: list[tuple]) -> None:
    """``bench/``: reference inputs, FP and fake-quant outputs, and each artifact's tolerance (host agreement − margin)."""
    from devices.bundle import write_bundle
    from devices.reference import Tolerance, compare

    per = max(1, images[0].nbytes)
    n = int(min(len(images), 128, max(1, BUNDLE_MAX_BYTES // per)))
    refs = {"fp": fp[:n]}
    if fq is not None:
        refs["fake_quant"] = fq[:n]
    entries = {}
    for art, out in arts:
        kind = "fake_quant" if (art.precision != "fp32" and fq is not None) else "fp"
        lsb = art.notes.get("output_scale") if kind == "fake_quant" else None
        host = compare(out[:n], refs[kind], Tolerance(0.0, None, lsb))
        slack = 2 * lsb if lsb else 1e-3 * float(np.abs(refs[kind]).max() or 1.0)
        entries[art.path.name] = {
            "reference": kind, "precision": art.precision,
            # the device flags full-range 8-bit weights on a CPU whose u8×s8 kernels saturate (pipeline/quant/overflow.py)
            "weight_qmax": art.notes.get("weight_qmax"),
            "host": {k: host[k] for k in ("top1_agreement", "max_abs_diff", "mean_abs_diff", "kl") if k in host},
            "tolerance": {"min_top1_agreement": round(max(0.0, host["top1_agreement"] - AGREEMENT_MARGIN), 6),
                          "max_abs_diff": 2 * host["max_abs_diff"] + slack, "output_scale": lsb},
        }
    write_bundle(ctx.layout.bench, images[:n], refs, entries)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def run(ctx: RunContext) -> None:
    teacher, card = ctx.teacher()
    c = ctx.cfg.check
    holdout = SyntheticSet.load(ctx.layout.holdout_set)
    xh = torch.from_numpy(holdout.images)
    fp = predict(teacher, xh).numpy()
    deployable = ctx.cfg.qat.profile == "deploy"
    student = load_student(ctx)
    fq = predict(student, xh).numpy()
    from devices import isa
    from devices.protocol import saturation_flag

    host_isa = isa.capture()
    result: dict = {"holdout": {"images": len(holdout), "seed": holdout.seed, "fake_quant_vs_fp": metrics(fq, fp)}, "artifacts": {},
                    "host_isa": host_isa, "warnings": []}
    real = None
    if c.eval_data:
        xr, yr = ctx.real_data("eval")
        fp_r, fq_r = predict(teacher, torch.from_numpy(xr)).numpy(), predict(student, torch.from_numpy(xr)).numpy()
        real = (xr, yr, fp_r, fq_r)
        result["eval_data"] = {"source": str(c.eval_data), "images": int(len(yr)), "fp_accuracy": accuracy(fp_r, yr),
                               "fake_quant_accuracy": accuracy(fq_r, yr)}
        ctx.log(f"  real data ({len(yr)} images): FP {accuracy(fp_r, yr):.2%}, fake-quant {accuracy(fq_r, yr):.2%}")
    n_layers = min(len(xh), 64)
    result["layers"] = layer_sqnr(teacher, student, xh[:n_layers], fold_bn=deployable)
    if result["layers"]:
        worst = min(result["layers"], key=lambda r: r["sqnr_db"] if r["sqnr_db"] is not None else float("inf"))
        ctx.log(f"  per-layer SQNR over {len(result['layers'])} layers: lowest {worst['sqnr_db']} dB at {worst['name']}")
    settings = c.bench_settings()
    bundle_arts = []
    for art in load_artifacts(ctx):
        pred = runtimes.load(art.path, threads=c.threads)
        out = runtimes.predict_batched(pred, holdout.images)
        bundle_arts.append((art, out))
        lsb = art.notes.get("output_scale")
        entry: dict = {"runtime": pred.runtime, "precision": art.precision, "size_bytes": art.size_bytes,
                       "vs_fp": metrics(out, fp), "vs_fake_quant": metrics(out, fq, lsb) if art.precision != "fp32" and deployable else None}
        if real is not None:
            xr, yr, _, _ = real
            entry["accuracy"] = accuracy(runtimes.predict_batched(pred, xr), yr)
        if c.bench:
            feeds = runtimes.prepare_feeds(pred, holdout.images[:1])  # layout and integer edge as the artifact wants
            ctx.log(f"  benchmarking {art.path.name} on {pred.runtime} ({c.threads} thread)")
            entry["latency"] = runtimes.benchmark(pred, feeds, settings).to_dict()
            entry["latency"]["threads"] = c.threads
        warning = saturation_flag(pred.runtime, art.notes.get("weight_qmax"), host_isa)
        if warning:  # this host's own check is then not what the artifact computes on a VNNI x86 or ARM
            result["warnings"].append(f"{art.path.name}: {warning}")
            ctx.log(f"  warning: {art.path.name}: {warning}")
        result["artifacts"][art.path.name] = entry
        ctx.log(f"  {art.path.name}: agreement with FP {entry['vs_fp']['top1_agreement']:.1%}"
                + (f", real accuracy {entry['accuracy']:.2%}" if "accuracy" in entry else ""))
    write_bench_bundle(ctx, holdout.images, fp, fq if deployable else None, bundle_arts)
    write_json(ctx.layout.check_result, result)


def outputs(ctx: RunContext) -> list[Path]:
    from devices.bundle import bundle_files

    return [ctx.layout.check_result, *bundle_files(ctx.layout.bench)]


def inputs(ctx: RunContext) -> list[Path]:
    from pipeline.stages.export import outputs as export_outputs

    return [ctx.layout.holdout_set, *export_outputs(ctx)]


def key_extra(ctx: RunContext) -> dict:
    """``--eval-data`` as a digest of what the loader reads, folder or file (the runner's input hashes take files only):
    an edited, added or moved image re-runs the check; a dot entry or a non-image file does not."""
    data = ctx.cfg.check.eval_data
    return {"eval_data": digest(data)} if data else {}


__all__ = ["run"]
