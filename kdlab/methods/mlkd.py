"""`mlkd`: Jin et al., "Multi-Level Logit Distillation" (CVPR 2023): KD, class-correlation and instance-relation
terms at five temperatures, on a weak view x and a strong view x', as its release computes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from kdlab.losses import (
    batch_correlation,
    below_median_fraction,
    class_correlation,
    cross_entropy,
    kd,
    logit_standardize,
)
from kdlab.methods.base import mixed_cross_entropy, register_method
from kdlab.methods.logit_base import LogitDistiller, LogitParams
from kdlab.views import TrainBatch


@dataclass
class MLKDParams(LogitParams):
    ce_weight: float = 0.1  # the release's CE_WEIGHT (on x and on x')
    kd_weight: float = 0.9  # the release's KD_WEIGHT, on every KD, class and batch term
    temperature: float = 4.0  # the first of the five temperatures (the release's KD.TEMPERATURE)
    extra_temperatures: list[float] = field(default_factory=lambda: [3.0, 5.0, 2.0, 6.0])  # the release's fixed four


@register_method(
    "mlkd", "Multi-level logit KD: KD + class + batch correlations at 5 temperatures, weak and strong views"
)
class MultiLevelLogitKD(LogitDistiller):
    """Temperatures T = (τ, 3, 5, 2, 6); x the weak view, x' the strong view (the release: RandAugment(2, 10)),
    s/t the student's/teacher's logits; m = the fraction of samples whose teacher confidence max softmax(t(x)) is
    ≤ its batch median, m_c = the fraction of classes whose summed teacher probability is ≤ its median. As released:

        L = ce·[CE(s(x), y) + CE(s(x'), y')] + kd·Σ_{T} m·KD_T(x)
            + kd·[Σ_{T∈(τ,3,5)} KD_T(x') + Σ_{T∈(2,6)} KD_T(x)]
            + kd·Σ_T m_c·CC_T(x) + kd·Σ_T m·BC_T(x)

    KD_T = T²·KL at T (z-scored logits with `logit_standardize`), CC = class_correlation, BC = batch_correlation.
    The release's masks multiply a batch-mean loss, so they act as the factors m and m_c; its strong-view sum takes
    the T = 2 and 6 terms on x, and its CC/BC terms on x' are computed but never added — all kept here, so the
    numbers match the release. y' is the label of the larger part of a mixed x'. Needs views.strong."""

    Params = MLKDParams
    term = "mlkd"
    needs_strong_view: ClassVar[bool] = True

    def levels(
        self, s_x: torch.Tensor, t_x: torch.Tensor, s_xs: torch.Tensor, t_xs: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The unweighted KD / CC / BC sums for one teacher: logits on x (B, K) and on x' (B', K)."""
        p: MLKDParams = self.params
        temps = [p.temperature, *p.extra_temperatures]
        p_tx = t_x.float().softmax(1)
        m = below_median_fraction(p_tx.amax(1))
        m_c = below_median_fraction(p_tx.sum(0))
        ks, kt, kss, kts = s_x, t_x, s_xs, t_xs
        if p.logit_standardize:  # only the KD terms, as released
            ks, kt, kss, kts = (logit_standardize(v) for v in (s_x, t_x, s_xs, t_xs))
        kd_x = torch.stack([kd(ks, kt, T) for T in temps]).sum() * m
        strong = [kd(kss, kts, T) for T in temps[:3]] + [kd(ks, kt, T) for T in temps[3:]]
        return {
            "mlkd": kd_x + torch.stack(strong).sum(),
            "mlkd_class": torch.stack([class_correlation(s_x, t_x, T) for T in temps]).sum() * m_c,
            "mlkd_batch": torch.stack([batch_correlation(s_x, t_x, T) for T in temps]).sum() * m,
        }

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: MLKDParams = self.params
        assert batch.x_strong is not None, "mlkd needs views.strong (checked when the run is built)"
        t = self.teacher_views(batch)
        assert t.strong is not None
        logits = self.student(batch.x)
        s_strong = self.student(batch.x_strong)
        terms = {
            "ce": p.ce_weight * cross_entropy(logits, batch.y, p.label_smoothing),
            "ce_strong": p.ce_weight * mixed_cross_entropy(s_strong, batch.y, batch.mix),
        }
        if p.ensemble == "mean_logits" or len(t.x) == 1:
            per_teacher = [self.levels(logits, torch.stack(t.x).mean(0), s_strong, torch.stack(t.strong).mean(0))]
        else:
            per_teacher = [self.levels(logits, tx, s_strong, ts) for tx, ts in zip(t.x, t.strong)]
        for name in per_teacher[0]:
            terms[name] = p.kd_weight * torch.stack([lv[name] for lv in per_teacher]).mean()
        return logits, terms
