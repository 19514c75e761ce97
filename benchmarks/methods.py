"""Benchmark: every synthesis method on the bundled Fashion-MNIST ResNet-20, real test accuracy (issue 5).

Not a test. For each seed, each method's pool is synthesized once (it does not
depend on the bit width), then for each bit width the ``deploy`` fake-quant
model is built, calibrated and trained by the method with the *same* budget
(the per-method ``fast`` presets of :mod:`pipeline.config` share Q steps, batch
and pool size), and its **final** accuracy on the real 10k test split is
measured. Two references from the same run: FP accuracy, and the default KD QAT
loop on real training images with the same steps/batch (the upper bound).
FDDA gets 1 real image per class from the *train* split as ``--calib-data``.

    python -m benchmarks.methods --seeds 0 1 2 --bits w4a4 w3a3 --budget fast \\
        --out /work/scratch/methods/bench.json
    python -m benchmarks.methods --render /work/scratch/methods/bench.json   # markdown table

Results are appended to the JSON after every run, so an interrupted benchmark
keeps what finished and resumes (finished rows are skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

METHODS = ("bn-inversion", "zeroq", "gdfq", "hast", "lrq", "zaq", "fdda")  # bn-inversion: the pipeline default
REAL = "real-data QAT"


def _settings(cfg):
    return cfg.qat.settings()


def one_per_class(x: np.ndarray, y: np.ndarray, num_classes: int, seed: int):
    from pipeline.synthesis import RealData

    rng = np.random.default_rng(seed)
    idx = [int(rng.choice(np.flatnonzero(y == k))) for k in range(num_classes)]
    return RealData(x[idx], y[idx])


def accuracy(model, x: torch.Tensor, y: np.ndarray) -> float:
    from pipeline.quant.qat import predict

    with torch.inference_mode():
        return float((predict(model, x, batch_size=1000).argmax(1).numpy() == y).mean())


def accuracy_mid_training(model, x: torch.Tensor, y: np.ndarray) -> float:
    """:func:`accuracy` between training steps: it leaves the quantizers in eval mode, so put them back in train mode."""
    from pipeline.quant.prepare import quantizers

    acc = accuracy(model, x, y)
    for q in quantizers(model):
        q.train()
    return acc


def load_teacher(model_dir: str | None):
    """The bundled model, or the same architecture from another ``fmnist_resnet20.{pt,json}`` pair (``--model-dir``)."""
    from pipeline.config import ModelConfig
    from pipeline.models.card import ModelCard
    from pipeline.models.loading import apply_weights, load_model, read_state_dict
    from pipeline.models.registry import create_model

    if model_dir is None:
        return load_model(ModelConfig())
    d = Path(model_dir)
    card = ModelCard.load(d / "fmnist_resnet20.json")
    model = create_model(card.extra["arch"], **card.extra["arch_kwargs"])
    apply_weights(model, read_state_dict(d / "fmnist_resnet20.pt"), str(d))
    return model.eval(), card


def run(args: argparse.Namespace) -> None:
    from benchmarks.fashion_mnist import load_split
    from pipeline.config import build_config
    from pipeline.quant.prepare import QuantProfile, quantize_model
    from pipeline.quant.scheme import BitScheme
    from pipeline.synthesis import QATJob, SyntheticSet, create_method

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res = json.loads(out.read_text()) if out.exists() else {"runs": []}
    done = {(r["method"], r["bits"], r["seed"]) for r in res["runs"]}
    tag = f" [{args.tag}]" if args.tag else ""
    teacher, card = load_teacher(args.model_dir)
    xt, yt = load_split("test")
    xtr, ytr = load_split("train")
    xt_t = torch.from_numpy(xt[: args.test_limit] if args.test_limit else xt)
    yt = yt[: args.test_limit] if args.test_limit else yt
    if "fp_accuracy" not in res:
        res["fp_accuracy"] = accuracy(teacher, xt_t, yt)
    res.setdefault("commands", [])
    command = "python -m benchmarks.methods " + " ".join(sys.argv[1:])
    if command not in res["commands"]:
        res["commands"].append(command)
    res["budget"] = args.budget
    res["threads"] = args.threads
    res["test_images"] = int(len(yt))
    res["model"] = args.model_dir or "bundled fmnist_resnet20"

    def save() -> None:
        from runtimes.atomic import write_json

        write_json(out, res, indent=1)

    save()
    print(f"FP accuracy {res['fp_accuracy']:.4f}", flush=True)
    for seed in args.seeds:
        for method in [*args.methods, REAL] if args.real else args.methods:
            label = method + tag
            todo = [b for b in args.bits if (label, b, seed) not in done]
            if not todo:
                continue
            name = "bn-inversion" if method == REAL else method
            cli = {"synthesis.method": name, "synthesis.seed": seed, "qat.seed": seed, "synthesis.holdout_seed": seed + 1000,
                   "qat.profile": args.profile}
            if args.protocol:  # the method's published optimisers without the paper quantizer
                from pipeline.synthesis.base import method_protocol

                cli.update(method_protocol(name))
            cfg = build_config(args.budget, cli=cli, sets=args.set)
            strategy = create_method(name, cfg.synthesis.options)
            t0 = time.time()
            if method == REAL:  # the upper bound: the default KD loop on real training images, same steps and batch
                rng = np.random.default_rng(seed)
                idx = rng.permutation(len(ytr))[: max(cfg.synthesis.num_images, cfg.qat.steps * cfg.qat.batch_size)]
                pool = SyntheticSet(xtr[idx], ytr[idx], seed, REAL)
            else:
                calib = one_per_class(xtr, ytr, card.num_classes, seed) if strategy.needs_calib_data else None
                torch.manual_seed(seed)
                pool = strategy.synthesize(teacher, card, cfg.synthesis.num_images, seed, calib=calib)
            synth_s = time.time() - t0
            for bits in todo:
                torch.manual_seed(seed)
                student = quantize_model(teacher, BitScheme.parse(bits, None), QuantProfile.named(cfg.qat.profile, cfg.qat.act_range))
                job = QATJob(student, teacher, card, pool, _settings(cfg), seed=seed, calib_images=cfg.qat.calib_images)
                t1 = time.time()
                strategy.calibrate(job)
                acc_init = accuracy(student, xt_t, yt) if args.init_acc else None
                t2 = time.time()
                losses = strategy.train(job)
                qat_s = time.time() - t2 + (t2 - t1 if not args.init_acc else 0.0)
                acc = accuracy(student, xt_t, yt)
                row = {"method": label, "bits": bits, "seed": seed, "accuracy": acc, "accuracy_after_calibration": acc_init,
                       "profile": cfg.qat.profile, "optimizer": cfg.qat.optimizer, "sets": list(args.set), "protocol": args.protocol,
                       "synth_seconds": round(synth_s, 1), "qat_seconds": round(qat_s, 1), "steps": len(losses),
                       "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}
                res["runs"].append(row)
                save()
                print(json.dumps(row), flush=True)


def render(path: Path) -> str:
    res = json.loads(Path(path).read_text())
    runs = res["runs"]
    bits = sorted({r["bits"] for r in runs}, key=lambda b: -int(b[1:].split("a")[0]))
    order = {m: i for i, m in enumerate((*METHODS, REAL))}  # each method's variants ([tag]) right after it
    labels = list(dict.fromkeys(r["method"] for r in runs))
    methods = sorted(labels, key=lambda m: (order.get(m.split(" [")[0], len(order)), labels.index(m)))

    def cell(m: str, b: str, key: str = "accuracy") -> str:
        v = [r[key] for r in runs if r["method"] == m and r["bits"] == b and r.get(key) is not None]
        if not v:
            return "–"
        if key != "accuracy":
            return f"{statistics.mean(v):.0f}"
        if len(v) == 1:
            return f"{100 * v[0]:.2f} (n=1)"
        return f"{100 * statistics.mean(v):.2f} ± {100 * statistics.stdev(v):.2f} (n={len(v)})"

    def secs(m: str, b: str) -> str:
        v = [r["synth_seconds"] + r["qat_seconds"] for r in runs if r["method"] == m and r["bits"] == b]
        return f"{statistics.mean(v):.0f}" if v else "–"

    def calib(m: str, b: str) -> str:
        v = [r["accuracy_after_calibration"] for r in runs if r["method"] == m and r["bits"] == b
             and r.get("accuracy_after_calibration") is not None]
        return f"{100 * statistics.mean(v):.1f}" if v else "–"

    with_calib = any(r.get("accuracy_after_calibration") is not None for r in runs)
    cols = ["top-1 %", *(["after calibration %"] if with_calib else []), "wall s"]
    head = "| method | " + " | ".join(f"{b.upper()} {c}" for b in bits for c in cols) + " |"
    sep = "|---|" + "---:|" * len(cols) * len(bits)
    lines = [f"FP (same run, {res.get('test_images', 10000)} test images): **{100 * res['fp_accuracy']:.2f}%**", "", head, sep]
    for m in methods:
        cells = [[cell(m, b), *([calib(m, b)] if with_calib else []), secs(m, b)] for b in bits]
        lines.append(f"| {m} | " + " | ".join(c for row in cells for c in row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--bits", nargs="+", default=["w4a4", "w3a3"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--no-real", dest="real", action="store_false", help="skip the real-data QAT reference")
    p.add_argument("--budget", default="fast")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test images (default: all 10k)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the budget for every method, as `pipeline run --set` (an ablation; recorded in the JSON)")
    p.add_argument("--init-acc", action="store_true", help="also measure accuracy right after calibration")
    p.add_argument("--profile", choices=["deploy", "paper"], default="deploy",
                   help="the quantizer protocol; paper also applies each method's published optimisers (its PROTOCOL)")
    p.add_argument("--protocol", action="store_true",
                   help="apply each method's published optimisers (its PROTOCOL) under the deploy quantizer")
    p.add_argument("--tag", help="a variant's name: rows are '<method> [TAG]' (an ablation, a protocol), kept apart from the plain rows")
    p.add_argument("--out", default="/work/scratch/methods/bench.json")
    p.add_argument("--model-dir", help="directory with fmnist_resnet20.pt/.json to use instead of the bundled weights")
    p.add_argument("--render", metavar="JSON", help="print the markdown table of a results file and exit")
    args = p.parse_args(argv)
    if args.render:
        print(render(Path(args.render)))
        return 0
    os.environ.setdefault("ZSQ_QUIET", "1")
    run(args)
    print(render(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
