"""ONNX exporter: FP32 and QDQ (uint8 activations, int8 per-channel weights) for ONNX Runtime."""

from exporters.onnx.export import check_integer, export_fp32, export_qdq

__all__ = ["check_integer", "export_fp32", "export_qdq"]
