"""What the overflow-safe weight grid costs and what it saves, at W8A8 on the bundled model and on a wide model.

    python -m benchmarks.overflow_fix --seeds 0 1 2 --out runs/bench-overflow     # accuracy, 3 seeds (about 1 h on 2 cores)
    python -m benchmarks.overflow_fix --wide-only                                  # ResNet-18 LSB figures only (minutes)

Part 1, cost: per seed one synthesis, then QAT twice on the same images, with
``qat.overflow_fix=off`` (full ±127 weights) and ``on`` (±63); each ONNX artifact and the
fake-quant model are scored on the real Fashion-MNIST 10k test split (the pipeline never
sees it). Part 2, what it saves: on this machine's CPU (its ISA is printed; on an x86
without VNNI ONNX Runtime's u8×s8 kernels saturate), the artifact's max output error vs
the fake-quant model in output LSBs and its top-1 flips, on the real test images; and the
same for a ResNet-18 (random weights, calibrated on noise, 3×224×224) whose 3×3×512
accumulations are the widest of the usual CNNs. Prints Markdown for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.data_free_cost import share_synthesis
from benchmarks.fashion_mnist import load_split


def run_seed(seed: int, mode: str, root: Path, npz: Path, budget: str) -> dict:
    from pipeline.config import build_config
    from pipeline.runner import RunContext, Runner
    from pipeline.layout import RunLayout
    from pipeline.stages import STAGES

    out = root / f"seed{seed}-{mode}"
    if mode != "off":
        share_synthesis(root / f"seed{seed}-off", out)
    cli = {"qat.bits": "w8a8", "qat.overflow_fix": mode, "export.targets": ["onnx"], "check.eval_data": str(npz),
           "check.bench": False, "out": str(out), "synthesis.seed": seed, "qat.seed": seed, "synthesis.holdout_seed": seed + 1000}
    t0 = time.time()
    Runner(STAGES, RunContext(build_config(budget, None, cli), out, log=lambda m: print(m, file=sys.stderr, flush=True))).run()
    check = json.loads(RunLayout(out).check_result.read_text())
    ev = check["eval_data"]
    art = next(a for a in check["artifacts"].values() if a["precision"] != "fp32")
    return {"seed": seed, "mode": mode, "fp": ev["fp_accuracy"], "fake_quant": ev["fake_quant_accuracy"], "artifact": art["accuracy"],
            "run": out, "wall_s": time.time() - t0}


def lsb_on_real(run: Path, x: np.ndarray) -> dict:
    """The run's ONNX artifact vs its fake-quant model on real images: max/mean error in output LSBs, top-1 agreement."""
    import torch

    import runtimes
    from pipeline.config import build_config
    from pipeline.layout import RunLayout
    from pipeline.runner import RunContext
    from pipeline.stages.qat import load_student

    cfg = build_config("default", run / "config.json")
    student = load_student(RunContext(cfg, run, log=lambda m: None))
    art = next(run.glob("model.w8a8.onnx"))
    y = runtimes.predict_batched(runtimes.load(art, threads=1), x)
    with torch.no_grad():
        ref = torch.cat([student(torch.from_numpy(x[i:i + 500])) for i in range(0, len(x), 500)]).numpy()
    index = json.loads(RunLayout(run).export_index.read_text())["artifacts"]
    lsb = next(a["notes"]["output_scale"] for a in index if a["path"] == art.name)
    d = np.abs(y - ref) / lsb
    return {"max_lsb": float(d.max()), "mean_lsb": float(d.mean()), "agree": float((y.argmax(1) == ref.argmax(1)).mean())}


