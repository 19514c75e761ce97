"""The documented schema of ``report.json`` (JSON Schema, draft 2020-12) and a small validator for it.

``python -m pipeline.reporting.schema`` prints the schema. Top-level fields:

- ``schema_version`` (int): 2 since device results and per-layer SQNR were added.
- ``run_dir``, ``config`` (the resolved ``{_type, _version, _data}`` config), ``model_card``, ``manifest``
  (stage keys, output hashes, versions, seeds), ``qat`` (the QAT stage's metrics).
- ``artifacts``: one entry per exported file (path, target, precision, size, integer coverage).
- ``check``: the check stage: ``holdout`` (fake-quant vs FP), ``artifacts`` (name → agreement with FP and
  fake-quant, KL, host latency), ``layers`` (per-layer SQNR in network order), ``eval_data`` (with real data).
- ``devices``: one entry per ``pipeline bench`` result of this run (schema ``zsq.bench/1``, samples left in the
  result file named by ``result_file``): device, artifact, settings, environment, runs (per thread count:
  cold start, steady-state summary of the trials, peak RSS), reference (agreement on the device), flags, status.
  Only valid results (:data:`devices.results.RESULT_SCHEMA`) of the artifacts of the current export, byte for byte.
- ``devices_stale``: device results of an artifact the export no longer has or has since changed (``result_file``,
  ``device``, ``artifact``, ``reason``); their figures are in no other field.
- ``devices_invalid``: result files that are unreadable, not JSON or not ``zsq.bench/1`` (``result_file``, ``reason``).
- ``speedups``: integer-vs-FP32 p50 ratio per device, runtime and thread count.
"""

from __future__ import annotations

import json

_NUM = {"type": ["number", "null"]}
_STATS = {"type": "object", "properties": {k: _NUM for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "spread")}}

REPORT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "zsq-edge/report.schema.json",
    "title": "zsq-edge report.json",
    "type": "object",
    "required": ["schema_version", "run_dir", "config", "artifacts", "check", "devices", "speedups"],
    "properties": {
        "schema_version": {"type": "integer", "description": "bumped when a field changes meaning"},
        "run_dir": {"type": "string"},
        "config": {"type": "object", "description": "resolved RunConfig as {_type, _version, _data}"},
        "model_card": {"type": ["object", "null"]},
        "manifest": {"type": "object"},
        "qat": {"type": "object"},
        "artifacts": {"type": "array", "items": {"type": "object", "required": ["path", "precision", "size_bytes"],
                                                   "properties": {"path": {"type": "string"}, "precision": {"type": "string"},
                                                                  "size_bytes": {"type": "integer"}, "target": {"type": "string"}}}},
        "check": {"type": "object", "properties": {
            "holdout": {"type": "object"},
            "artifacts": {"type": "object", "additionalProperties": {"type": "object", "required": ["runtime", "precision", "vs_fp"]}},
            "layers": {"type": "array", "items": {"type": "object", "required": ["name", "sqnr_db"],
                                                  "properties": {"name": {"type": "string"}, "sqnr_db": _NUM, "kind": {"type": "string"}}}},
        }},
        "devices": {"type": "array", "items": {"type": "object", "required": ["schema", "device", "artifact", "runs", "flags", "status"],
                                                 "properties": {
                                                     "schema": {"type": "string"}, "status": {"type": "string", "enum": ["ok", "mismatch"]},
                                                     "device": {"type": "object", "required": ["name"]},
                                                     "artifact": {"type": "object", "required": ["name", "size_bytes", "runtime"]},
                                                     "runs": {"type": "array", "items": {"type": "object", "required": ["threads", "steady", "cold_start"],
                                                                                         "properties": {"threads": {"type": "integer"}, "steady": _STATS}}},
                                                     "reference": {"type": ["object", "null"]},
                                                     "flags": {"type": "array", "items": {"type": "string"}},
                                                     "environment": {"type": "object"},
                                                     "result_file": {"type": "string"}}}},
        "devices_stale": {"type": "array", "items": {"type": "object", "required": ["result_file", "device", "artifact", "reason"],
                                                       "properties": {k: {"type": "string"}
                                                                      for k in ("result_file", "device", "artifact", "reason")}}},
        "devices_invalid": {"type": "array", "items": {"type": "object", "required": ["result_file", "reason"],
                                                         "properties": {k: {"type": "string"} for k in ("result_file", "reason")}}},
        "speedups": {"type": "array", "items": {"type": "object", "required": ["device", "runtime", "threads", "speedup"],
                                                  "properties": {"speedup": {"type": "number"}, "threads": {"type": "integer"}}}},
    },
}


def validate(data: object, schema: dict = REPORT_SCHEMA, where: str = "report") -> list[str]:
    """Errors of ``data`` against the subset of JSON Schema used here (type, required, properties, items, enum, minItems, minimum)."""
    from devices.results import check

    return check(data, schema, where)


if __name__ == "__main__":
    print(json.dumps(REPORT_SCHEMA, indent=2))
