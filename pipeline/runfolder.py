"""Guards of the run folder: one writer at a time, never someone else's folder, no leftovers of a killed run.

A run folder is written by one process (rank 0 of a run, or ``pipeline report``).
:class:`RunLock` holds an ``fcntl`` lock on ``<run>/.lock`` for the whole command:
the kernel drops it when the process dies, even by ``kill -9``, so a stale lock
never blocks a later run, and a second process gets a clear refusal instead of
mixing its files with the first one's. While holding the lock the runner sweeps
temporary files a killed writer left (:func:`runtimes.atomic.sweep`).

:func:`check_out` refuses folders a run must not write into: an empty ``--out``
(the current directory), a file, or a non-empty folder that is not a run folder
(unless ``--force``), so a run never overwrites files it did not make.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path

from pipeline.errors import UserError
from pipeline.layout import RunLayout
from runtimes.atomic import TMP_PREFIX

# What a run folder may hold before its first stage finishes (a killed or failed first run leaves these).
OWN_ENTRIES = {".lock", "checkpoints", "synthetic", "qat", "bench", "superseded"}


class RunFolderBusy(UserError):
    """Another live process holds the run folder's lock."""


def check_out(out: str | os.PathLike | None, force: bool = False) -> Path:
    """The run folder ``out`` if a run may write there; a one-line :class:`UserError` saying what to do otherwise."""
    if out is None or not str(out).strip():
        raise UserError("--out is empty: give a folder for the run, e.g. --out runs/mynet")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file, not a folder: give a folder for the run (it is created if missing)")
    if path.is_dir() and not force:
        layout = RunLayout(path)
        if not layout.is_run():
            foreign = sorted(e.name for e in path.iterdir() if e.name not in OWN_ENTRIES and not e.name.startswith(TMP_PREFIX))
            if foreign:
                shown = ", ".join(foreign[:4]) + (f" (+{len(foreign) - 4} more)" if len(foreign) > 4 else "")
                raise UserError(f"--out {path} is not empty and is not a run folder (it holds {shown}): "
                                "give a new or empty folder, or --force to write the run there anyway")
    return path


class RunLock:
    """An exclusive, non-blocking lock on ``<run>/.lock``, holding this process's pid and command for the refusal message."""

    def __init__(self, run_dir: str | os.PathLike, what: str = "pipeline") -> None:
        self.path = RunLayout(Path(run_dir)).lock
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunFolderBusy(f"{self.path.parent} is in use by another pipeline process ({self._holder()}): "
                                "wait for it to finish, or give another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": self.what,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
        self._fd = fd
        return self

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
            return f"pid {info['pid']}, {info.get('command', 'pipeline')} since {info.get('since', '?')}"
        except (OSError, ValueError, KeyError):
            return "pid unknown"

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (removing it would race a waiting locker)
            self._fd = None
