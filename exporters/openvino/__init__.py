"""OpenVINO exporter: IR (.xml + .bin) converted from the QDQ / FP32 ONNX, checked for int8 execution on the CPU plugin."""

from exporters.openvino.export import check_integer_openvino, export_ir, ir_files, openvino_coverage

__all__ = ["check_integer_openvino", "export_ir", "ir_files", "openvino_coverage"]
