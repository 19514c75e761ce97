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

An ImageFolder's images come in any size; ``check.eval_transform`` (``--eval-transform``) says how each becomes
a model input (:func:`parse_transform`):

* ``center-crop`` (default) or ``center-crop:RATIO``: resize so the shorter side is the model's side / RATIO
  (bilinear), then cut the model's H×W from the centre: torchvision's evaluation convention, aspect ratio kept.
  RATIO 1.0 (the default) keeps the most of the image and passes images already at the model's size through
  untouched; 0.875 is the ImageNet recipe (resize 256, crop 224) for models trained with it.
* ``squash``: resize to H×W ignoring the aspect ratio (what this loader did before; for data prepared that way).
* ``module:function`` or ``path/to/file.py:function``: your own, called with each image as a PIL image in the
  model's channel mode (``L`` for one channel, ``RGB`` for three) and returning a C×H×W array: floats in the
  model's pixel range or uint8 codes 0..255. Its module file's content enters the digest.

An ``.npz`` holds arrays already, so no transform applies to it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, UserError
from pipeline.models.card import ModelCard
from pipeline.models.loading import exception_text

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
PIXEL_TOLERANCE = 0.02  # share of the pixel range float images may overshoot (resampling, rounding); beyond it, another scale
EXPECTED = "give an .npz with arrays images and labels, or an ImageFolder directory (root/<class>/<image>)"


DEFAULT_TRANSFORM = "center-crop"
TRANSFORM_FORMS = "center-crop, center-crop:RATIO (0 < RATIO <= 1, e.g. 0.875), squash, module:function or path/to/file.py:function"


@dataclass(frozen=True)
class Transform:
    """How an ImageFolder image becomes a model input (``check.eval_transform``, parsed)."""

    kind: str  # "center-crop", "squash" or "function"
    ratio: float = 1.0  # center-crop: the crop's share of the resized shorter side
    target: str = ""  # function: the module or file
    name: str = ""  # function: its name there

    @property
    def spec(self) -> str:
        if self.kind == "center-crop":
            return "center-crop" if self.ratio == 1.0 else f"center-crop:{self.ratio:g}"
        return self.kind if self.kind == "squash" else f"{self.target}:{self.name}"


def parse_transform(spec: str | None) -> Transform:
    """``spec`` checked for its form (a function is imported only when images are read); ConfigError otherwise."""
    text = (spec or DEFAULT_TRANSFORM).strip()
    bad = f"check.eval_transform (--eval-transform) {text!r}: give {TRANSFORM_FORMS}"
    if text in ("center-crop", "squash"):
        return Transform(text)
    if text.startswith("center-crop:"):
        try:
            ratio = float(text.partition(":")[2])
        except ValueError:
            raise ConfigError(bad) from None
        if not 0 < ratio <= 1:
            raise ConfigError(f"{bad} (the ratio must be in (0, 1]: 1.0 crops nothing more than the aspect ratio needs)")
        return Transform("center-crop", ratio)
    target, _, name = text.rpartition(":")
    if not target or not name.isidentifier():
        raise ConfigError(bad)
    return Transform("function", target=target, name=name)


def _function_file(t: Transform) -> Path | None:
    """The file a function transform lives in: ``path/to/file.py`` as given, a module where it would be imported from."""
    if t.target.endswith(".py") or "/" in t.target or os.sep in t.target:
        return Path(t.target)
    with _cwd_importable():
        try:
            found = importlib.util.find_spec(t.target)
        except (ImportError, ValueError) as exc:
            raise UserError(f"--eval-transform {t.spec}: cannot import {t.target} ({exception_text(exc)})") from None
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise UserError(f"--eval-transform {t.spec}: no module {t.target!r} (run from the folder that holds it, "
                        "or give path/to/file.py:function)")
    return Path(found.origin)


class _cwd_importable:
    """The working directory on sys.path while a module transform is found and imported (``python -m`` has it, the
    ``pipeline`` script does not)."""

    def __enter__(self) -> None:
        self.added = os.getcwd() not in sys.path
        if self.added:
            sys.path.insert(0, os.getcwd())

    def __exit__(self, *exc: object) -> None:
        if self.added:
            sys.path.remove(os.getcwd())


def load_transform(t: Transform) -> Callable[[object], object]:
    """The user's function of a ``function`` transform, imported; one-line UserError when it cannot be."""
    path = _function_file(t)
    try:
        if t.target.endswith(".py") or "/" in t.target or os.sep in t.target:
            if not path.is_file():  # type: ignore[union-attr]
                raise UserError(f"--eval-transform {t.spec}: {path} is not a file (give path/to/file.py:function)")
            mod_name = f"zsq_user_transform_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"  # type: ignore[union-attr]
            module_spec = importlib.util.spec_from_file_location(mod_name, path)  # type: ignore[arg-type]
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            sys.modules[mod_name] = module
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            with _cwd_importable():
                module = importlib.import_module(t.target)
    except (KeyboardInterrupt, UserError):
        raise
    except BaseException as exc:  # noqa: BLE001  (user code may raise anything, SystemExit included)
        raise UserError(f"--eval-transform {t.spec}: importing {t.target} failed ({exception_text(exc)})") from None
    fn = getattr(module, t.name, None)
    if not callable(fn):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise UserError(f"--eval-transform {t.spec}: {t.target} has no function {t.name!r}; callables there: {', '.join(names) or 'none'}")
    return fn


