"""CutMixPick (Wang et al., "What makes a good data augmentation in KD"): actively pick the most informative
CutMix samples. A pool of m·B candidates (m CutMix runs, each with its own λ, boxes and partners) is scored
without gradient and the n_pick highest-scoring candidates become x'."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from kdlab.errors import ConfigError
from kdlab.views.base import MixInfo, StrongView, ViewOutput, ViewParams, register_view
from kdlab.views.mixing import cutmix


@dataclass
class CutMixPickParams(ViewParams):
    alpha: float = 1.0
    pool_factor: int = 2  # m: CutMix runs in the pool
    n_pick: int | None = None  # default: the batch size B
    score: Literal["kld", "teacher_entropy", "student_entropy"] = "kld"
    temperature: float = 4.0  # for `kld`: KL(softmax(t/τ) ‖ softmax(s/τ)) per sample, no τ²
    bn_update_compat: bool = False  # released code: score with the student in train mode (updates BN stats)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool_factor < 1:
            raise ConfigError(f"views.params.pool_factor must be ≥ 1, got {self.pool_factor}")
        if self.n_pick is not None and self.n_pick < 1:
            raise ConfigError(f"views.params.n_pick must be ≥ 1, got {self.n_pick}")
        if self.strength != 1.0:
            raise ConfigError("cutmix_pick picks from a pool; views.strength must stay 1.0")


@register_view("cutmix_pick")
class CutMixPick(StrongView):
    """The pool is built here; scoring needs the models, so the ViewPipeline asks the method for scores and
    calls `select`."""

    Params = CutMixPickParams
    summary = "top-n of m·B CutMix candidates by teacher–student KL (or entropy)"
    needs_scores = True

    def pool(self, x: torch.Tensor, g: torch.Generator | None) -> ViewOutput:
        """m·B CutMix candidates: (m·B, C, H, W) with MixInfo indexing x."""
        images, infos = [], []
        for _ in range(self.params.pool_factor):
            mixed, info = cutmix(x, self.params.alpha, g, self.params.per_batch_compat)
            images.append(mixed)
            infos.append(info)
        mix = MixInfo(*(torch.cat([getattr(i, f) for i in infos]) for f in ("src", "partner", "lam")))
        return ViewOutput(torch.cat(images), mix)

    def n_pick(self, batch_size: int) -> int:
        n = self.params.n_pick or batch_size
        pool = self.params.pool_factor * batch_size
        if n > pool:
            raise ConfigError(f"views.params.n_pick={n} exceeds the pool of {pool} candidates (pool_factor × batch)")
        return n

    def transform(self, x: torch.Tensor, g: torch.Generator | None) -> ViewOutput:
        raise ConfigError("cutmix_pick needs a teacher to score candidates; use it with a distillation method")


def pick_top(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the n highest scores (P,) → (n,), highest first."""
    return scores.topk(n).indices
