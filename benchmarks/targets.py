"""Three integer targets side by side: accuracy, fidelity, integer coverage and latency, next to each runtime's own PTQ tool.

    python -m benchmarks.targets                       # bundled model W8A8 + W4A4, ResNet-18 224² speed
    python -m benchmarks.targets --skip-resnet18 --bits w8a8

For each runtime (ONNX Runtime, OpenVINO, LiteRT) it measures, in one process and
one run:

* our artifacts from ``pipeline run --target all`` (QAT scales kept), on the real
  Fashion-MNIST 10k test split: accuracy, top-1 agreement with the PyTorch
  fake-quant model, integer coverage read from the runtime;
* the same FP32 model quantized by the runtime's own tool, calibrated on the
  same held-out synthetic images (the only data a data-free user has):
  ``onnxruntime.quantization.quantize_static`` (QDQ, U8 activations, S8 symmetric
  per-channel weights), ``nncf.quantize`` on the OpenVINO model, and
  ai-edge-quantizer's static ``w8a8`` recipe on the FP32 ``.tflite``;
* latency (batch 1, 1 thread, warm-up then timed runs, p50/p90) of FP32, ours and
  the PTQ artifact, each trial interleaved so drift hits every row alike; the
  bundled model and a ResNet-18 at 224×224 (random weights: speed only).

Needs the ``bench`` extra (``pip install -e ".[bench]"``: nncf, ai-edge-quantizer). Prints Markdown for
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import runtimes
from benchmarks.fashion_mnist import load_split
from runtimes.benchmark import BenchSettings
from runtimes.formats import FORMATS

RUNTIME_OF = {f.suffix: f.runtime for f in FORMATS}


def pipeline_run(out: Path, sets: dict, budget: str = "default") -> None:
    from pipeline.config import build_config
    from pipeline.runner import RunContext, Runner
    from pipeline.stages import STAGES

    cfg = build_config(budget, None, {**sets, "check.bench": False, "out": str(out)})
    Runner(STAGES, RunContext(cfg, out, log=lambda m: print(m, file=sys.stderr, flush=True))).run()


def holdout_images(run: Path) -> np.ndarray:
    from pipeline.layout import RunLayout

    return np.load(RunLayout(run).holdout_set)["images"].astype(np.float32)


# --- each runtime's own post-training quantization, calibrated on the held-out synthetic set ---------------------

def ort_ptq(fp32_onnx: Path, calib: np.ndarray, out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    pre = out.with_name(out.stem + ".pre.onnx")
    quant_pre_process(str(fp32_onnx), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, extra_options={"WeightSymmetric": True})
    pre.unlink()
    return out


def nncf_ptq(fp32_xml: Path, calib: np.ndarray, out: Path) -> Path:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32_xml))
    q = nncf.quantize(model, nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]), subset_size=len(calib))
    ov.save_model(q, str(out), compress_to_fp16=False)
    return out


def aeq_ptq(fp32_tflite: Path, calib: np.ndarray, out: Path) -> Path:
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe_manager  # noqa: F401

    interp = Interpreter(model_path=str(fp32_tflite))
    sig_key, sig = next(iter(interp.get_signature_list().items()))
    in_name = sig["inputs"][0]
    shape = interp.get_signature_runner(sig_key).get_input_details()[in_name]["shape"]
    q = quantizer.Quantizer(str(fp32_tflite))
    q.load_quantization_recipe(_aeq_recipe())
    feeds = [{in_name: _to_layout(calib[i : i + 1], tuple(shape))} for i in range(len(calib))]
    result = q.calibrate({sig_key: feeds})
    q.quantize(result).export_model(str(out), overwrite=True)
    return out


def _aeq_recipe() -> list[dict]:
    from ai_edge_quantizer import recipe

    return recipe.static_wi8_ai8()


def _to_layout(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """NCHW images → the artifact's input layout (LiteRT models from litert-torch may take NHWC)."""
    if tuple(x.shape[1:]) == tuple(shape[1:]):
        return x
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


PTQ: dict[str, tuple[str, Callable[[Path, np.ndarray, Path], Path], str]] = {
    # runtime → (our FP32 artifact, the runtime's own PTQ, output suffix)
    "onnxruntime": ("model.fp32.onnx", ort_ptq, ".onnx"),
    "openvino": ("model.fp32.xml", nncf_ptq, ".xml"),
    "litert": ("model.fp32.tflite", aeq_ptq, ".tflite"),
}


