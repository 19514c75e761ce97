"""Device results (schema ``zsq.bench/1``): checked when read back, matched to the artifact they measured, never lost.

A result is minutes of measurement on a device that may be gone tomorrow, so:

- :func:`save` writes it atomically and, when that fails (disk full, folder gone), keeps it in a
  temporary file and says where (:func:`keep`); :func:`check_writable` lets callers fail before
  measuring instead;
- :func:`read` checks a result against :data:`RESULT_SCHEMA` (what :mod:`devices.protocol` and the
  adb ``benchmark_model`` path write), so one malformed file is reported and skipped instead of
  crashing every reader;
- :func:`stale_reason` tells whether a result still describes the artifact in the run folder (by
  sha256 of every file of the artifact), so a report never folds an old artifact's figures into
  the current rows.

Torch-free and pipeline-free: the agent, the hosts' targets and the report all use it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from devices.errors import DeviceError, HostFileError
from runtimes import atomic
from runtimes.formats import artifact_files

SCHEMA = "zsq.bench/1"
# a result's status: the reference check passed, failed, or there was no reference to check against (devices/protocol.py)
STATUSES = ("ok", "mismatch", "unchecked")
# the agent's exit status when it measured but could not write --json_stats: the result JSON is on its stdout instead
RESULT_ON_STDOUT = 3

_NUM = {"type": ["number", "null"]}
_STEADY = {"type": "object", "required": ["spread"],
           "properties": {**{k: _NUM for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms")},
                          "spread": {"type": "number"}, "n": {"type": ["integer", "null"]}}}
_TRIAL = {"type": "object", "properties": {"samples_ms": {"type": "array", "items": {"type": "number"}}}}
# per-op latency from the runtime's own profiler (runtimes/profiling.py); absent in results made before it, null when
# --enable_op_profiling false; an optional field, so the schema name stays zsq.bench/1
_OP = {"type": "object", "required": ["name", "type", "ms", "share"],
       "properties": {"name": {"type": "string"}, "type": {"type": "string"}, "ms": {"type": "number"}, "share": {"type": "number"},
                      "kernel": {"type": ["string", "null"]}, "precision": {"type": ["string", "null"]}}}
_OP_PROFILE = {"type": ["object", "null"], "required": ["ops"],
               "properties": {"runtime": {"type": ["string", "null"]}, "source": {"type": "string"}, "runs": {"type": "integer"},
                              "total_ms": {"type": "number"}, "ops": {"type": "array", "items": _OP},
                              "unavailable": {"type": ["string", "null"]}}}
_RUN = {"type": "object", "required": ["threads", "steady", "cold_start"],
        "properties": {"threads": {"type": "integer", "minimum": 1}, "steady": _STEADY, "cold_start": {"type": "object"},
                       "trials": {"type": "array", "items": _TRIAL}, "rss_init_kb": {"type": ["integer", "null"]},
                       "rss_peak_kb": {"type": ["integer", "null"]}}}

RESULT_SCHEMA: dict = {
    "title": "zsq-edge device result (one artifact on one device)",
    "type": "object",
    "required": ["schema", "device", "artifact", "runs", "flags", "status"],
    "properties": {
        "schema": {"type": "string", "enum": [SCHEMA]},
        "device": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "url": {"type": "string"}}},
        "artifact": {"type": "object", "required": ["name", "runtime", "sha256"],
                     "properties": {"name": {"type": "string"}, "runtime": {"type": ["string", "null"]}, "sha256": {"type": "string"},
                                    "files": {"type": "array", "items": {"type": "string"}}, "size_bytes": {"type": "integer"},
                                    "files_sha256": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "runs": {"type": "array", "minItems": 1, "items": _RUN},
        "reference": {"type": ["object", "null"],
                      "properties": {"top1_agreement": _NUM, "max_abs_diff_lsb": _NUM, "status": {"type": "string"}}},
        "reference_kind": {"type": ["string", "null"]},
        "flags": {"type": "array", "items": {"type": "string"}},
        "status": {"type": "string", "enum": list(STATUSES)},
        "latency_source": {"type": "string"},
        "environment": {"type": "object"},
        "op_profile": _OP_PROFILE,
    },
}

_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def check(data: object, schema: dict, where: str) -> list[str]:
    """Errors of ``data`` against the subset of JSON Schema used here (type, enum, required, properties,
    additionalProperties, items, minItems, minimum); ``where`` names the value in each error."""
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(isinstance(data, _TYPES[t]) and not (t in ("integer", "number") and isinstance(data, bool)) for t in names):
            return [f"{where}: expected {'/'.join(names)}, got {type(data).__name__}"]
    errors: list[str] = []
    if "enum" in schema and data not in schema["enum"]:
        errors.append(f"{where}: {data!r} not one of {schema['enum']}")
    if "minimum" in schema and isinstance(data, (int, float)) and data < schema["minimum"]:
        errors.append(f"{where}: {data!r} is below {schema['minimum']}")
    if isinstance(data, dict):
        errors += [f"{where}: missing {key!r}" for key in schema.get("required", []) if key not in data]
        for key, sub in schema.get("properties", {}).items():
            if key in data:
                errors += check(data[key], sub, f"{where}.{key}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in data.items():
                if key not in schema.get("properties", {}):
                    errors += check(value, extra, f"{where}.{key}")
    if isinstance(data, list):
        if len(data) < schema.get("minItems", 0):
            errors.append(f"{where}: {len(data)} item(s), at least {schema['minItems']} needed")
        if "items" in schema:
            for i, item in enumerate(data):
                errors += check(item, schema["items"], f"{where}[{i}]")
    return errors


def validate(result: object) -> list[str]:
    """Errors of a device result: the schema, and a latency figure in every run (p50, or the mean where only that was kept)."""
    errors = check(result, RESULT_SCHEMA, "result")
    if errors:
        return errors
    for i, run in enumerate(result["runs"]):  # type: ignore[index]
        steady = run["steady"]
        if not any(isinstance(steady.get(k), (int, float)) and not isinstance(steady.get(k), bool) for k in ("p50_ms", "mean_ms")):
            errors.append(f"result.runs[{i}].steady: neither p50_ms nor mean_ms is a number")
    return errors


class InvalidResult(DeviceError):
    """A result file that cannot be used: unreadable, not JSON, or not following the schema (the message says which)."""


def read(path: Path) -> dict:
    """A result file, checked; :class:`InvalidResult` with the reason otherwise."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InvalidResult(f"unreadable ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidResult(f"not JSON ({getattr(exc, 'msg', exc)} at line {getattr(exc, 'lineno', '?')})") from None
    errors = validate(data)
    if errors:
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        raise InvalidResult("; ".join(errors[:3]) + more)
    return data


