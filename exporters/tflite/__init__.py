"""LiteRT / TFLite: full-integer .tflite keeping the QAT scales (or PT2E-calibrated), FP32 twin, integer gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.artifact import Artifact, IntegerCoverage
from exporters.errors import ExportError
from exporters.format import ExportInputs, Format
from exporters.spec import DeploymentSpec
from exporters.tflite.export import (PTQ_CALIBRATED, QAT_SCALES, TfliteOptions, check_integer_tflite, export_fp32, export_int8,
                                     export_ptq)
from runtimes.formats import BY_NAME


class TfliteFormat(Format):
    info = BY_NAME["tflite"]
    aliases = ("litert",)
    Options = TfliteOptions

    def precision(self, spec: DeploymentSpec, options: TfliteOptions) -> str:
        return "w8a8" if options.calibrate else spec.precision  # PT2E calibration deploys w8a8 whatever QAT trained

    def export_float(self, inputs: ExportInputs, path: Path, options: TfliteOptions) -> Artifact:
        return export_fp32(inputs.float_model, inputs.contract, path)

    def export_integer(self, inputs: ExportInputs, path: Path, options: TfliteOptions) -> Artifact:
        if options.calibrate and inputs.spec.float_layers:
            raise ExportError(f"cannot write {path.name}: export.tflite_calibrate quantizes the whole float model with PT2E and "
                              f"cannot keep the float layers {', '.join(inputs.spec.float_layers)}; drop --tflite-calibrate (the QAT "
                              "scales keep them float) or qat.float_layers")
        if options.calibrate:
            return export_ptq(inputs.float_model, inputs.contract, path, inputs.sample, options)
        return export_int8(inputs.spec, path, options)

    def training_notes(self, spec: DeploymentSpec, options: TfliteOptions, artifact: Artifact) -> dict:
        notes = spec.training_notes()
        if options.calibrate:  # PT2E picked its own grids: full-range int8 weights and its own output scale
            notes.update(output_scale=artifact.outputs[0]["scale"], weight_grid="PT2E-calibrated, full range (±127)",
                         overflow_safe=False, weight_qmax=127)
        return notes

    def integer_gate(self, artifact: Artifact, sample: np.ndarray, min_share: float, options: TfliteOptions) -> IntegerCoverage:
        return check_integer_tflite(artifact, min_share)


FORMAT = TfliteFormat()

__all__ = ["FORMAT", "PTQ_CALIBRATED", "QAT_SCALES", "TfliteOptions", "check_integer_tflite", "export_fp32", "export_int8", "export_ptq"]
