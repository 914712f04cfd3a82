"""`dist`: Huang et al., "Knowledge Distillation from A Stronger Teacher" (DIST, NeurIPS 2022, arXiv 2205.10536)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.losses import dist
from kdlab.methods.base import register_method
from kdlab.methods.logit_base import LogitDistiller, LogitParams


@dataclass
class DISTParams(LogitParams):
    beta: float = 1.0  # inter-class relation
    gamma: float = 1.0  # intra-class relation
    temperature: float = 1.0  # its range (> 0) is LogitParams'


@register_method("dist", "DIST: ce + τ²·(β·inter + γ·intra) Pearson relations, β=γ=1, τ=1")
class DIST(LogitDistiller):
    """ℓ = τ²·(β·inter + γ·intra): 1 − Pearson correlation of softmax(·/τ) per sample (inter-class) and per
    class across the batch (intra-class). Defaults are the paper's β = γ = 1, τ = 1."""

    Params = DISTParams
    term = "dist"

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        p: DISTParams = self.params
        return dist(student, teacher, p.beta, p.gamma, p.temperature)
