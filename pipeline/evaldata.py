"""Real labelled data the *user* brings for ``--eval-data`` (and ``--calib-data``): an ``.npz`` or an ImageFolder directory.

Only the check stage reads eval data, to report real accuracy next to the label-free
fidelity figures; synthesis and QAT never see it (``--calib-data``, for the one method
that is not data-free, goes through the same loader).

An accuracy is only as right as the labels and pixels it is computed from, so data that
would give a wrong figure is refused, not scored: labels outside the model's classes
(``-1`` halved a 94 % model's accuracy), float pixels outside the model's input range
(0..255 floats for a 0..1 model), an ImageFolder whose folders are not one per class
(labels are folder positions, so a stray or missing folder shifts them). Hidden entries
(``.ipynb_checkpoints``, ``.DS_Store``, macOS ``._*`` files) are not data and are skipped.
:func:`digest` hashes exactly what the loader reads, for the stage keys.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.models.card import ModelCard
from pipeline.models.loading import exception_text

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
PIXEL_TOLERANCE = 0.02  # share of the pixel range float images may overshoot (resampling, rounding); beyond it, another scale
EXPECTED = "give an .npz with arrays images and labels, or an ImageFolder directory (root/<class>/<image>)"


def _hidden(p: Path) -> bool:
    return p.name.startswith(".")


def folder_entries(root: Path) -> list[tuple[str, list[Path]]]:
    """(class folder name, its image files) in label order: what :func:`load_image_folder` reads, and nothing else.

    Classes are the sub-folders in sorted order (torchvision's ImageFolder convention);
    dot-folders and dot-files are skipped, as are files that are not images by suffix.
    """
    try:
        classes = sorted((d for d in root.iterdir() if d.is_dir() and not _hidden(d)), key=lambda d: d.name)
        return [(d.name, sorted((f for f in d.iterdir() if f.is_file() and not _hidden(f) and f.suffix.lower() in IMAGE_SUFFIXES),
                                key=lambda f: f.name)) for d in classes]
    except OSError as exc:
        raise UserError(f"{root}: cannot list the folder ({exception_text(exc)})") from None


def _file_sha(path: Path) -> bytes:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exception_text(exc)})") from None
    return h.digest()


def digest(path: str | Path) -> str:
    """A content digest of the data at ``path``: what the stage keys hash, since the runner hashes files, not folders.

    A folder: every class name in order and, per class, the sorted file names and contents the
    loader would read (an edited, added, removed or moved image changes it; a dot entry or a
    non-image file does not). A file: its contents. ``"missing"`` when there is nothing there
    (the stage that reads it then fails with its own message).
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        h.update(b"folder\0")
        for cls, files in folder_entries(p):
            h.update(b"class\0" + cls.encode("utf-8", "surrogateescape") + b"\0")
            for f in files:
                h.update(f.name.encode("utf-8", "surrogateescape") + b"\0" + _file_sha(f))
    elif p.is_file():
        h.update(b"file\0" + _file_sha(p))
    else:
        return "missing"
    return h.hexdigest()


def _pixels(images: np.ndarray, card: ModelCard, source: str) -> np.ndarray:
    """float32 pixels in the model's ``pixel_range``: 8-bit codes are scaled into it, floats must already be in it."""
    lo, hi = card.pixel_range
    want = f"{lo:g}..{hi:g}"
    kind = images.dtype.kind
    if kind not in "uif":
        raise UserError(f"{source}: images of dtype {images.dtype}; give uint8 0..255 or floats in the model's pixel range {want}")
    if images.size == 0:
        return images.astype(np.float32)
    if kind in "ui":  # integer codes: 0..255 whatever the integer type
        mn, mx = int(images.min()), int(images.max())
        if mn < 0 or mx > 255:
            raise UserError(f"{source}: integer pixel values span {mn}..{mx}; give 8-bit codes 0..255 (read as {want}) "
                            f"or floats in the model's pixel range {want}")
        return (images.astype(np.float32) / 255.0 * (hi - lo) + lo).astype(np.float32)
    x = images.astype(np.float32)
    if not np.isfinite(x).all():
        raise UserError(f"{source}: images hold NaN or Inf values")
    mn, mx = float(x.min()), float(x.max())
    tol = PIXEL_TOLERANCE * (hi - lo)
    if mn < lo - tol or mx > hi + tol:
        raise UserError(f"{source}: float pixel values span {mn:g}..{mx:g}, the model takes {want} (its pixel_range, "
                        f"normalisation is inside the model); scale the images to {want}, or store them as uint8 0..255")
    return x


def _to_nchw(images: np.ndarray, card: ModelCard, source: str) -> np.ndarray:
    c, h, w = card.input_shape
    if images.ndim == 3:
        images = images[:, None] if c == 1 else images
    if images.ndim == 4 and images.shape[1] != c and images.shape[-1] == c:
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1:] != (c, h, w):
        raise UserError(f"{source}: images have shape {images.shape[1:]}, the model takes {(c, h, w)} (N×C×H×W or N×H×W×C)")
    return _pixels(images, card, source)


