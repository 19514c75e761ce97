"""Teacher → student losses for QAT.

The KD reduction is ``batchmean`` on purpose: GDFQ's ``nn.KLDivLoss()`` default
(element-wise mean) is the same loss divided by the number of classes, which
silently changes the effective learning rate (methods.md §6 item 6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch (not over classes)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1), reduction="batchmean", log_target=True) * t * t
