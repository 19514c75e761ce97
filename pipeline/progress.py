"""Progress bars for long stages: tqdm on stderr, quiet when ``ZSQ_QUIET=1`` or stderr is not a terminal in CI."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(it: Iterable[T] | None = None, desc: str = "", total: int | None = None) -> tqdm:
    disable = os.environ.get("ZSQ_QUIET") == "1" or os.environ.get("RANK", "0") != "0"  # one bar per run: rank 0
    # Not a terminal (CI logs): refresh rarely instead of hundreds of carriage returns.
    mininterval = 0.1 if sys.stderr.isatty() else 15.0
    return tqdm(it, desc=desc, total=total, disable=disable, mininterval=mininterval, leave=False, dynamic_ncols=True, file=sys.stderr)
