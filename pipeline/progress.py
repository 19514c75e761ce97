"""Progress of the run and of its long loops, through :mod:`pipeline.cli.output`.

On a terminal a loop is a tqdm bar; anywhere else (a CI log, ``2> file``) it is newline-terminated lines: one when
the loop starts, one every :data:`LINE_INTERVAL_S` seconds, one when it ends, never a carriage-return bar that
makes a whole stage one line of a log file. ``--log-file`` gets the lines whatever the terminal shows; ``-q``
shows neither; ``ZSQ_QUIET=1`` (the tests) turns the loops' progress off on the terminal, and ranks other than 0
of a ``torchrun`` run show none.

The runner tells this module which stage is running (:func:`stage`), so each loop's line names it
(``stage 1/5 synth``) and, when earlier runs of this folder timed the stages still to come, says how long the
run has left.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from pipeline.cli import output

T = TypeVar("T")

LINE_INTERVAL_S = 30.0  # between two progress lines in a log: a few hundred lines for a run of hours


@dataclass
class StageInfo:
    """The stage now running, as the runner knows it."""

    index: int  # 1-based
    total: int
    name: str
    run_started: float  # time.monotonic() when the run started
    started: float  # ... when this stage started
    estimate_s: float | None = None  # this stage's duration in the last run of this folder, when comparable
    after_s: float | None = None  # the stages after it, likewise (None when one of them has no timing)

    @property
    def prefix(self) -> str:
        return f"stage {self.index}/{self.total} {self.name}"

    def run_left(self, now: float, loop_left: float | None = None) -> float | None:
        """Seconds the run has left by earlier runs' timings (never less than what the current loop says it needs)."""
        if self.estimate_s is None or self.after_s is None:
            return None
        left = max(self.estimate_s - (now - self.started), loop_left or 0.0, 0.0)
        return left + self.after_s


_stage: StageInfo | None = None


@contextlib.contextmanager
def stage(info: StageInfo) -> Iterator[None]:
    """Name ``info`` in every progress line while the stage runs."""
    global _stage
    _stage, before = info, _stage
    try:
        yield
    finally:
        _stage = before


def clock(seconds: float) -> str:
    """``0:41``, ``12:05``, ``1:02:03``."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class Progress(Generic[T]):
    """A loop's progress: iterate it (or call :meth:`update`), :meth:`set_postfix` what to show, :meth:`close` at the end.

    The subset of tqdm's interface the loops use, drawn as a tqdm bar on a terminal and as lines elsewhere.
    """

    def __init__(self, it: Iterable[T] | None, desc: str, total: int | None, initial: int, unit: str) -> None:
        self.it, self.desc, self.unit = it, desc, unit
        self.total = total if total is not None else (len(it) + initial if hasattr(it, "__len__") else None)  # type: ignore[arg-type]
        self.n = self.initial = initial
        self.postfix = ""
        self.started = self.last_line = time.monotonic()
        self.closed = False
        on = os.environ.get("RANK", "0") == "0"  # one progress per run: rank 0's
        quiet = os.environ.get("ZSQ_QUIET") == "1" or output.level() < output.NORMAL
        self.bar = None
        self.lines_on_terminal = on and not quiet and not output.is_terminal()
        self.lines_in_log = on and output.has_log()
        if on and not quiet and output.is_terminal():
            from tqdm import tqdm

            where = f"{_stage.index}/{_stage.total} " if _stage else ""
            self.bar = tqdm(total=self.total, initial=initial, desc=f"{where}{desc}", unit=unit, leave=False,
                            dynamic_ncols=True, mininterval=0.1, file=output.terminal())
        self._line("starting")

    def __iter__(self) -> Iterator[T]:
        assert self.it is not None, "Progress(total=...) without an iterable: call update()"
        try:
            for item in self.it:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        if time.monotonic() - self.last_line >= LINE_INTERVAL_S and not (self.total and self.n >= self.total):  # close() says it
            self._line()

    def set_postfix(self, refresh: bool = False, **values: object) -> None:
        """``key=value`` pairs after the count, as tqdm shows them (``loss=0.012, steps_s=3.1``)."""
        self.set_postfix_str(", ".join(f"{k}={v}" for k, v in values.items()), refresh)

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=refresh)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        self._line(f"done in {clock(time.monotonic() - self.started)}")

    def _line(self, state: str | None = None) -> None:
        """One newline-terminated progress line, to the log file and (off a terminal) to stderr."""
        if not (self.lines_on_terminal or self.lines_in_log):
            return
        now = time.monotonic()
        self.last_line = now
        count = f"{self.n}/{self.total} {self.unit}s" if self.total else f"{self.n} {self.unit}s"
        if self.total and self.n:
            count += f" ({self.n / self.total:.0%})"
        parts = [f"{_stage.prefix} · " if _stage else "", f"{self.desc}: {count}"]
        if self.postfix:
            parts.append(f" · {self.postfix}")
        loop_left = None
        if state is None:
            done, elapsed = self.n - self.initial, now - self.started
            loop_left = (self.total - self.n) * elapsed / done if self.total and done > 0 else None
            parts.append(f" · {clock(elapsed)} elapsed" + (f", about {clock(loop_left)} left" if loop_left is not None else ""))
        else:
            parts.append(f" · {state}")
        run_left = _stage.run_left(now, loop_left) if _stage else None
        if run_left is not None and state is None:
            parts.append(f" · run about {clock(run_left)} left")
        line = "".join(parts)
        if self.lines_on_terminal:
            output.info(line)
        else:
            output.log_only(line)


def progress(it: Iterable[T] | None = None, desc: str = "", total: int | None = None, initial: int = 0,
             unit: str = "step") -> Progress[T]:
    """A loop's progress (:class:`Progress`): ``for x in progress(range(n), desc="qat"): ...``, or
    ``bar = progress(total=n, desc=...)`` and ``bar.update()``. ``initial``: steps already done (a resumed loop)."""
    return Progress(it, desc, total, initial, unit)
