"""`deit`: Touvron et al., "Training data-efficient image transformers & distillation through attention" (ICML 2021,
arXiv 2012.12877), for students with a distillation token (timm's `deit_*_distilled_*`).

The student has two heads: its class token is trained on the labels, its distillation token on the teacher,

    L = (1 − α)·CE(cls(x), y) + α·ℓ(dist(x), t(x)),
    hard (the paper's recipe, the default): ℓ = CE(dist, argmax t)
    soft: ℓ = τ²·Σ KL(softmax(t/τ) ‖ softmax(dist/τ)) / (B·K)   — the release divides the summed KL by every logit

as facebookresearch/deit `losses.py` (DistillationLoss) computes it, with α = 0.5 and τ = 1 (its main.py). Training,
the student returns both heads (timm's `set_distilled_training(True)`); evaluating and exported, their mean, as
DeiT predicts. A teacher-labelled strong view x' adds the distillation term on x'; a mixed-label x' trains the
class head on its mixed labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.errors import ConfigError
from kdlab.methods.base import register_method
from kdlab.methods.logit_base import LogitDistiller, LogitParams
from kdlab.typed_config import bounded


@dataclass
class DeiTParams(LogitParams):
    ce_weight: float = 0.5  # 1 − α on the class token's CE
    kd_weight: float = 0.5  # α on the distillation token's term
    temperature: float = bounded(1.0, gt=0)  # τ of the soft variant (DeiT's --distillation-tau 1.0)
    kind: Literal["hard", "soft"] = "hard"  # hard: CE on the teacher's argmax (the paper's recipe); soft: KL


def _two_heads(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(out, tuple) and len(out) == 2:
        return out[0], out[1]
    raise ConfigError("method deit: the student returned one output; it needs a class and a distillation head")


@register_method("deit", "DeiT: (1−α)·CE(cls, y) + α·CE(dist, argmax t) on a distillation-token student, α=0.5")
class DeiTDistillation(LogitDistiller):
    """DeiT's distillation through the distillation token (module doc). The student must have one."""

    Params = DeiTParams
    term = "deit"
    student_requirement = "a distillation token (timm deit_*_distilled_*)"

    def setup(self) -> None:
        switch = getattr(self.student, "set_distilled_training", None)
        if not callable(switch):
            raise ConfigError(
                f"method deit needs a student with {self.student_requirement}; "
                f"{type(self.student).__name__} has none — use kd for other students"
            )
        switch(True)  # training: (class head, distillation head); eval: their mean

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.params.kind == "hard":
            return F.cross_entropy(student.float(), teacher.argmax(1))
        tau = self.params.temperature
        kl = F.kl_div(
            F.log_softmax(student.float() / tau, 1), F.log_softmax(teacher.float() / tau, 1),
            reduction="sum", log_target=True,
        )  # fmt: skip
        return kl * tau * tau / student.numel()

    def student_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The class head for the labels, the distillation head for the teacher, their mean as the prediction."""
        cls, dist = _two_heads(self.student(x))
        return cls, dist, (cls + dist) / 2

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        out = self.student(x)
        return (out[0] + out[1]) / 2 if isinstance(out, tuple) else out

    def inference_model(self) -> nn.Module:
        return self.student  # timm's distilled ViT in eval mode returns the mean of its two heads