def build_ptq(run: Path, calib: np.ndarray) -> dict[str, Path]:
    out = {}
    for rt, (fp32, fn, suffix) in PTQ.items():
        src = run / fp32
        if not src.exists():
            print(f"  no {fp32} in {run}: {rt} PTQ skipped", file=sys.stderr)
            continue
        dst = run / "ptq" / f"model.ptq_w8a8{suffix}"
        dst.parent.mkdir(exist_ok=True)
        t0 = time.time()
        try:
            out[rt] = fn(src, calib, dst)
            print(f"  {rt} PTQ: {dst.name} in {time.time() - t0:.1f}s", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001  (a baseline tool failing is a result to report, not a crash)
            print(f"  {rt} PTQ failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
    return out


def predict(path: Path, images: np.ndarray) -> np.ndarray:
    return runtimes.predict_batched(runtimes.load(path, threads=1), images)


def fake_quant_logits(run: Path, images: np.ndarray) -> np.ndarray:
    import torch

    from pipeline.config import RunConfig, apply_overrides, load_yaml
    from pipeline.quant.qat import predict as torch_predict
    from pipeline.runner import RunContext
    from pipeline.stages.qat import load_student

    cfg = apply_overrides(RunConfig(), load_yaml(run / "config.json"))
    ctx = RunContext(cfg, run, log=lambda m: None)
    return torch_predict(load_student(ctx), torch.from_numpy(images)).numpy()


def accuracy_rows(run: Path, ptq: dict[str, Path], x: np.ndarray, y: np.ndarray, bits: str) -> list[str]:
    export = json.loads((run / "export.json").read_text())
    fq = fake_quant_logits(run, x)
    rows = [f"| {bits} | PyTorch fake-quant ({bits}) | - | {(fq.argmax(1) == y).mean() * 100:.2f} % | 100 % | - |"]
    for a in export["artifacts"]:
        path = run / a["path"]
        logits = predict(path, x)
        cov = a.get("integer_coverage")
        agree = (logits.argmax(1) == fq.argmax(1)).mean() * 100
        share = "-" if not cov else f"{cov['share'] * 100:.1f} %"
        rows.append(f"| {bits} | ours: {a['path']} | {RUNTIME_OF[path.suffix]} | {(logits.argmax(1) == y).mean() * 100:.2f} % | "
                    f"{agree:.2f} % | {share} |")
    for rt, path in ptq.items():
        logits = predict(path, x)
        rows.append(f"| {bits} | {rt} PTQ: {path.name} | {rt} | {(logits.argmax(1) == y).mean() * 100:.2f} % | "
                    f"{(logits.argmax(1) == fq.argmax(1)).mean() * 100:.2f} % | - |")
    return rows


def latency_rows(label: str, run: Path, ptq: dict[str, Path], trials: int, settings: BenchSettings) -> list[str]:
    export = json.loads((run / "export.json").read_text())
    sample = holdout_images(run)[:1]
    paths = {RUNTIME_OF[Path(a["path"]).suffix]: {} for a in export["artifacts"]}
    for a in export["artifacts"]:
        p = run / a["path"]
        paths[RUNTIME_OF[p.suffix]]["fp32" if a["precision"] == "fp32" else "ours"] = p
    for rt, p in ptq.items():
        paths.setdefault(rt, {})["ptq"] = p
    preds = {(rt, kind): runtimes.load(p, threads=1) for rt, kinds in paths.items() for kind, p in kinds.items()}
    p50: dict[tuple[str, str], list[float]] = {k: [] for k in preds}
    p90: dict[tuple[str, str], list[float]] = {k: [] for k in preds}
    for _ in range(trials):  # interleaved: every artifact once per trial
        for key, pred in preds.items():
            stats = runtimes.benchmark(pred, runtimes.prepare_feeds(pred, sample), settings)
            p50[key].append(stats.p50_ms)
            p90[key].append(stats.p90_ms)
    rows = []
    for rt in paths:
        def med(kind: str, d=p50) -> float | None:
            return float(np.median(d[(rt, kind)])) if (rt, kind) in d else None

        fp, ours, base = med("fp32"), med("ours"), med("ptq")
        spread = max(np.ptp(p50[(rt, "ours")]) / med("ours"), 0) * 100 if ours else 0
        rows.append(f"| {label} | {rt} | {fp:.3f} | {ours:.3f} ({med('ours', p90):.3f}) | "
                    f"{'-' if base is None else f'{base:.3f}'} | {fp / ours:.2f}× | {'-' if base is None else f'{base / ours:.2f}×'} | "
                    f"{spread:.1f} % |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", default="w8a8,w4a4")
    ap.add_argument("--budget", default="default")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--runs", type=int, default=200, help="timed runs per trial (and at least --secs seconds)")
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--skip-resnet18", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: a temporary folder)")
    args = ap.parse_args()
    os.environ.setdefault("ZSQ_QUIET", "1")
    settings = BenchSettings(warmup_runs=10, warmup_min_secs=1.0, num_runs=args.runs, min_secs=args.secs, max_secs=60.0)
    x, y = load_split("test")
    acc, lat = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        for bits in args.bits.split(","):
            run = root / bits  # same folder names as benchmarks.data_free_cost: --out there reuses its synth and qat stages
            pipeline_run(run, {"qat.bits": bits, "export.targets": ["onnx", "openvino", "tflite"]}, args.budget)
            ptq = build_ptq(run, holdout_images(run))
            acc += accuracy_rows(run, ptq, x, y, bits)
            lat += latency_rows(f"bundled ResNet-20 1×28×28, {bits}", run, ptq, args.trials, settings)
        if not args.skip_resnet18:
            run = root / "resnet18_224"
            # random weights: speed only. A few tiny synthesis steps, range init, no QAT steps.
            pipeline_run(run, {"model.name": "resnet18", "model.input_shape": "3,224,224", "model.num_classes": 1000,
                               "export.targets": ["onnx", "openvino", "tflite"], "synthesis.num_images": 8, "synthesis.holdout_images": 8,
                               "synthesis.options": {"batch_size": 8, "iterations": 2}, "qat.steps": 0, "qat.calib_images": 8}, "default")
            ptq = build_ptq(run, holdout_images(run))
            lat += latency_rows("ResNet-18 3×224×224 (random weights), w8a8", run, ptq, args.trials, settings)
    print("### Accuracy on the real Fashion-MNIST test split (10,000 images)\n")
    print("| trained | artifact | runtime | top-1 | agreement with fake-quant | integer MACs |\n|---|---|---|---|---|---|")
    print("\n".join(acc))
    print("\n### Latency, batch 1, 1 thread: median over trials of p50 ms (p90 in brackets)\n")
    print("| model | runtime | FP32 | ours int8 | runtime's own PTQ int8 | FP32 / ours | PTQ / ours | trial spread (ours) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(lat))


if __name__ == "__main__":
    main()
