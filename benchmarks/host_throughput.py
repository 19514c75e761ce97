"""Host throughput: synthesis images/s and QAT steps/s of the bundled model, per precision, layout and rank count.

    python -m benchmarks.host_throughput                       # this machine's CPU (fp32, bf16, channels_last, 2 ranks)
    python -m benchmarks.host_throughput --accelerator cuda    # a GPU host: the same rows on CUDA (bf16, fp16)
    python -m benchmarks.host_throughput --with-compile        # also torch.compile (minutes of compilation on a CPU)

Every row runs the production code (BN inversion's synthesis loop, the one QAT loop with the default recipe) on
the same inputs, one after the other in this process, and is reported as a ratio to the fp32 row of the same run.
"2 ranks" starts two processes on a Gloo (CPU) or NCCL (CUDA) group, each doing its half, as ``torchrun`` would;
its figure is the whole group's throughput. Timings exclude a warm-up. Never run inside the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

SYNTH_IMAGES, SYNTH_ITERS = 64, 10
QAT_STEPS, QAT_BATCH = 10, 64


def _models(device: torch.device, channels_last: bool):
    from pipeline.config import ModelConfig
    from pipeline.models.loading import load_model
    from pipeline.quant.calibrate import calibrate
    from pipeline.quant.prepare import quantize_model
    from pipeline.quant.scheme import BitScheme

    teacher, card = load_model(ModelConfig())
    pool = torch.rand(256, *card.input_shape, generator=torch.Generator().manual_seed(0))
    student = quantize_model(teacher, BitScheme.parse("w4a4"))
    calibrate(student, [pool[:64]])
    teacher, student, pool = teacher.to(device), student.to(device), pool.to(device)
    if channels_last:
        teacher, student = teacher.to(memory_format=torch.channels_last), student.to(memory_format=torch.channels_last)
        pool = pool.contiguous(memory_format=torch.channels_last)
    return teacher, student, card, pool


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(placement, channels_last: bool = False, compile_: bool = False, images: int = SYNTH_IMAGES,
            batch: int = QAT_BATCH) -> dict:
    """(synthesis images/s, QAT steps/s) of one process with ``placement``."""
    from pipeline.quant.qat import PoolKD
    from pipeline.quant.settings import QATSettings
    from pipeline.synthesis import create_method
    from pipeline.train import engine

    teacher, student, card, pool = _models(placement.device, channels_last)
    synth_teacher = torch.compile(teacher) if compile_ else teacher  # what --compile does: the FP model, for synthesis
    inv = create_method("bn-inversion", {"batch_size": images, "iterations": SYNTH_ITERS}, placement)
    t0 = time.perf_counter()
    inv.synthesize(synth_teacher, card, images, 0)  # warm-up (and compilation)
    warmup_s = time.perf_counter() - t0
    _sync(placement.device)
    t0 = time.perf_counter()
    inv.synthesize(synth_teacher, card, images, 1)
    _sync(placement.device)
    synth_s = time.perf_counter() - t0
    fwd = student  # --compile compiles the FP model for synthesis only; QAT stays eager (its losses trace the model with fx)
    labels = torch.zeros(len(pool), dtype=torch.long, device=placement.device)
    warm = QATSettings(steps=2, batch_size=batch)
    engine.train(student, teacher, PoolKD(fwd, teacher, pool, labels, warm, placement), warm, placement)
    settings = QATSettings(steps=QAT_STEPS, batch_size=batch)
    recipe = PoolKD(fwd, teacher, pool, labels, settings, placement)
    _sync(placement.device)
    t0 = time.perf_counter()
    engine.train(student, teacher, recipe, settings, placement)
    _sync(placement.device)
    qat_s = time.perf_counter() - t0
    out = {"synth_images_per_s": images / synth_s, "synth_first_call_s": warmup_s, "qat_steps_per_s": QAT_STEPS / qat_s,
           "qat_images_per_s": QAT_STEPS * recipe.images_per_step / qat_s}
    if placement.device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(placement.device) / 2**20
    return out


def _rank(rank: int, world: int, store: str, accelerator: str, out: str) -> None:
    import torch.distributed as dist

    from pipeline.train.placement import Placement

    if accelerator == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    placement = Placement.resolve(accelerator, "fp32", rank, world, rank)
    backend = "nccl" if placement.device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{store}", rank=rank, world_size=world)
    dist.barrier()
    t0 = time.perf_counter()
    r = measure(placement, images=SYNTH_IMAGES // world)  # each rank its shard of the images; QAT batch split by the engine
    dist.barrier()
    r["wall_s"] = time.perf_counter() - t0
    if rank == 0:
        Path(out).write_text(json.dumps(r))
    dist.destroy_process_group()


def two_ranks(accelerator: str) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        mp.spawn(_rank, args=(2, str(Path(tmp) / "store"), accelerator, str(out)), nprocs=2, join=True)
        r = json.loads(out.read_text())
    # rank 0 made half the images and half of each batch in the time measured: the group made twice that
    return {"synth_images_per_s": 2 * r["synth_images_per_s"], "qat_steps_per_s": r["qat_steps_per_s"],
            "qat_images_per_s": 2 * r["qat_images_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--with-compile", action="store_true", help="also time torch.compile of the FP model (what --compile does)")
    ap.add_argument("--no-ranks", action="store_true", help="skip the 2-process row")
    args = ap.parse_args()
    os.environ.setdefault("ZSQ_QUIET", "1")
    from pipeline.train.placement import Placement

    base = Placement.resolve(args.accelerator, "fp32")
    rows: dict[str, dict] = {"fp32": measure(base)}
    rows["bf16 autocast"] = measure(replace(base, precision="bf16"))
    if base.device.type == "cuda":
        rows["fp16 autocast + GradScaler"] = measure(replace(base, precision="fp16"))
    rows["fp32 channels_last"] = measure(base, channels_last=True)
    if args.with_compile:
        rows["fp32 torch.compile"] = measure(base, compile_=True)
    if not args.no_ranks and (base.device.type == "cpu" or torch.cuda.device_count() >= 2):
        rows["fp32, 2 ranks"] = two_ranks(args.accelerator)
    ref = rows["fp32"]
    device = torch.cuda.get_device_name(0) if base.device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"| {device} | synthesis images/s | × fp32 | first synthesis call | QAT steps/s (batch {QAT_BATCH}) | × fp32 |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        first = f"{r['synth_first_call_s']:.1f} s" if "synth_first_call_s" in r else "-"
        print(f"| {name} | {r['synth_images_per_s']:.1f} | {r['synth_images_per_s'] / ref['synth_images_per_s']:.2f} | {first} | "
              f"{r['qat_steps_per_s']:.2f} | {r['qat_steps_per_s'] / ref['qat_steps_per_s']:.2f} |")
    print(json.dumps(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
