"""`ctkd`: Li et al., "Curriculum Temperature for Knowledge Distillation" (AAAI 2023, arXiv 2211.16231): the KD
(or DKD) temperature is learned adversarially — a global parameter behind a gradient-reversal layer whose strength
follows a cosine curriculum."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from kdlab.losses import dkd, kd
from kdlab.methods.base import register_method
from kdlab.methods.logit_base import LogitDistiller, LogitParams
from kdlab.typed_config import bounded
from kdlab.views import TrainBatch


def reverse_gradient(x: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """Identity in the forward pass; the gradient times `lam` in the backward pass (a gradient-reversal layer for
    lam < 0). Pure tensor code: `lam` may be a 0-dim tensor (a captured step)."""
    return x.detach() + lam * (x - x.detach())


def cosine_curriculum(epoch: float | torch.Tensor, start: float, end: float, epochs: float) -> float | torch.Tensor:
    """CTKD's CosineDecay: start → end along half a cosine over `epochs`, then `end`. `epoch` counts from 1
    (the release's epoch numbering); a tensor epoch gives a tensor."""
    if isinstance(epoch, torch.Tensor):
        clamped = epoch.clamp(0, epochs)
        return (torch.cos(clamped * math.pi / epochs) + 1) / 2 * (start - end) + end
    e = min(max(epoch, 0.0), epochs)
    return (math.cos(e * math.pi / epochs) + 1) / 2 * (start - end) + end


class GlobalTemperature(nn.Module):
    """τ = t_start + t_range · sigmoid(θ), θ one learned scalar (initialised to 1, as released), reached through a
    gradient-reversal layer of strength λ: the optimiser's step on θ *raises* the distillation loss."""

    def __init__(self, t_start: float, t_range: float):
        super().__init__()
        self.theta = nn.Parameter(torch.ones(1))
        self.t_start, self.t_range = t_start, t_range

    def forward(self, lam: float | torch.Tensor) -> torch.Tensor:
        return self.t_start + self.t_range * torch.sigmoid(reverse_gradient(self.theta, lam))[0]


@dataclass
class CTKDParams(LogitParams):
    ce_weight: float = 0.1  # the release's -r 0.1 -a 0.9 (KD); its DKD runs use ce 1, kd 1 (-r 1 -b 1)
    kd_weight: float = 0.9
    base: Literal["kd", "dkd"] = "kd"  # the loss whose temperature is learned
    dkd_alpha: float = 1.0  # base=dkd: TCKD weight
    dkd_beta: float = 2.0  # base=dkd: NCKD weight (the release's default)
    t_start: float = bounded(1.0, gt=0)  # τ = t_start + t_range·sigmoid(θ): τ ∈ (t_start, t_start + t_range)
    t_range: float = bounded(20.0, gt=0)  # the release's --t_end
    lambda_start: float = 0.0  # gradient-reversal strength λ at epoch 1 (the release's decay_max)
    lambda_end: float = -1.0  # λ after lambda_epochs (decay_min); negative = adversarial
    lambda_epochs: float = bounded(10.0, gt=0)  # length of the cosine curriculum (decay_loops)


@register_method("ctkd", "CTKD: ce + kd_weight·KD (or DKD) at a learned, adversarial temperature τ ∈ (1, 21)")
class CurriculumTemperatureKD(LogitDistiller):
    """ℓ = τ²·KL(softmax(t/τ) ‖ softmax(s/τ)) (base=kd) or DKD at τ (base=dkd), τ a learned global temperature
    (GlobalTemperature) trained with the student through a gradient reversal of strength λ(e), λ following a
    cosine from lambda_start to lambda_end over lambda_epochs (e = the epoch counted from 1, as released). The
    temperature is an extra trainable module (checkpointed; the run's SGD updates it with the student's lr and
    weight decay, as the release's optimiser does). `logit_standardize=true` gives the LS-KD variant."""

    Params = CTKDParams
    term = "ctkd"

    def setup(self) -> None:
        p: CTKDParams = self.params
        self.temperature = GlobalTemperature(p.t_start, p.t_range)
        self._tau: torch.Tensor | None = None  # this step's τ, set by forward_train

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"temperature": self.temperature}

    def current_temperature(self, batch: TrainBatch) -> torch.Tensor:
        """τ for this step (a 0-dim tensor carrying the reversed gradient to θ)."""
        p: CTKDParams = self.params
        epoch = batch.epoch
        whole = torch.floor(epoch) + 1 if isinstance(epoch, torch.Tensor) else math.floor(epoch) + 1
        lam = cosine_curriculum(whole, p.lambda_start, p.lambda_end, p.lambda_epochs)
        return self.temperature(lam)

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self._tau = self.current_temperature(batch)
        return super().forward_train(batch)

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        p: CTKDParams = self.params
        tau = self._tau
        assert tau is not None, "loss is called inside forward_train"
        if p.base == "dkd":
            return dkd(student, teacher, labels, p.dkd_alpha, p.dkd_beta, tau)  # type: ignore[arg-type]
        return kd(student, teacher, tau)  # type: ignore[arg-type]

    def epoch_report(self) -> dict[str, float]:
        p: CTKDParams = self.params
        with torch.no_grad():
            tau = p.t_start + p.t_range * torch.sigmoid(self.temperature.theta)
        return {"ctkd_temperature": float(tau)}
