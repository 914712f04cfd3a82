"""`dkd`: Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022, arXiv 2203.08679)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.losses import dkd
from kdlab.methods.base import linear_warmup, register_method
from kdlab.methods.logit_base import LogitDistiller, LogitParams
from kdlab.views import TrainBatch


@dataclass
class DKDParams(LogitParams):
    alpha: float = 1.0  # TCKD weight
    beta: float = 8.0  # NCKD weight (CIFAR-100 recipe)
    warmup_epochs: float = 20.0  # the DKD terms ramp linearly from 0 over these epochs


@register_method("dkd", "Decoupled KD: ce + warm-up·(α·TCKD + β·NCKD), α=1 β=8 τ=4")
class DecoupledKD(LogitDistiller):
    """ℓ = α·TCKD + β·NCKD (both × τ²), scaled by min(epoch / warmup, 1). TCKD: KL of the binary (target,
    non-target) split; NCKD: KL among non-target classes; a mixed x' uses the label of its larger part.
    CIFAR-100 recipe (mdistiller): CE 1, α 1, β 8, τ 4, warm-up 20 epochs."""

    Params = DKDParams
    term = "dkd"

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        p: DKDParams = self.params
        return dkd(student, teacher, labels, p.alpha, p.beta, p.temperature)

    def scale(self, batch: TrainBatch) -> float | torch.Tensor:
        return linear_warmup(batch.epoch, self.params.warmup_epochs)
