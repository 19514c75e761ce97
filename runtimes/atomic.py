"""Atomic file writes: the one way this project puts a file in place.

A writer that is killed, runs out of disk or loses a race must leave either the
old file or the new one, never half of one, and never write through a link that
someone planted at a predictable temporary name. Every writer therefore writes a
*unique* temporary file in the destination's own folder (``tempfile.mkstemp``:
``O_CREAT|O_EXCL``, so an existing name or symlink is never followed) and renames
it over the destination with :func:`os.replace`, which is atomic on one
filesystem. On any failure the temporary file is removed.

Temporary names start with ``.zsq-tmp-`` so a run can sweep the ones a killed
process left behind (:func:`sweep`). Torch-free: the device agent uses it too.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TMP_PREFIX = ".zsq-tmp-"


@contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A fresh temporary path beside ``dest``; when the block ends without error it replaces ``dest``.

    For writers that want a path (``np.savez``, ``torch.save``): they write to the
    yielded path. ``suffix`` keeps an extension some writers insist on (``.npz``).
    """
    dest = Path(dest)
    fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(dest: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically (flushed to disk before the rename)."""
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return dest


def write_via(dest: str | os.PathLike, writer: Callable[[BinaryIO], object]) -> Path:
    """Atomically write what ``writer(file)`` writes (``torch.save``, ``np.save``), serialised in memory first.

    Serialising to memory keeps a full disk an ordinary ``OSError`` from our own write: ``torch.save`` straight to
    a file masks ``ENOSPC`` with a ``RuntimeError`` from its zip writer.
    """
    buf = io.BytesIO()
    writer(buf)
    return write_bytes(dest, buf.getvalue())


def write_text(dest: str | os.PathLike, text: str) -> Path:
    return write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike, data: object, indent: int | None = 2) -> Path:
    return write_text(dest, json.dumps(data, indent=indent, default=str) + "\n")


def sweep(folder: str | os.PathLike, older_than_s: float = 0.0) -> list[Path]:
    """Remove temporary files and folders a killed writer left in ``folder`` (recursively); returns what went.

    Only names this module (or the exporters' staging folders, ``.<artifact>.*``
    made by :func:`tempfile.mkdtemp` with :data:`TMP_PREFIX`) create are touched.
    Call it only while holding the folder's run lock: another live writer's
    temporary file would otherwise be swept from under it.
    """
    import shutil

    folder = Path(folder)
    gone: list[Path] = []
    if not folder.is_dir():
        return gone
    now = time.time()
    for p in sorted(folder.rglob(f"{TMP_PREFIX}*"), key=lambda p: len(p.parts), reverse=True):
        try:
            if now - p.lstat().st_mtime < older_than_s:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            gone.append(p)
        except FileNotFoundError:
            continue
    return gone
