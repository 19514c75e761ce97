"""Benchmark: uniform low bits vs the most sensitive layers kept at 8 bits, on the bundled ResNet-20 (issue 17).

Not a test. Does the per-layer sensitivity table (check.json ``sensitivity``, measured data-free on the
held-out synthetic set) point at the layers worth keeping at 8 bits? For each seed and bit width:

* ``uniform``: every layer at the run's bits (``--bits w4a4``); its check stage ranks the layers;
* ``sensitive``: the same run with the ``--keep`` most sensitive layers of that ranking at ``w8a8``
  (``qat.layer_bits``), which is what the report's suggested flags do;
* ``least``: the ``--keep`` *least* sensitive layers at ``w8a8``, the control: the same number of 8-bit
  layers, chosen against the ranking. If the ranking predicts anything, ``sensitive`` beats ``least``.

Every run is a full ``pipeline run`` (synthesis shared per seed, QAT, export to ONNX, OpenVINO and
TFLite, check) on the ``fast`` budget; accuracy is each integer artifact's on the real Fashion-MNIST
10k test split (``--eval-data``: the pipeline never trains on it). Size is each artifact's file size.
Latency is measured afterwards for one seed, all variants of one bit width interleaved per trial in
one process (batch 1, 1 thread), and shown as ratios to ``uniform``: drift hits every row alike.

    python -m benchmarks.mixed_precision --seeds 0 1 2 --bits w4a4 w3a3 --out /work/scratch/mixed/bench.json
    python -m benchmarks.mixed_precision --render /work/scratch/mixed/bench.json      # markdown for RESULTS.md

Results are appended to the JSON after every run; an interrupted benchmark resumes (finished rows are skipped).
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

VARIANTS = ("uniform", "sensitive", "least")
TARGETS = ["onnx", "openvino", "tflite"]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pipeline_run(out: Path, sets: dict, budget: str) -> float:
    from pipeline.config import build_config
    from pipeline.runner import RunContext, Runner
    from pipeline.stages import STAGES

    t0 = time.time()
    cfg = build_config(budget, None, {**sets, "out": str(out)})
    Runner(STAGES, RunContext(cfg, out, log=_log)).run()
    return time.time() - t0


def ranking(check: dict) -> list[dict]:
    """The sensitivity rows of a check.json, most sensitive first (rank 1)."""
    return sorted(check["sensitivity"]["layers"], key=lambda r: r["rank"])


def chosen_layers(rows: list[dict], variant: str, keep: int) -> list[str]:
    """The layers a variant keeps at 8 bits: none, the ``keep`` most sensitive, or the ``keep`` least sensitive."""
    lowbit = [r["name"] for r in rows if r["weight_bits"] < 8]
    if variant == "uniform":
        return []
    return lowbit[:keep] if variant == "sensitive" else lowbit[-keep:]


def summarize(run: Path, check: dict, export: dict, variant: str, seed: int, bits: str, layers: list[str], wall: float) -> dict:
    arts = {}
    for a in export["artifacts"]:
        name = Path(a["path"]).name
        c = check["artifacts"].get(name, {})
        arts[name] = {"runtime": c.get("runtime"), "precision": a["precision"], "size_bytes": a["size_bytes"],
                      "accuracy": c.get("accuracy"), "path": str(run / a["path"])}
    sens = check.get("sensitivity") or {}
    return {"seed": seed, "bits": bits, "variant": variant, "layers_at_8": layers, "run": str(run), "wall_s": wall,
            "fp_accuracy": check["eval_data"]["fp_accuracy"], "fake_quant_accuracy": check["eval_data"]["fake_quant_accuracy"],
            "artifacts": arts, "ranking": [r["name"] for r in ranking(check)] if sens.get("layers") else None}


def run_all(args) -> None:
    from benchmarks.data_free_cost import share_synthesis
    from benchmarks.fashion_mnist import load_split

    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else {"rows": [], "latency": []}
    have = {(r["seed"], r["bits"], r["variant"]) for r in done["rows"]}
    root = out.parent / "runs"
    x, y = load_split("test")
    npz = out.parent / "fmnist_t10k.npz"
    if not npz.exists():
        np.savez(npz, images=x, labels=y)
    for seed in [] if args.latency_only else args.seeds:
        first = root / f"seed{seed}-{args.bits[0]}-uniform"  # the seed's first run: the others reuse its synthetic sets
        for bits in args.bits:
            rank_rows = None
            for variant in VARIANTS:
                if (seed, bits, variant) in have:
                    if variant == "uniform":
                        rank_rows = json.loads((Path(next(r["run"] for r in done["rows"] if (r["seed"], r["bits"], r["variant"])
                                                          == (seed, bits, "uniform"))) / "check.json").read_text())
                    continue
                layers = [] if variant == "uniform" else chosen_layers(ranking(rank_rows), variant, args.keep)
                run = root / f"seed{seed}-{bits}-{variant}"
                if run != first:
                    share_synthesis(first, run)
                sets = {"qat.bits": bits, "export.targets": args.targets, "check.eval_data": str(npz), "check.bench": False,
                        "synthesis.seed": seed, "qat.seed": seed, "synthesis.holdout_seed": seed + 1000,
                        "qat.layer_bits": {name: "w8a8" for name in layers}}
                _log(f"== seed {seed} {bits} {variant}: layers at 8 bits {layers or 'none'}")
                wall = pipeline_run(run, sets, args.budget)
                check = json.loads((run / "check.json").read_text())
                export = json.loads((run / "export.json").read_text())
                if variant == "uniform":
                    rank_rows = check
                done["rows"].append(summarize(run, check, export, variant, seed, bits, layers, wall))
                out.write_text(json.dumps(done, indent=1))
    if args.latency_seed is not None:
        done["latency"] = [row for row in done.get("latency", []) if row["seed"] != args.latency_seed]
        for bits in args.bits:
            done["latency"] += latency(done["rows"], args.latency_seed, bits, args.trials)
        out.write_text(json.dumps(done, indent=1))


def latency(rows: list[dict], seed: int, bits: str, trials: int) -> list[dict]:
    """Per runtime, p50 of every variant's integer artifact, interleaved trials, as ratios to ``uniform``."""
    import runtimes
    from runtimes.benchmark import BenchSettings

    settings = BenchSettings(warmup_runs=10, warmup_min_secs=1.0, num_runs=200, min_secs=2.0, max_secs=30.0)
    mine = {r["variant"]: r for r in rows if r["seed"] == seed and r["bits"] == bits}
    preds = {}
    for variant, r in mine.items():
        for name, a in r["artifacts"].items():
            if a["precision"] != "fp32":
                pred = runtimes.load(a["path"], threads=1)
                preds[(pred.runtime, variant)] = pred
    sample = np.load(Path(mine["uniform"]["run"]) / "synthetic" / "holdout.npz")["images"][:1].astype(np.float32)
    p50: dict[tuple[str, str], list[float]] = {k: [] for k in preds}
    for _ in range(trials):
        for key, pred in preds.items():
            p50[key].append(runtimes.benchmark(pred, runtimes.prepare_feeds(pred, sample), settings).p50_ms)
    out = []
    for (rt, variant), values in p50.items():
        base = float(np.median(p50[(rt, "uniform")]))
        med = float(np.median(values))
        out.append({"seed": seed, "bits": bits, "runtime": rt, "variant": variant, "p50_ms": med, "trials": values,
                    "ratio_to_uniform": med / base})
    return out


