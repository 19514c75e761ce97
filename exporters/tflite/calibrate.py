"""Fallback: post-training calibration of the FP32 teacher for LiteRT (``export.tflite_calibrate``).

The QAT-scale route (:mod:`exporters.tflite.qdq`) is the default and keeps what
training learned. This mode ignores the student: the teacher goes through
litert-torch's own PT2E quantizer (``torch.export`` → ``prepare_pt2e`` →
observers fed the held-out synthetic images → ``convert_pt2e``), per-channel
symmetric int8 weights and per-tensor int8 activations, which the converter
lowers in the same STATIC q/dq mode. It needs no package beyond litert-torch
(docs/conversion.md §2.4), so it is the way out when the student cannot
be rewritten, or to compare QAT scales against plain calibration.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from exporters.errors import ExportError


def pt2e_quantizer():
    """litert-torch's PT2E quantizer, static per-channel int8: the config that also switches the converter to STATIC q/dq."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    return PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))


@torch.no_grad()
def calibrate_pt2e(teacher: nn.Module, images: np.ndarray) -> nn.Module:
    """The teacher with int8 q/dq ops whose ranges come from ``images`` (N×C×H×W float, raw pixels)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if images is None or len(images) == 0:
        raise ExportError("export.tflite_calibrate needs calibration images: run the synth stage first")
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    try:
        exported = torch.export.export(teacher.eval(), (x[:1],)).module()
        prepared = prepare_pt2e(exported, pt2e_quantizer())
        for i in range(len(x)):  # the exported graph is specialised to batch 1
            prepared(x[i : i + 1])
        quantized = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
        return allow_exported_model_train_eval(quantized)  # plain .eval() on an exported module raises otherwise
    except Exception as exc:  # noqa: BLE001  (torch.export and PT2E raise many types)
        raise ExportError(f"post-training calibration for tflite failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}") from exc
