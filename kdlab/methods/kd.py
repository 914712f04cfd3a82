"""`kd`: Hinton et al. 2015, "Distilling the Knowledge in a Neural Network" (arXiv 1503.02531)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.losses import cross_entropy, kd
from kdlab.methods.base import Distiller, register_method


@dataclass
class KDParams:
    ce_weight: float = 0.1  # α_CE; the CRD-benchmark recipe: 0.1·CE + 0.9·KD
    kd_weight: float = 0.9
    temperature: float = 4.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        from kdlab.errors import ConfigError

        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")


@register_method("kd", "Hinton KD: ce_weight·CE + kd_weight·τ²·KL(t‖s) at temperature τ")
class KnowledgeDistillation(Distiller):
    """L = ce_weight·CE(s(x), y) + kd_weight·τ²·KL(softmax(t(x)/τ) ‖ softmax(s(x)/τ)).

    Defaults are the CRD CIFAR-100 recipe (METHODS.md A): 0.1, 0.9, τ = 4. With several teachers the KD term
    is the mean of the per-teacher terms."""

    Params = KDParams

    def forward_train(
        self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: KDParams = self.params
        with torch.no_grad():
            teacher_logits = [t(x) for t in self.teachers]
        logits = self.student(x)
        kd_term = torch.stack([kd(logits, tl, p.temperature) for tl in teacher_logits]).mean()
        return logits, {
            "ce": p.ce_weight * cross_entropy(logits, y, p.label_smoothing),
            "kd": p.kd_weight * kd_term,
        }
