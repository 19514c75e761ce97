"""The model card: what every stage needs to know about a model besides its weights.

Borrowed from timm's ``PretrainedCfg``: the input contract (shape, pixel range,
normalisation that lives inside the model), the class names and the reference
FP accuracy, so a report can say what the artifact expects and what it costs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ModelCard:
    name: str
    input_shape: tuple[int, int, int]  # C, H, W (batch excluded)
    num_classes: int
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    pixel_range: tuple[float, float] = (0.0, 1.0)
    normalization_inside: bool = True
    class_names: tuple[str, ...] = ()
    fp_top1: float | None = None  # measured accuracy of the shipped weights, if any
    eval_dataset: str | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.input_shape) != 3 or min(self.input_shape) <= 0:
            raise ValueError(f"input_shape must be C,H,W with positive sizes, got {self.input_shape}")
        if self.num_classes < 2:
            raise ValueError("num_classes must be >= 2")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelCard":
        d = dict(d)
        for key in ("input_shape", "mean", "std", "pixel_range", "class_names"):
            if key in d and d[key] is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    @classmethod
    def load(cls, path: Path) -> "ModelCard":
        return cls.from_dict(json.loads(Path(path).read_text()))
