"""The papers' schedules on one GPU: HAST and GDFQ at W4A4 on the bundled model, fp32 vs bf16 autocast.

    python -m benchmarks.gpu_paper --out runs/gpu-paper        # on a CUDA host; rows for benchmarks/RESULTS.md

``--profiles deploy,paper``: ``deploy`` is the published schedule (``--budget paper``) ending in an integer artifact;
``paper`` adds the published protocol (``--profile paper``: the GDFQ-lineage quantizer and each method's optimisers),
which reproduces the papers' setting and makes no integer artifact (its row has the fake-quant accuracy only).

Per row: wall time of synth and qat, QAT images/s, peak GPU memory (qat.json), and the artifact's accuracy on the
real Fashion-MNIST test split (the pipeline never sees it; the check stage measures it). Refuses to run without a
GPU: ``--budget paper`` on a 2-core CPU is days.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.fashion_mnist import load_split


def run(method: str, precision: str, root: Path, npz: Path, profile: str = "deploy") -> dict:
    from pipeline.config import build_config
    from pipeline.layout import RunLayout
    from pipeline.runner import RunContext, Runner
    from pipeline.stages import STAGES
    out = root / f"{method}-w4a4-{precision}-{profile}"
    cli = {"synthesis.method": method, "qat.bits": "w4a4", "export.targets": ["onnx"], "check.eval_data": str(npz),
           "check.bench": False, "out": str(out), "host.accelerator": "cuda", "host.precision": precision, "qat.profile": profile}
    cfg = build_config("paper", None, cli)
    t0 = time.time()
    Runner(STAGES, RunContext(cfg, out, log=lambda m: print(m, file=sys.stderr, flush=True))).run()
    lay = RunLayout(out)
    manifest, qat, check = (json.loads(p.read_text()) for p in (lay.manifest, lay.qat_metrics, lay.check_result))
    art = next((a for a in check["artifacts"].values() if a["precision"] != "fp32"), {"accuracy": None})  # none under paper
    steps, qat_s = qat["steps"], manifest["stages"]["qat"]["seconds"]
    return {"method": method, "precision": precision, "profile": profile, "wall_s": time.time() - t0, "synth_s": manifest["stages"]["synth"]["seconds"],
            "qat_s": qat_s, "qat_images_per_s": steps * cfg.qat.batch_size / max(qat_s, 1e-9),
            "peak_gpu_mib": qat["placement"].get("peak_gpu_mib"), "fp": check["eval_data"]["fp_accuracy"],
            "fake_quant": check["eval_data"]["fake_quant_accuracy"], "artifact": art["accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/gpu-paper"))
    ap.add_argument("--methods", default="hast,gdfq")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--profiles", default="deploy", help="deploy, paper or both (comma list)")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device: this benchmark runs the papers' schedules on a GPU host (README: GPU host)")
    os.environ.setdefault("ZSQ_QUIET", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    npz = args.out / "fmnist_t10k.npz"
    if not npz.exists():
        x, y = load_split("test")
        np.savez(npz, images=x, labels=y)
    rows = [run(m, p, args.out, npz, prof) for prof in args.profiles.split(",") for m in args.methods.split(",")
            for p in args.precisions.split(",")]
    print(f"| {torch.cuda.get_device_name(0)} | wall | synth | qat | QAT images/s | peak GPU MiB | fake-quant top-1 | artifact top-1 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        art = f"{r['artifact'] * 100:.2f} %" if r["artifact"] is not None else "none (paper profile)"
        print(f"| {r['method']} W4A4 {r['precision']} {r['profile']} | {r['wall_s']:.0f} s | {r['synth_s']:.0f} s | {r['qat_s']:.0f} s | "
              f"{r['qat_images_per_s']:.0f} | {r['peak_gpu_mib'] or 0:.0f} | {r['fake_quant'] * 100:.2f} % | {art} |")
    print(f"FP model: {rows[0]['fp'] * 100:.2f} % on the real test split")


if __name__ == "__main__":
    main()