def wide_model(folder: Path) -> list[dict]:
    """ResNet-18 at 3×224×224: ORT on this CPU vs fake-quant, full-range vs overflow-safe 8-bit weights."""
    import torch

    import runtimes
    from exporters.onnx import export_qdq
    from pipeline.models import ModelCard, create_model
    from pipeline.quant.calibrate import calibrate
    from pipeline.quant.prepare import quantize_model
    from pipeline.quant.deploy import deployment_spec
    from pipeline.quant.scheme import BitScheme

    shape = (3, 224, 224)
    x = torch.rand(8, *shape, generator=torch.Generator().manual_seed(1))
    rows = []
    for safe in (False, True):
        torch.manual_seed(0)
        model = create_model("resnet18", in_channels=3, num_classes=1000).eval()
        q = quantize_model(model, BitScheme(8, 8, overflow_safe=safe))
        calibrate(q, [torch.rand(8, *shape, generator=torch.Generator().manual_seed(0))])
        q.eval()
        spec = deployment_spec(q, ModelCard("resnet18", shape, 1000))
        art = export_qdq(spec, folder / f"resnet18.{'safe' if safe else 'full'}.w8a8.onnx")
        y = runtimes.predict_batched(runtimes.load(art.path, threads=1), x.numpy())
        with torch.no_grad():
            ref = q(x).numpy()
        d = np.abs(y - ref) / spec.output_scale
        rows.append({"grid": "±63" if safe else "±127", "max_lsb": float(d.max()), "mean_lsb": float(d.mean()),
                     "agree": float((y.argmax(1) == ref.argmax(1)).mean())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", default="default")
    ap.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: a temporary folder)")
    ap.add_argument("--wide-only", action="store_true", help="only the ResNet-18 LSB figures")
    args = ap.parse_args()
    os.environ.setdefault("ZSQ_QUIET", "1")
    from devices import isa

    cpu = isa.capture()
    print(f"CPU: {cpu['arch']}, int8 features {cpu['int8_features']}, u8×s8 saturates: {cpu['u8s8_saturates']}, "
          f"emulated: {cpu['emulated']}\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if not args.wide_only:
            x, y = load_split("test")
            npz = root / "fmnist_t10k.npz"
            if not npz.exists():
                np.savez(npz, images=x, labels=y)
            rows = []
            for seed in args.seeds:
                for mode in ("off", "on"):
                    r = run_seed(seed, mode, root, npz, args.budget)
                    r.update(lsb_on_real(r["run"], x))
                    rows.append(r)
                    print(f"seed {seed} overflow_fix={mode}: fake-quant {r['fake_quant']:.4f}, ORT artifact {r['artifact']:.4f}, "
                          f"{r['max_lsb']:.1f} LSB max, agree {r['agree']:.4f}", file=sys.stderr, flush=True)
            print("| weights | fake-quant top-1 (real 10k) | ORT artifact top-1 | ORT vs fake-quant: max LSB | mean LSB | top-1 agreement |")
            print("|---|---|---|---|---|---|")
            for mode, label in (("off", "full range ±127"), ("on", "overflow-safe ±63")):
                rs = [r for r in rows if r["mode"] == mode]

                def ms(key: str, scale: float = 100.0) -> str:
                    v = [r[key] * scale for r in rs]
                    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"

                print(f"| {label} | {ms('fake_quant')} % | {ms('artifact')} % | {max(r['max_lsb'] for r in rs):.0f} | "
                      f"{ms('mean_lsb', 1.0)} | {ms('agree')} % |")
            print(f"\nFP model: {rows[0]['fp'] * 100:.2f} %; seeds {args.seeds}; budget {args.budget}; "
                  f"per-seed wall (off/on): " + ", ".join(f"{r['wall_s']:.0f}" for r in rows) + " s\n")
        print("| ResNet-18 3×224×224 (random weights) | max LSB | mean LSB | top-1 agreement |\n|---|---|---|---|")
        for r in wide_model(root):
            print(f"| {r['grid']} | {r['max_lsb']:.0f} | {r['mean_lsb']:.2f} | {r['agree'] * 100:.0f} % |")


if __name__ == "__main__":
    main()
