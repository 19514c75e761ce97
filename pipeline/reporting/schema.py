"""The schema of ``report.json``: the file ``report.schema.json`` beside this module (JSON Schema, draft 2020-12).

``python -m pipeline.reporting.schema`` prints it; :func:`validate` checks a report against it with the
``jsonschema`` package and returns readable errors (an empty list: valid). The schema is a file, not code, so that
CI jobs and other tools validate ``report.json`` with their own validator; docs/report.md explains each field.

Top-level fields: ``schema_version`` (3), ``run_dir``, ``config``, ``model_card``, ``manifest`` (stage keys, hashes,
timings), ``qat`` (the QAT record, loss curve), ``artifacts`` (export index), ``check`` (fidelity, per-class agreement,
host latency with spread and noise, SQNR, gates and per-artifact status), ``devices`` (current device results,
status ``ok``/``mismatch``/``unchecked``), ``devices_stale``, ``devices_invalid``, ``speedups`` (with ``noisy``/``why``),
``gates`` (every rule, ``passed``, ``exit_status``) and ``exit_status``.

(The device side keeps its own small validator for ``zsq.bench/1`` results, :mod:`devices.results`: it runs on
boards with few packages.)
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

SCHEMA_FILE = "report.schema.json"


def schema_text() -> str:
    """The schema file as shipped with the package."""
    return files("pipeline.reporting").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


@cache
def _schema() -> dict:
    return json.loads(schema_text())


def __getattr__(name: str):  # REPORT_SCHEMA, read from the file when first asked for
    if name == "REPORT_SCHEMA":
        return _schema()
    raise AttributeError(name)


def _where(path) -> str:
    return "report" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def validate(report: object, schema: dict | None = None) -> list[str]:
    """Every error of ``report`` against the schema (default: report.schema.json), one line each: where, then what."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema or _schema())
    errors = sorted(validator.iter_errors(report), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{_where(e.absolute_path)}: {e.message}" for e in errors]


if __name__ == "__main__":
    print(schema_text(), end="")
