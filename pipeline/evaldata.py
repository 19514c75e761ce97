"""Real labelled data the *user* brings for ``--eval-data``: an ``.npz`` or an ImageFolder directory.

Only the check stage reads it, to report real accuracy next to the label-free
fidelity figures; synthesis and QAT never see it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.models.card import ModelCard

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _to_nchw(images: np.ndarray, card: ModelCard, source: str) -> np.ndarray:
    c, h, w = card.input_shape
    if images.ndim == 3:
        images = images[:, None] if c == 1 else images
    if images.ndim == 4 and images.shape[1] != c and images.shape[-1] == c:
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1:] != (c, h, w):
        raise UserError(f"{source}: images have shape {images.shape[1:]}, the model takes {(c, h, w)} (N×C×H×W or N×H×W×C)")
    if images.dtype == np.uint8:
        lo, hi = card.pixel_range
        images = images.astype(np.float32) / 255.0 * (hi - lo) + lo
    return images.astype(np.float32)


def load_npz(path: Path, card: ModelCard) -> tuple[np.ndarray, np.ndarray]:
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path}: not a readable .npz ({exc})") from None
    keys = set(z.files)
    ik = next((k for k in ("images", "x", "x_test") if k in keys), None)
    lk = next((k for k in ("labels", "y", "y_test") if k in keys), None)
    if ik is None or lk is None:
        raise UserError(f"{path}: expected arrays 'images' and 'labels' (found {', '.join(sorted(keys))})")
    return _to_nchw(z[ik], card, str(path)), z[lk].astype(np.int64).reshape(-1)


def load_image_folder(root: Path, card: ModelCard) -> tuple[np.ndarray, np.ndarray]:
    """root/<class>/<image>; classes in sorted order (torchvision's ImageFolder convention)."""
    try:
        from PIL import Image
    except ImportError:
        raise UserError("reading an ImageFolder needs Pillow: pip install pillow (or give an .npz)") from None
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"{root}: no class sub-folders (expected root/<class>/<image>)")
    c, h, w = card.input_shape
    images, labels = [], []
    for idx, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            img = Image.open(f).convert("L" if c == 1 else "RGB").resize((w, h))
            arr = np.asarray(img, dtype=np.uint8)
            images.append(arr[None] if c == 1 else arr.transpose(2, 0, 1))
            labels.append(idx)
    if not images:
        raise UserError(f"{root}: no images found")
    return _to_nchw(np.stack(images), card, str(root)), np.asarray(labels, dtype=np.int64)


def load_eval_data(path: str | Path, card: ModelCard, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    p = Path(path)
    if not p.exists():
        raise UserError(f"--eval-data {p} does not exist (give an ImageFolder directory or an .npz with images and labels)")
    images, labels = load_image_folder(p, card) if p.is_dir() else load_npz(p, card)
    if len(images) != len(labels):
        raise UserError(f"{p}: {len(images)} images but {len(labels)} labels")
    if labels.max(initial=0) >= card.num_classes:
        raise UserError(f"{p}: label {labels.max()} out of range for a {card.num_classes}-class model")
    return (images[:limit], labels[:limit]) if limit else (images, labels)
