"""`wttm`: Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher Matching" (ICLR 2024, arXiv 2402.11148):
TTM with a sample-adaptive weight."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.losses import wttm
from kdlab.methods.base import register_method
from kdlab.methods.logit_base import LogitDistiller, LogitParams
from kdlab.typed_config import bounded


@dataclass
class WTTMParams(LogitParams):
    # τ = 1/γ of the teacher's power transform (the release's `l` = γ; l = 0.1 is τ = 10)
    temperature: float = bounded(10.0, gt=0)


@register_method("wttm", "WTTM: ce + β·mean(Σp_t^γ · KL(p_t^γ/Σp_t^γ ‖ softmax(s))), γ = 1/τ, τ=10")
class WeightedTTM(LogitDistiller):
    """ℓ = mean_b w_b·KL(p̃_t ‖ softmax(s)) with p̃_t = softmax(t/τ) and w_b = Σ_k p_t,k^γ (γ = 1/τ): TTM (`ttm`)
    with each sample weighted by how flat its transformed teacher is. β, the paper's per-pair weight, is kd_weight."""

    Params = WTTMParams
    term = "wttm"

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return wttm(student, teacher, self.params.temperature)
