"""`ce`: plain cross-entropy training (teachers from scratch, student baselines)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.losses import cross_entropy
from kdlab.methods.base import Distiller, register_method


@dataclass
class CEParams:
    ce_weight: float = 1.0
    label_smoothing: float = 0.0


@register_method("ce", "cross-entropy on the labels, no teacher")
class CrossEntropy(Distiller):
    """L = ce_weight · CE(s(x), y) (with optional label smoothing)."""

    Params = CEParams
    needs_teacher = False

    def forward_train(
        self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: CEParams = self.params
        logits = self.student(x)
        return logits, {"ce": p.ce_weight * cross_entropy(logits, y, p.label_smoothing)}
