"""`ttm`: Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher Matching" (ICLR 2024, arXiv 2402.11148)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdlab.methods.base import register_method
from kdlab.methods.logit_base import LogitDistiller, LogitParams
from kdlab.typed_config import bounded


@dataclass
class TTMParams(LogitParams):
    # τ = 1/γ: the power transform p_t^γ / Σ p_t^γ is softmax(t/τ); the released code's l = γ = 0.1 is τ = 10
    temperature: float = bounded(10.0, gt=0)


@register_method("ttm", "TTM: ce + β·KL(softmax(t/τ) ‖ softmax(s)): tempered teacher, untempered student, τ=10")
class TransformedTeacherMatching(LogitDistiller):
    """ℓ = mean over the batch of KL(p̃_t ‖ softmax(s)), p̃_t = p_t^γ / Σ_k p_t,k^γ = softmax(t/τ) with γ = 1/τ:
    KD with the temperature dropped from the student side (no τ²). The paper's β is kd_weight (tuned per pair)."""

    Params = TTMParams
    term = "ttm"

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_pt = F.log_softmax(teacher.float() / self.params.temperature, 1)
        log_ps = F.log_softmax(student.float(), 1)
        return (log_pt.exp() * (log_pt - log_ps)).sum(1).mean()