def _labels(raw: np.ndarray, card: ModelCard, source: str) -> np.ndarray:
    """int64 class indices, each in ``0..num_classes-1``: anything else would be scored as a wrong answer, silently."""
    y = np.asarray(raw)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"{source}: labels have shape {y.shape}; give one class index per image (one-hot labels: labels.argmax(1))")
    if y.dtype.kind not in "uifb":
        raise UserError(f"{source}: labels of dtype {y.dtype}; give whole class indices (integers)")
    if y.dtype.kind == "f":
        off = ~np.isfinite(y) | (y != np.round(y))
        if off.any():
            raise UserError(f"{source}: labels must be whole class indices; found {y[off][0]:g}")
    y = y.astype(np.int64)
    n = card.num_classes
    bad = (y < 0) | (y >= n)
    if bad.any():
        values = np.unique(y[bad])
        shown = ", ".join(map(str, values[:5])) + (" …" if len(values) > 5 else "")
        raise UserError(f"{source}: labels must be class indices 0..{n - 1} for this {n}-class model; "
                        f"{int(bad.sum())} of {len(y)} are outside that range ({shown})")
    return y


def load_npz(path: Path, card: ModelCard) -> tuple[np.ndarray, np.ndarray]:
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001  (zip, header and pickle refusals vary)
        raise UserError(f"{path}: not a readable .npz ({exception_text(exc)}); {EXPECTED}") from None
    if isinstance(z, np.ndarray):
        raise UserError(f"{path}: a .npy holds a single array without labels; {EXPECTED}")
    with z:
        keys = set(z.files)
        ik = next((k for k in ("images", "x", "x_test") if k in keys), None)
        lk = next((k for k in ("labels", "y", "y_test") if k in keys), None)
        if ik is None or lk is None:
            raise UserError(f"{path}: expected arrays 'images' and 'labels' (found {', '.join(sorted(keys)) or 'none'})")
        images, labels = _array(z, ik, path), _array(z, lk, path)
    return _to_nchw(images, card, str(path)), _labels(labels, card, str(path))


def _array(z: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return z[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UserError(f"{path}: array {key!r} holds Python objects (dtype=object), which are never loaded "
                            "(allow_pickle=False: loading them could run code); save numeric arrays, e.g. "
                            "np.savez(path, images=np.stack(images).astype(np.uint8), labels=np.asarray(labels))") from None
        raise UserError(f"{path}: array {key!r} is not readable ({exception_text(exc)})") from None
    except Exception as exc:  # noqa: BLE001  (a damaged zip member)
        raise UserError(f"{path}: array {key!r} is not readable ({exception_text(exc)})") from None


def _read_image(f: Path, c: int, h: int, w: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(f) as img:
            arr = np.asarray(img.convert("L" if c == 1 else "RGB").resize((w, h)), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001  (truncated, corrupt or unsupported files raise various errors)
        raise UserError(f"{f}: not a readable image ({exception_text(exc)}); remove or replace it") from None
    return arr[None] if c == 1 else arr.transpose(2, 0, 1)


def load_image_folder(root: Path, card: ModelCard) -> tuple[np.ndarray, np.ndarray]:
    """root/<class>/<image>; label = the class folder's position in sorted order (torchvision's ImageFolder convention)."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise UserError("reading an ImageFolder needs Pillow: pip install pillow (or give an .npz)") from None
    entries = folder_entries(root)
    if not entries:
        raise UserError(f"{root}: no class sub-folders (expected root/<class>/<image>)")
    if len(entries) != card.num_classes:
        names = ", ".join(cls for cls, _ in entries[:12]) + (" …" if len(entries) > 12 else "")
        raise UserError(f"{root}: {len(entries)} class folders, the model has {card.num_classes} classes; labels are the folders' "
                        f"positions in sorted order, so give one folder per class (empty ones allowed) and nothing else "
                        f"(dot-folders are skipped). Found: {names}")
    c, h, w = card.input_shape
    images, labels = [], []
    for idx, (_, files) in enumerate(entries):
        for f in files:
            images.append(_read_image(f, c, h, w))
            labels.append(idx)
    if not images:
        raise UserError(f"{root}: no images in its class folders ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return _pixels(np.stack(images), card, str(root)), np.asarray(labels, dtype=np.int64)


def load_eval_data(path: str | Path, card: ModelCard, limit: int | None = None,
                   flag: str = "--eval-data") -> tuple[np.ndarray, np.ndarray]:
    """Images (float32 N×C×H×W in the model's pixel range) and labels (int64 class indices), checked; the first ``limit``.

    ``flag`` names the option the path came from in messages (``--calib-data`` uses the same loader).
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{flag} {p} does not exist ({EXPECTED})")
    if limit is not None and limit < 0:
        raise UserError(f"check.eval_limit is {limit}: give the number of images to use (or leave it unset for all)")
    images, labels = load_image_folder(p, card) if p.is_dir() else load_npz(p, card)
    if len(images) != len(labels):
        raise UserError(f"{p}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise UserError(f"{p}: no images (it holds 0); give at least one labelled image")
    return (images[:limit], labels[:limit]) if limit else (images, labels)