def load_folder(folder: Path) -> tuple[list[tuple[Path, dict]], list[tuple[Path, str]]]:
    """The results in ``folder`` (``*.json``): (path, result) of the valid ones, (path, reason) of the others."""
    good: list[tuple[Path, dict]] = []
    bad: list[tuple[Path, str]] = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            good.append((path, read(path)))
        except InvalidResult as exc:
            bad.append((path, str(exc)))
    return good, bad


# -- which artifact a result measured -------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_digests(artifact: Path) -> dict[str, str]:
    """sha256 of every file of an artifact (an OpenVINO ``.xml`` with its ``.bin``), by file name."""
    return {f.name: sha256(f) for f in artifact_files(Path(artifact))}


def stale_reason(result: dict, artifact: Path | None, cache: dict[Path, dict[str, str]] | None = None) -> str | None:
    """Why ``result`` does not describe ``artifact`` (the run's current file of that name; None: the export has none), or None.

    Compares every file's sha256 where the result recorded them (``files_sha256``), else the main file's.
    """
    name = result["artifact"]["name"]
    if artifact is None:
        return f"{name} is not an artifact of the current export (export.json)"
    if not Path(artifact).exists():
        return f"{name} is no longer in the run folder"
    cache = {} if cache is None else cache
    if artifact not in cache:
        cache[artifact] = artifact_digests(artifact)
    now = cache[artifact]
    then = result["artifact"].get("files_sha256") or {name: result["artifact"]["sha256"]}
    for file, digest in sorted(then.items()):
        if now.get(file) != digest:
            current = now.get(file)
            return (f"{name} changed since it was benched ({file}: sha256 {digest[:12]} then, "
                    + (f"{current[:12]} now)" if current else "gone now)"))
    return None


# -- writing results without losing them -------------------------------------------------------------------------------

def _why(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"it is not writable by uid {os.getuid()}"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)


def check_writable(folder: Path) -> str | None:
    """Why nothing can be written into ``folder`` (created if missing), or None: probed with a real temporary file."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{atomic.TMP_PREFIX}probe.", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return _why(exc)
    return None


def keep(text: str, name: str) -> Path | None:
    """Put ``text`` (a result that could not go where it belongs) in a fresh file in the temp folder; its path, or None."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "result"
    try:
        fd, path = tempfile.mkstemp(prefix=f"zsq-result-{stem}.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return Path(path)
    except OSError:
        return None


def dumps(result: dict) -> str:
    return json.dumps(result, indent=1, default=str) + "\n"


def save(path: Path, result: dict) -> Path:
    """Write ``result`` to ``path`` atomically; on failure keep it elsewhere and raise a HostFileError that says where."""
    path = Path(path)
    text = dumps(result)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, text)
        return path
    except OSError as exc:
        why = _why(exc)
    kept = keep(text, path.name)
    if kept is None:  # not even the temp folder: the terminal is the last place left
        sys.stdout.write(text)
        sys.stdout.flush()
        where = "stdout (above)"
    else:
        where = str(kept)
    raise HostFileError(f"could not write the device result {path} ({why}); the measurement is kept at {where}: "
                      f"move it to {path} when there is room, then run pipeline report")
