"""`kd`: Hinton et al., "Distilling the Knowledge in a Neural Network" (arXiv 1503.02531), with
teacher-labelled strong views (Wang et al., "Knowledge Distillation Thrives on Data Augmentation",
arXiv 2012.02909)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.losses import kd, logit_mse
from kdlab.methods.base import ensemble_loss, register_method
from kdlab.methods.logit_base import LogitDistiller, LogitParams


@dataclass
class KDParams(LogitParams):
    ce_weight: float = 0.1  # the CRD-benchmark recipe: 0.1·CE + 0.9·KD
    kd_weight: float = 0.9
    mse_weight: float = 0.0  # + mse_weight·mean (s − t)² on x (and x'): direct logit matching


@register_method("kd", "Hinton KD: ce_weight·CE + kd_weight·τ²·KL(t‖s); teacher-labelled strong views")
class KnowledgeDistillation(LogitDistiller):
    """ℓ = τ²·KL(softmax(t/τ) ‖ softmax(s/τ)) in the logit-method recipe (methods/logit_base.py).

    Defaults are the CRD CIFAR-100 recipe: 0.1·CE + 0.9·KD, τ = 4; with a teacher-labelled x' (Wang et al.'s
    TL views) the x' term has the KD weight, so L = 0.1·CE + 0.9·[KL(x) + KL(x')]. `logit_standardize=true`
    gives LS-KD (Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024: z-scored logits).
    `mse_weight` > 0 adds direct logit matching against the same (ensemble) target — the "push harder on the
    logits" control of Guo et al., "Why does knowledge distillation work?" (arXiv 2405.00739)."""

    Params = KDParams

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return kd(student, teacher, self.params.temperature)

    def view_terms(
        self,
        student: torch.Tensor,
        teachers: list[torch.Tensor],
        labels: torch.Tensor,
        weight: float | torch.Tensor,
        suffix: str,
    ) -> dict[str, torch.Tensor]:
        p: KDParams = self.params
        terms = super().view_terms(student, teachers, labels, weight, suffix)
        if p.mse_weight:
            terms["logit_mse" + suffix] = p.mse_weight * ensemble_loss(logit_mse, student, teachers, p.ensemble)
        return terms
