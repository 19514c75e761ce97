"""The stages of ``pipeline run``, in order; each is also a subcommand."""

from __future__ import annotations

from pipeline.runner import Stage
from pipeline.stages import check, export, qat, report, synth

STAGES = [
    Stage("synth", ("model", "synthesis"), synth.weights_inputs, synth.outputs, synth.run, extra=synth.key_extra, ranks=True),
    Stage("qat", ("qat",), qat.inputs, qat.outputs, qat.run, extra=qat.key_extra, ranks=True),
    Stage("export", ("export", "qat"), export.inputs, export.outputs, export.run),
    Stage("check", ("check", "qat"), check.inputs, check.outputs, check.run, extra=check.key_extra),
    Stage("report", (), lambda ctx: [], report.outputs, report.run, always=True),
]
STAGE_NAMES = [s.name for s in STAGES]