def _mean_std(values: list[float]) -> str:
    vals = [v * 100 for v in values if v is not None]
    if not vals:
        return "-"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}"


def render(*paths: Path) -> str:
    """Markdown of one or more results files (one per process, e.g. a seed run apart), rows and latency merged."""
    loaded = [json.loads(Path(p).read_text()) for p in paths if Path(p).exists()]
    data = {"rows": [r for d in loaded for r in d["rows"]], "latency": [r for d in loaded for r in d.get("latency", [])]}
    rows = data["rows"]
    lines = []
    fp = rows[0]["fp_accuracy"] if rows else None
    seeds = sorted({r["seed"] for r in rows})
    if fp is not None:
        lines.append(f"FP model: {fp * 100:.2f} % on the real test split; seeds {seeds}.\n")
    runtimes_seen = sorted({a["runtime"] for r in rows for a in r["artifacts"].values() if a["precision"] != "fp32" and a["runtime"]})
    head = "| bits | variant | layers at 8 bits (seed 0) | fake-quant top-1 % | " + " | ".join(f"{rt} top-1 %" for rt in runtimes_seen) + \
           " | " + " | ".join(f"{rt} size KiB" for rt in runtimes_seen) + " |"
    lines += [head, "|" + "---|" * (4 + 2 * len(runtimes_seen))]
    for bits in dict.fromkeys(r["bits"] for r in rows):
        for variant in VARIANTS:
            mine = [r for r in rows if r["bits"] == bits and r["variant"] == variant]
            if not mine:
                continue
            by_rt = {rt: [a for r in mine for a in r["artifacts"].values() if a["runtime"] == rt and a["precision"] != "fp32"]
                     for rt in runtimes_seen}
            layers = next((r["layers_at_8"] for r in mine if r["seed"] == seeds[0]), mine[0]["layers_at_8"])
            cells = [bits, variant, ", ".join(f"`{n}`" for n in layers) or "none", _mean_std([r["fake_quant_accuracy"] for r in mine]) + f" (n={len(mine)})"]
            cells += [_mean_std([a["accuracy"] for a in by_rt[rt]]) + f" (n={len(by_rt[rt])})" for rt in runtimes_seen]
            cells += [f"{statistics.mean(a['size_bytes'] for a in by_rt[rt]) / 1024:.1f}" if by_rt[rt] else "-" for rt in runtimes_seen]
            lines.append("| " + " | ".join(cells) + " |")
    if data.get("latency"):
        lat = data["latency"]
        lines += ["", f"Latency, seed {lat[0]['seed']}, batch 1, 1 thread: median p50 over interleaved trials, ratio to uniform", "",
                  "| bits | runtime | " + " | ".join(VARIANTS) + " |", "|---|---|" + "---|" * len(VARIANTS)]
        for bits in dict.fromkeys(r["bits"] for r in lat):
            for rt in dict.fromkeys(r["runtime"] for r in lat):
                cell = {r["variant"]: r for r in lat if r["bits"] == bits and r["runtime"] == rt}
                lines.append(f"| {bits} | {rt} | " + " | ".join(
                    f"{cell[v]['p50_ms']:.3f} ms ({cell[v]['ratio_to_uniform']:.2f}×)" if v in cell else "-" for v in VARIANTS) + " |")
    same = [(r["seed"], r["bits"], r["ranking"][:3]) for r in rows if r["variant"] == "uniform" and r.get("ranking")]
    if same:
        lines += ["", "Top 3 of the sensitivity ranking per uniform run (seed, bits): "
                  + "; ".join(f"{s} {b}: {', '.join(top)}" for s, b, top in same)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--bits", nargs="+", default=["w4a4", "w3a3"])
    p.add_argument("--keep", type=int, default=3, help="layers kept at 8 bits by the sensitive and least variants")
    p.add_argument("--budget", default="fast")
    p.add_argument("--targets", nargs="+", default=TARGETS, help="export targets of every run (default: all three)")
    p.add_argument("--latency-seed", type=int, default=0, help="seed whose artifacts are timed (after all runs)")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--latency-only", action="store_true", help="time the finished runs of --latency-seed; start no run")
    p.add_argument("--out", default="/work/scratch/mixed/bench.json")
    p.add_argument("--render", metavar="JSON", nargs="+", help="print the markdown of results files (merged) and exit")
    args = p.parse_args(argv)
    if args.render:
        print(render(*map(Path, args.render)))
        return 0
    os.environ.setdefault("ZSQ_QUIET", "1")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    run_all(args)
    print(render(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
