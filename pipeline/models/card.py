"""The model card: what every stage needs to know about a model besides its weights.

Borrowed from timm's ``PretrainedCfg``: the input contract (shape, pixel range,
normalisation that lives inside the model), the class names and the reference
FP accuracy, so a report can say what the artifact expects and what it costs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
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
        check_input_contract(self.input_shape, self.mean, self.std, self.pixel_range)
        if self.num_classes < 2:
            raise ValueError(f"the model has {self.num_classes} output(s); a classifier has at least 2 classes")

    def describe_input(self) -> str:
        """``1×28×28 images and 10 classes``: what the model takes, for messages."""
        return f"{'×'.join(map(str, self.input_shape))} images and {self.num_classes} classes"

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


def check_input_contract(input_shape: Sequence[int], mean: Sequence[float], std: Sequence[float],
                         pixel_range: Sequence[float]) -> None:
    """Raise ``ValueError`` (a message for the user) if the input contract cannot describe real images.

    Checked before a model is built, not only when its card is made: a zero ``std`` or a
    reversed ``pixel_range`` would otherwise surface as NaN outputs or images drawn from
    an empty range, far from the setting that caused them.
    """
    if len(input_shape) != 3 or min(input_shape) <= 0:
        raise ValueError(f"input_shape must be C,H,W with positive sizes, got {tuple(input_shape)}")
    c = input_shape[0]
    if len(pixel_range) != 2 or not all(math.isfinite(v) for v in pixel_range) or not pixel_range[0] < pixel_range[1]:
        raise ValueError(f"model.pixel_range must be two finite numbers lo, hi with lo < hi (got {list(pixel_range)})")
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, c):
            raise ValueError(f"model.{name} has {len(values)} values for {c} input channel(s): give " + ("1" if c == 1 else f"1 or {c}"))
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"model.{name} must be finite numbers (got {list(values)})")
    if min(std) <= 0:
        raise ValueError(f"model.std must be positive (got {list(std)})")
