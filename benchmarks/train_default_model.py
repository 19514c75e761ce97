"""Train the bundled default model: ResNet-20 on the Fashion-MNIST train split.

    python -m benchmarks.train_default_model --epochs 8

Writes ``pipeline/models/weights/fmnist_resnet20.pt`` (state dict) and its model
card ``fmnist_resnet20.json`` with the accuracy measured on the 10k test split.
Normalisation lives inside the model, so it takes raw [0, 1] pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.fashion_mnist import CLASS_NAMES, load_split
from pipeline.models.resnet_cifar import resnet20

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "pipeline" / "models" / "weights"
MEAN, STD = (0.2860,), (0.3530,)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop (pad 2) and horizontal flip, per batch on CPU."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()
    x = padded[:, :, dy : dy + 28, dx : dx + 28]
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, bs: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), bs):
        x = torch.from_numpy(images[i : i + bs]).contiguous(memory_format=torch.channels_last)
        correct += (model(x).argmax(1).numpy() == labels[i : i + bs]).sum()
    return float(correct) / len(images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)

    xtr, ytr = load_split("train")
    xte, yte = load_split("test")
    model = resnet20(in_channels=1, num_classes=10, mean=MEAN, std=STD).to(memory_format=torch.channels_last)
    steps_per_epoch = len(xtr) // args.batch_size
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.25)
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for step in range(steps_per_epoch):
            idx = perm[step * args.batch_size : (step + 1) * args.batch_size]
            x = augment(xtr_t[idx], gen).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), ytr_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, xte, yte)
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss.item():.3f} test top-1 {acc * 100:.2f}% ({time.time() - t0:.0f}s)", flush=True)

    model = model.to(memory_format=torch.contiguous_format)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "fmnist_resnet20.pt"
    from runtimes.atomic import write_via

    write_via(weights, lambda f: torch.save(model.state_dict(), f))
    card = {
        "name": "fmnist_resnet20",
        "input_shape": [1, 28, 28],
        "num_classes": 10,
        "mean": list(MEAN),
        "std": list(STD),
        "pixel_range": [0.0, 1.0],
        "normalization_inside": True,
        "class_names": list(CLASS_NAMES),
        "fp_top1": round(acc, 4),
        "eval_dataset": "Fashion-MNIST t10k (10,000 images), Debian dataset-fashion-mnist",
        "notes": f"trained by benchmarks/train_default_model.py: {args.epochs} epochs, SGD nesterov, OneCycle lr {args.lr}, "
        f"batch {args.batch_size}, crop+flip, seed {args.seed}, {time.time() - t0:.0f}s on {os.cpu_count()} CPU cores",
        "extra": {"arch": "resnet20", "arch_kwargs": {"in_channels": 1, "num_classes": 10, "mean": list(MEAN), "std": list(STD)}},
    }
    (args.out / "fmnist_resnet20.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB), test top-1 {acc * 100:.2f}%")


if __name__ == "__main__":
    main()
