"""What every logit method shares: its parameters and the x / x' plumbing. A logit method writes only
`loss(student_logits, teacher_logits, labels)`; this base runs the teachers (reusing logits a view already
computed), applies the loss to x and to a teacher-labelled x', averages over an ensemble, and adds CE.

    L = ce_weight·CE(s(x), y) + scale·kd_weight·ℓ(s(x), t(x), y)
        [+ scale·strong_weight·ℓ(s(x'), t(x'), y')   x' labelled by the teacher (strong_target=teacher), or
         + strong_weight·CE_mixed(s(x'), y)          x' labelled by its mixed labels (strong_target=labels)]

`strong_weight` — the weight of the x' term, the same name in every method — defaults to kd_weight for
teacher targets and 1.0 for mixed labels. y' is the label of the larger part of a mixed x' (else y);
`scale` is the method's schedule (e.g. DKD's warm-up), 1 by default. With several teachers ℓ is averaged over
teachers (`ensemble=per_teacher`) or applied to their mean logits (`ensemble=mean_logits`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from kdlab.losses import cross_entropy, logit_standardize
from kdlab.methods.base import Distiller, EnsembleMode, ensemble_loss, mixed_cross_entropy
from kdlab.typed_config import bounded
from kdlab.views import TrainBatch


@dataclass
class LogitParams:
    """Parameters of every logit method (defaults: 1·CE + 1·ℓ, τ = 4)."""

    ce_weight: float = 1.0
    kd_weight: float = 1.0  # weight of the method's teacher loss ℓ on x
    strong_weight: float | None = None  # weight of the x' term; default kd_weight (teacher) / 1.0 (labels)
    strong_target: Literal["teacher", "labels"] = "teacher"  # x' labelled by the teacher (TL) or mixed labels
    temperature: float = bounded(4.0, gt=0)
    label_smoothing: float = bounded(0.0, ge=0, lt=1)  # on the CE of x
    ensemble: EnsembleMode = "per_teacher"  # several teachers: mean of per-teacher losses, or of their logits
    # z-score student and teacher logits (each row) before ℓ: Sun et al., "Logit Standardization in Knowledge
    # Distillation" (CVPR 2024, arXiv 2403.01427), as its release applies it to KD, DKD, MLKD and CTKD
    logit_standardize: bool = False


class LogitDistiller(Distiller):
    """Base of the logit methods. Subclasses set `Params` (a LogitParams), `term` (the loss's name in the
    metrics) and implement `loss`; they may override `scale` (a schedule of the teacher terms) and
    `view_terms` (extra terms per view)."""

    Params: ClassVar[type] = LogitParams
    term: ClassVar[str] = "kd"

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """ℓ for one teacher: student and teacher logits (B, K), labels (B,) → scalar."""
        raise NotImplementedError

    def scale(self, batch: TrainBatch) -> float | torch.Tensor:
        """Multiplier of the teacher terms at this step (1 unless the method schedules them)."""
        return 1.0

    def view_terms(
        self,
        student: torch.Tensor,
        teachers: list[torch.Tensor],
        labels: torch.Tensor,
        weight: float | torch.Tensor,
        suffix: str,
    ) -> dict[str, torch.Tensor]:
        """The weighted teacher terms of one view (suffix '' for x, '_strong' for x'). With `logit_standardize`
        each teacher is z-scored before any ensemble mean, as LS-KD defines it."""
        if self.params.logit_standardize:
            student, teachers = logit_standardize(student), [logit_standardize(t) for t in teachers]
        loss = ensemble_loss(lambda s, t: self.loss(s, t, labels), student, teachers, self.params.ensemble)
        return {self.term + suffix: weight * loss}

    def student_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The student's logits (B, K) for the label terms, for the teacher terms, and as its prediction. Default:
        one head for all three (DeiT's student has a class and a distillation head)."""
        logits = self.student(x)
        return logits, logits, logits

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: LogitParams = self.params
        t = self.teacher_views(batch, strong=p.strong_target == "teacher")
        for_labels, for_teacher, logits = self.student_heads(batch.x)
        scale = self.scale(batch)
        terms = {"ce": p.ce_weight * cross_entropy(for_labels, batch.y, p.label_smoothing)}
        terms.update(self.view_terms(for_teacher, t.x, batch.y, scale * p.kd_weight, ""))
        if batch.x_strong is not None:
            strong_labels, strong_teacher, _ = self.student_heads(batch.x_strong)
            if t.strong is not None:
                w = p.kd_weight if p.strong_weight is None else p.strong_weight
                terms.update(self.view_terms(strong_teacher, t.strong, batch.strong_labels(), scale * w, "_strong"))
            else:
                w = 1.0 if p.strong_weight is None else p.strong_weight
                terms["ce_strong"] = w * mixed_cross_entropy(strong_labels, batch.y, batch.mix)
        return logits, terms
