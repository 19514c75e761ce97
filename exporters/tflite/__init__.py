"""LiteRT / TFLite exporter: full-integer .tflite keeping the QAT scales (or PT2E-calibrated), FP32 twin, integer gate."""

from exporters.tflite.export import (PTQ_CALIBRATED, QAT_SCALES, TfliteOptions, check_integer_tflite, export_fp32, export_int8,
                                     export_ptq)

__all__ = ["PTQ_CALIBRATED", "QAT_SCALES", "TfliteOptions", "check_integer_tflite", "export_fp32", "export_int8", "export_ptq"]
