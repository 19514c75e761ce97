"""The synthetic set on disk: images, labels, the seed and the method that made it.

``extras`` holds named arrays a method needs in the qat stage (a generator's
weights, FDDA's real calibration images); saved as ``extra__<name>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_EXTRA = "extra__"


@dataclass
class SyntheticSet:
    images: np.ndarray  # float32, N×C×H×W, raw pixel range of the model card
    labels: np.ndarray  # int64, N (the target classes the images were synthesized for)
    seed: int
    method: str
    meta: dict = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def save(self, path: Path) -> None:
        """Write atomically: a temp file in the same folder, then rename."""
        from runtimes.atomic import atomic_path

        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, images=self.images.astype(np.float32), labels=self.labels.astype(np.int64),
                                seed=np.int64(self.seed), method=np.str_(self.method), meta=np.str_(json.dumps(self.meta)),
                                **{_EXTRA + k: np.asarray(v) for k, v in self.extras.items()})

    @classmethod
    def load(cls, path: Path) -> "SyntheticSet":
        with np.load(path, allow_pickle=False) as z:
            extras = {k[len(_EXTRA):]: z[k] for k in z.files if k.startswith(_EXTRA)}
            return cls(z["images"], z["labels"], int(z["seed"]), str(z["method"]), json.loads(str(z["meta"])), extras)

    @classmethod
    def union(cls, parts: list["SyntheticSet"]) -> "SyntheticSet":
        """The set made of every rank's shard, in rank order; rank 0's seed, meta and extras (the generator's weights are
        the same on every rank: it was trained data-parallel). One part is returned as is."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        meta = {**first.meta, "ranks": len(parts), "images_per_rank": [len(p) for p in parts]}
        return cls(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]), first.seed, first.method,
                   meta, dict(first.extras))
