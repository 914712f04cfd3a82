"""`dkd` and `dist`: logit-based methods beyond Hinton KD, composable with every view."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.errors import ConfigError
from kdlab.losses import cross_entropy, dist, dkd
from kdlab.methods.base import Distiller, EnsembleMode, ensemble_loss, register_method
from kdlab.views import TrainBatch


@dataclass
class DKDParams:
    ce_weight: float = 1.0
    alpha: float = 1.0  # TCKD weight
    beta: float = 8.0  # NCKD weight (CIFAR-100 recipe)
    temperature: float = 4.0
    warmup_epochs: float = 20.0  # the DKD loss ramps linearly from 0 over these epochs
    ensemble: EnsembleMode = "per_teacher"  # several teachers: mean of per-teacher losses, or of their logits

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")


@register_method("dkd", "Decoupled KD: ce + warm-up·(α·TCKD + β·NCKD), α=1 β=8 τ=4")
class DecoupledKD(Distiller):
    """DKD (Zhao et al., CVPR 2022, arXiv 2203.08679).

    L = ce_weight·CE(s(x), y) + min(epoch / warmup, 1)·[α·TCKD + β·NCKD](x) [+ the same on x' against y of its
    dominant source]. TCKD: KL of the binary (target, non-target) split; NCKD: KL among non-target classes;
    both × τ². CIFAR-100 recipe (mdistiller): CE 1, α 1, β 8, τ 4, warm-up 20 epochs."""

    Params = DKDParams

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: DKDParams = self.params
        ramp = min(batch.epoch / p.warmup_epochs, 1.0) if p.warmup_epochs > 0 else 1.0
        views = [batch.x] if batch.x_strong is None else [batch.x, batch.x_strong]
        per_teacher = self.teacher_logits(*views)
        logits = self.student(batch.x)
        terms = {"ce": p.ce_weight * cross_entropy(logits, batch.y)}
        terms["dkd"] = ramp * ensemble_loss(
            lambda s, t: dkd(s, t, batch.y, p.alpha, p.beta, p.temperature),
            logits,
            [t[0] for t in per_teacher],
            p.ensemble,
        )
        if batch.x_strong is not None:
            s2 = self.student(batch.x_strong)
            y2 = batch.y if batch.mix is None else strong_targets(batch)
            terms["dkd_strong"] = ramp * ensemble_loss(
                lambda s, t: dkd(s, t, y2, p.alpha, p.beta, p.temperature),
                s2,
                [t[1] for t in per_teacher],
                p.ensemble,
            )
        return logits, terms


def strong_targets(batch: TrainBatch) -> torch.Tensor:
    """The label of the larger part of each mixed image in x' (DKD needs one target class per sample)."""
    assert batch.mix is not None
    src, partner = batch.y[batch.mix.src], batch.y[batch.mix.partner]
    return torch.where(batch.mix.lam >= 0.5, src, partner)


@dataclass
class DISTParams:
    ce_weight: float = 1.0
    beta: float = 1.0  # inter-class relation
    gamma: float = 1.0  # intra-class relation
    temperature: float = 1.0
    ensemble: EnsembleMode = "per_teacher"  # several teachers: mean of per-teacher losses, or of their logits

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")


@register_method("dist", "DIST: ce + τ²·(β·inter + γ·intra) Pearson relations, β=γ=1, τ=1")
class DIST(Distiller):
    """DIST (Huang et al., NeurIPS 2022, arXiv 2205.10536): match inter-class (per-sample) and intra-class
    (per-class, across the batch) Pearson correlations of softmax(·/τ). L = CE + β·inter + γ·intra (·τ²);
    defaults are the paper's β = γ = 1, τ = 1. Applied to x and, teacher-labelled, to x'."""

    Params = DISTParams

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: DISTParams = self.params
        views = [batch.x] if batch.x_strong is None else [batch.x, batch.x_strong]
        per_teacher = self.teacher_logits(*views)
        logits = self.student(batch.x)

        def dist_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return dist(s, t, p.beta, p.gamma, p.temperature)

        terms = {
            "ce": p.ce_weight * cross_entropy(logits, batch.y),
            "dist": ensemble_loss(dist_loss, logits, [t[0] for t in per_teacher], p.ensemble),
        }
        if batch.x_strong is not None:
            s2 = self.student(batch.x_strong)
            terms["dist_strong"] = ensemble_loss(dist_loss, s2, [t[1] for t in per_teacher], p.ensemble)
        return logits, terms
