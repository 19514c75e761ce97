"""The target formats, by name: one line per format package.

A fourth format is a package ``exporters/<name>/`` whose ``__init__`` defines
``FORMAT`` (a :class:`~exporters.format.Format`), plus one line in :data:`PACKAGES`
(or one :func:`register` call for a format that lives outside this repository).
Its torch-free row (suffix, runtime) goes in :mod:`runtimes.formats` when a runtime
here can execute it.
"""

from __future__ import annotations

import difflib
import importlib

from exporters.errors import ExportError
from exporters.format import Format

PACKAGES: tuple[str, ...] = (
    "exporters.onnx",
    "exporters.openvino",
    "exporters.tflite",
)
ALL = "all"  # every registered format

_FORMATS: dict[str, Format] = {}
_ALIASES: dict[str, str] = {}
_loaded = False


def register(fmt: Format) -> Format:
    """Add a format (its name and aliases must be new); the built-in ones are always registered first."""
    _load()
    return _add(fmt)


def _add(fmt: Format) -> Format:
    for key in (fmt.name, *fmt.aliases):
        if key in _FORMATS or key in _ALIASES or key == ALL:
            raise ValueError(f"format name {key!r} is already taken")
    _FORMATS[fmt.name] = fmt
    _ALIASES.update({a: fmt.name for a in fmt.aliases})
    return fmt


def unregister(name: str) -> None:
    """Remove a format again (tests that register a throwaway one)."""
    fmt = _FORMATS.pop(name)
    for a in fmt.aliases:
        _ALIASES.pop(a, None)


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for package in PACKAGES:
            _add(importlib.import_module(package).FORMAT)


def names() -> tuple[str, ...]:
    """Every format's name, in registration order (the order the export stage writes them)."""
    _load()
    return tuple(_FORMATS)


def get(name: str) -> Format:
    """The format called ``name`` (or one of its aliases); unknown names fail with the closest valid one."""
    _load()
    key = _ALIASES.get(name, name)
    if key not in _FORMATS:
        close = difflib.get_close_matches(str(name), [*_FORMATS, *_ALIASES], n=1)
        raise ExportError(f"unknown target {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                          + f"; available: {', '.join(_FORMATS)} or {ALL}")
    return _FORMATS[key]


def resolve(targets: list[str] | tuple[str, ...] | str) -> list[str]:
    """Canonical format names for what a user wrote: ``all``, aliases, a comma list; order kept.

    The same word twice (``onnx,onnx``) is refused: it is never needed, and is most often a slip for another
    target (``onnx,openvino``), which a silent merge would hide until the run is over. One format reached two
    ways (``ort,onnx``, ``all,tflite``) is merged: each spelling is deliberate and the meaning is clear.
    """
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    targets = [t.strip() if isinstance(t, str) else t for t in targets]
    targets = [t for t in targets if t]  # "onnx," leaves an empty item: nothing was meant by it
    if not targets:
        raise ExportError(f"no target given; available: {', '.join(names())} or {ALL}")
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise ExportError(f"target {twice[0]!r} is listed twice; give each target once, e.g. --target onnx,openvino "
                          f"(available: {', '.join(names())} or {ALL})")
    out: list[str] = []
    for t in targets:
        for name in (names() if t == ALL else (get(t).name,)):
            if name not in out:
                out.append(name)
    return out
