"""`ce`: plain cross-entropy training (teachers from scratch, student baselines; with a strong view, the
classic "CE on mixed labels" augmentation baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.losses import cross_entropy
from kdlab.methods.base import Distiller, mixed_cross_entropy, register_method
from kdlab.views import TrainBatch


@dataclass
class CEParams:
    ce_weight: float = 1.0
    strong_weight: float = 1.0  # weight of CE on the strong view x' (mixed labels for mixup/CutMix)
    label_smoothing: float = 0.0


@register_method("ce", "cross-entropy on the labels, no teacher (mixed-label CE on a strong view)")
class CrossEntropy(Distiller):
    """L = ce_weight·CE(s(x), y) [+ strong_weight·CE_mixed(s(x'), y) with a strong view]."""

    Params = CEParams
    needs_teacher = False

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: CEParams = self.params
        logits = self.student(batch.x)
        terms = {"ce": p.ce_weight * cross_entropy(logits, batch.y, p.label_smoothing)}
        if batch.x_strong is not None:
            terms["ce_strong"] = p.strong_weight * mixed_cross_entropy(self.student(batch.x_strong), batch.y, batch.mix)
        return logits, terms
