"""Reader for the Fashion-MNIST IDX files shipped by Debian's ``dataset-fashion-mnist``.

Only benchmarks and tests read real data; the pipeline never does (it is data-free).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse one (optionally gzipped) IDX file into an array of its declared dtype and shape."""
    raw = gzip.open(path, "rb").read() if str(path).endswith(".gz") else Path(path).read_bytes()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code not in _DTYPES:
        raise ValueError(f"{path}: not an IDX file")
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=_DTYPES[dtype_code], offset=4 + 4 * ndim).reshape(shape)


def load_split(split: str, root: Path = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 N×1×28×28 in [0, 1] and int64 labels. ``split`` is 'train' or 't10k'/'test'."""
    prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}[split]
    img_path = root / f"{prefix}-images-idx3-ubyte.gz"
    if not img_path.exists():
        raise FileNotFoundError(f"{img_path} missing: install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    images = read_idx(img_path).astype(np.float32)[:, None] / 255.0
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels
