"""Range initialisation from synthetic data: observe activations, then pick each quantizer's range."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from pipeline.quant.prepare import quant_layers, quantizers


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor], act_init: str = "mse", weight_init: str = "mse") -> None:
    """Initialise weight scales from the weights and activation ranges from ``batches``.

    One float pass observes every activation quantizer at once (as ORT's and
    NNCF's PTQ do); each range is then chosen by ``act_init`` (``mse``: the
    clipping that minimises the quantization MSE, ``minmax``, ``percentile``).
    EMA-mode quantizers (the ``paper`` profile) start at the observed min/max.
    """
    model.eval()
    for layer in quant_layers(model):
        if layer.wq.symmetric:
            layer.wq.init_scale(layer.weight, weight_init)
    qs = quantizers(model)
    for q in qs:
        q.observing = True
    for x in batches:
        model(x)
    for q in qs:
        q.observing = False
        q.init_range("minmax" if q.mode == "ema" else act_init)
        q.enabled = True
