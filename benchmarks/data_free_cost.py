"""What data-free quantization costs on the bundled model, measured on the real Fashion-MNIST 10k test split.

    python -m benchmarks.data_free_cost                      # W8A8 and W4A4, default budget, ONNX target
    python -m benchmarks.data_free_cost --bits w8a8 --targets onnx,openvino

Runs the real pipeline (synth → qat → export → check) once per bit preset with the
test split handed to the check stage as ``--eval-data`` (the pipeline itself never
trains on it) and prints a Markdown table: FP accuracy, the fake-quant model's
accuracy, each integer artifact's accuracy and its agreement with the FP and
fake-quant models, plus wall time per stage. The numbers go into
``benchmarks/RESULTS.md`` with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.fashion_mnist import load_split


def share_synthesis(src: Path, dst: Path) -> None:
    """Start ``dst`` with ``src``'s synthetic sets and their manifest record, so the runner skips synthesis there.

    Synthesis depends only on the model and the synthesis config, not on the bit
    width: every bit preset of one benchmark run trains and checks on the same
    images, and the CPU time goes to what differs. The runner still re-keys the
    stage, so a different synthesis config simply synthesizes again.
    """
    import shutil

    from pipeline.layout import RunLayout
    from pipeline.runner import write_json

    manifest = json.loads(RunLayout(src).manifest.read_text())
    if "synth" not in manifest["stages"] or RunLayout(dst).manifest.exists():
        return
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(RunLayout(src).holdout_set.parent, RunLayout(dst).holdout_set.parent, dirs_exist_ok=True)
    write_json(RunLayout(dst).manifest, {"stages": {"synth": manifest["stages"]["synth"]}})


def run_one(bits: str, targets: str, budget: str, out: Path, eval_npz: Path, sets: list[str]) -> dict:
    from pipeline.config import build_config
    from pipeline.runner import RunContext, Runner
    from pipeline.stages import STAGES

    cli = {"qat.bits": bits, "export.targets": targets.split(","), "check.eval_data": str(eval_npz), "check.bench": False, "out": str(out)}
    cfg = build_config(budget, None, cli, sets)
    t0 = time.time()
    Runner(STAGES, RunContext(cfg, out, log=lambda m: print(m, file=sys.stderr, flush=True))).run()
    wall = time.time() - t0
    check = json.loads((out / "check.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    return {"bits": bits, "check": check, "wall_s": wall, "stage_s": {k: v["seconds"] for k, v in manifest["stages"].items()}}


def table(rows: list[dict]) -> str:
    lines = ["| trained | artifact | runtime | real top-1 | Δ vs FP (pt) | fake-quant top-1 | agree FP (held-out synth) | agree FQ (held-out synth) | wall |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ev = r["check"]["eval_data"]
        fp = ev["fp_accuracy"]
        for name, a in r["check"]["artifacts"].items():
            if a["precision"] == "fp32":
                continue
            fq = (a.get("vs_fake_quant") or {}).get("top1_agreement")
            lines.append(f"| {r['bits']} | {name} | {a['runtime']} | {a['accuracy'] * 100:.2f} % | {(a['accuracy'] - fp) * 100:+.2f} | "
                         f"{ev['fake_quant_accuracy'] * 100:.2f} % | {a['vs_fp']['top1_agreement'] * 100:.1f} % | "
                         f"{'-' if fq is None else f'{fq * 100:.1f} %'} | {r['wall_s']:.0f} s |")
    fp = rows[0]["check"]["eval_data"]["fp_accuracy"]
    lines.append(f"\nFP model (PyTorch): {fp * 100:.2f} % on {rows[0]['check']['eval_data']['images']} real test images.")
    for r in rows:
        lines.append(f"{r['bits']} stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in r["stage_s"].items()))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", default="w8a8,w4a4")
    ap.add_argument("--targets", default="onnx")
    ap.add_argument("--budget", default="default")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: a temporary folder)")
    args = ap.parse_args()
    os.environ.setdefault("ZSQ_QUIET", "1")
    x, y = load_split("test")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        npz = root / "fmnist_t10k.npz"
        if not npz.exists():  # a kept --out folder reuses it, so the check stage's input hash stays the same
            np.savez(npz, images=x, labels=y)
        rows = []
        for i, b in enumerate(args.bits.split(",")):
            if i:
                share_synthesis(root / rows[0]["bits"], root / b)
            rows.append(run_one(b, args.targets, args.budget, root / b, npz, args.set))
        print(table(rows))


if __name__ == "__main__":
    main()
