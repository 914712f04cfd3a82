"""`kd`: Hinton et al. 2015, "Distilling the Knowledge in a Neural Network" (arXiv 1503.02531), with
teacher-labelled strong views (Wang et al., "What makes a good data augmentation in knowledge distillation",
arXiv 2012.02909)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from kdlab.errors import ConfigError
from kdlab.losses import cross_entropy, kd, logit_mse, logit_standardize
from kdlab.methods.base import (
    Distiller,
    EnsembleMode,
    ensemble_loss,
    mixed_cross_entropy,
    register_method,
)
from kdlab.views import TrainBatch


@dataclass
class KDParams:
    ce_weight: float = 0.1  # the CRD-benchmark recipe: 0.1·CE + 0.9·KD
    kd_weight: float = 0.9
    temperature: float = 4.0
    label_smoothing: float = 0.0
    strong_target: Literal["teacher", "labels"] = "teacher"  # x' labelled by the teacher (TL) or mixed labels
    strong_weight: float | None = None  # default: kd_weight for teacher targets, 1.0 for mixed labels
    logit_standardize: bool = False  # LS-KD (Sun et al., CVPR 2024): z-score both logits before the KL
    ensemble: EnsembleMode = "per_teacher"  # several teachers: mean of per-teacher KD, or KD to the mean logits
    mse_weight: float = 0.0  # paper C's control: + mse_weight·mean (s − t)² on x (and x'), direct logit matching

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")


@register_method("kd", "Hinton KD: ce_weight·CE + kd_weight·τ²·KL(t‖s); teacher-labelled strong views")
class KnowledgeDistillation(Distiller):
    """L = ce_weight·CE(s(x), y) + kd_weight·τ²·KL(softmax(t(x)/τ) ‖ softmax(s(x)/τ))
         [+ strong_weight·τ²·KL(t(x') ‖ s(x'))  with a strong view x' (teacher-labelled, TL), or
          + strong_weight·CE_mixed(s(x'), y)     with method.strong_target=labels (the CutMix baseline)].

    Defaults are the CRD CIFAR-100 recipe (METHODS.md A): 0.1, 0.9, τ = 4; with TL the strong term has the
    KD weight, so L = 0.1·CE + 0.9·[KL(x) + KL(x')]. `logit_standardize=true` gives LS-KD (z-scored logits).
    The teacher runs once over x and x' together; with CutMixPick it reuses the logits computed while scoring.
    Several teachers (`teachers: [...]`): `ensemble=per_teacher` averages the per-teacher KD terms (paper C),
    `ensemble=mean_logits` distils the teachers' averaged logits. `mse_weight` > 0 adds direct logit matching
    (paper C's "push harder on the logits" control), against the same ensemble target."""

    Params = KDParams

    def _kd(self, logits: torch.Tensor, teacher_logits: list[torch.Tensor]) -> torch.Tensor:
        T = self.params.temperature
        if self.params.logit_standardize:
            logits = logit_standardize(logits)
            teacher_logits = [logit_standardize(t) for t in teacher_logits]
        return ensemble_loss(lambda s, t: kd(s, t, T), logits, teacher_logits, self.params.ensemble)

    def _mse(self, logits: torch.Tensor, teacher_logits: list[torch.Tensor]) -> torch.Tensor:
        return self.params.mse_weight * ensemble_loss(logit_mse, logits, teacher_logits, self.params.ensemble)

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: KDParams = self.params
        need_teacher_strong = batch.x_strong is not None and p.strong_target == "teacher"
        if need_teacher_strong and batch.teacher_strong is None:
            assert batch.x_strong is not None
            per_teacher = self.teacher_logits(batch.x, batch.x_strong)
            t_x = [v[0] for v in per_teacher]
            t_strong: list[torch.Tensor] | None = [v[1] for v in per_teacher]
        else:
            t_x, t_strong = [v[0] for v in self.teacher_logits(batch.x)], batch.teacher_strong
        logits = self.student(batch.x)
        terms = {
            "ce": p.ce_weight * cross_entropy(logits, batch.y, p.label_smoothing),
            "kd": p.kd_weight * self._kd(logits, t_x),
        }
        if p.mse_weight:
            terms["logit_mse"] = self._mse(logits, t_x)
        if batch.x_strong is not None:
            s_strong = self.student(batch.x_strong)
            if p.strong_target == "teacher":
                assert t_strong is not None
                w = p.kd_weight if p.strong_weight is None else p.strong_weight
                terms["kd_strong"] = w * self._kd(s_strong, t_strong)
                if p.mse_weight:
                    terms["logit_mse_strong"] = self._mse(s_strong, t_strong)
            else:
                w = 1.0 if p.strong_weight is None else p.strong_weight
                terms["ce_strong"] = w * mixed_cross_entropy(s_strong, batch.y, batch.mix)
        return logits, terms