def transform_digest(spec: str | None) -> bytes:
    """What the stage keys hash for a transform: its normalised spec, and for a function its module file's bytes (an
    edit to the function re-reads the data)."""
    t = parse_transform(spec)
    if t.kind != "function":
        return t.spec.encode()
    return t.spec.encode("utf-8", "surrogateescape") + b"\0" + _file_sha(_function_file(t))  # type: ignore[arg-type]


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


def digest(path: str | Path, transform: str | None = None) -> str:
    """A content digest of the data at ``path``: what the stage keys hash, since the runner hashes files, not folders.

    A folder: every class name in order and, per class, the sorted file names and contents the
    loader would read (an edited, added, removed or moved image changes it; a dot entry or a
    non-image file does not), and the ``transform`` that turns them into inputs (:func:`transform_digest`).
    A file: its contents (no transform applies). ``"missing"`` when there is nothing there
    (the stage that reads it then fails with its own message).
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        h.update(b"folder\0")
        if transform is not None:
            h.update(b"transform\0" + transform_digest(transform) + b"\0")
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


def center_crop(img, h: int, w: int, ratio: float = 1.0):
    """``img`` (PIL) resized so it covers (H/ratio)×(W/ratio) with its aspect ratio kept (for a square model: the
    shorter side becomes side/ratio), then H×W cut from the centre (torchvision's Resize + CenterCrop, bilinear).
    An image that already covers H×W exactly at ratio 1.0 is not resampled at all."""
    from PIL import Image

    iw, ih = img.size
    scale = max(h / ratio / ih, w / ratio / iw)
    nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
    if (nw, nh) != (iw, ih):
        img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - w) // 2, (nh - h) // 2
    return img.crop((left, top, left + w, top + h))


def _read_image(f: Path, c: int, h: int, w: int, t: Transform, fn: Callable[[object], object] | None) -> np.ndarray:
    """One image as a C×H×W array: uint8 codes for the built-in transforms, what the user's function returns otherwise."""
    from PIL import Image

    try:
        with Image.open(f) as img:
            img = img.convert("L" if c == 1 else "RGB")
    except Exception as exc:  # noqa: BLE001  (truncated, corrupt or unsupported files raise various errors)
        raise UserError(f"{f}: not a readable image ({exception_text(exc)}); remove or replace it") from None
    if fn is not None:
        try:
            out = np.asarray(fn(img))
        except (KeyboardInterrupt, UserError):
            raise
        except BaseException as exc:  # noqa: BLE001  (user code may raise anything)
            raise UserError(f"--eval-transform {t.spec} failed on {f}: {exception_text(exc)}") from None
        if out.shape != (c, h, w):
            raise UserError(f"--eval-transform {t.spec} returned shape {out.shape} for {f}; the model takes {(c, h, w)} (C×H×W)")
        return out
    img = center_crop(img, h, w, t.ratio) if t.kind == "center-crop" else img.resize((w, h))
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if c == 1 else arr.transpose(2, 0, 1)


def load_image_folder(root: Path, card: ModelCard, transform: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """root/<class>/<image>; label = the class folder's position in sorted order (torchvision's ImageFolder convention);
    each image made an input by ``transform`` (:func:`parse_transform`; default centre crop)."""
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
    t = parse_transform(transform)
    fn = load_transform(t) if t.kind == "function" else None
    c, h, w = card.input_shape
    images, labels = [], []
    for idx, (_, files) in enumerate(entries):
        for f in files:
            x = _read_image(f, c, h, w, t, fn)
            # a function's arrays are checked one by one (the message names the file); the built-ins' uint8 codes at once
            images.append(x if fn is None else _pixels(x[None], card, f"--eval-transform {t.spec} on {f}")[0])
            labels.append(idx)
    if not images:
        raise UserError(f"{root}: no images in its class folders ({', '.join(sorted(IMAGE_SUFFIXES))})")
    stacked = np.stack(images)
    return (stacked if fn is not None else _pixels(stacked, card, str(root))), np.asarray(labels, dtype=np.int64)


def load_eval_data(path: str | Path, card: ModelCard, limit: int | None = None,
                   flag: str = "--eval-data", transform: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (float32 N×C×H×W in the model's pixel range) and labels (int64 class indices), checked; the first ``limit``.

    ``flag`` names the option the path came from in messages (``--calib-data`` uses the same loader); ``transform``
    is how an ImageFolder's images become inputs (:func:`parse_transform`).
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{flag} {p} does not exist ({EXPECTED})")
    if limit is not None and limit < 0:
        raise UserError(f"check.eval_limit is {limit}: give the number of images to use (or leave it unset for all)")
    images, labels = load_image_folder(p, card, transform) if p.is_dir() else load_npz(p, card)
    if len(images) != len(labels):
        raise UserError(f"{p}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise UserError(f"{p}: no images (it holds 0); give at least one labelled image")
    return (images[:limit], labels[:limit]) if limit else (images, labels)
