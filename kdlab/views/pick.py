"""CutMixPick (Wang et al., "Knowledge Distillation Thrives on Data Augmentation", arXiv 2012.02909): actively
pick the most informative CutMix samples. A pool of m·B candidates
(m CutMix runs, each with its own λ, boxes and partners) is scored by the models being trained, without
gradient, and the n_pick highest-scoring candidates become x'."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.errors import ConfigError
from kdlab.typed_config import bounded
from kdlab.views.base import MixInfo, ScoreKind, Scorer, ScoreRequest, StrongView, ViewOutput, ViewParams, register_view
from kdlab.views.mixing import cutmix


@dataclass
class CutMixPickParams(ViewParams):
    alpha: float = bounded(1.0, gt=0)
    pool_factor: int = bounded(2, ge=1)  # m: CutMix runs in the pool
    n_pick: int | None = bounded(None, ge=1)  # default: the batch size B
    score: ScoreKind = "kld"
    temperature: float = bounded(4.0, gt=0)  # for `kld`: KL(softmax(t/τ) ‖ softmax(s/τ)) per sample, no τ²
    bn_update_compat: bool = False  # released code: score with the student in train mode (updates BN stats)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.strength != 1.0:
            raise ConfigError("cutmix_pick picks from a pool; views.strength must stay 1.0")


@register_view("cutmix_pick")
class CutMixPick(StrongView):
    """Builds the pool, asks the scorer (the method being trained) for scores, keeps the top n_pick. The
    teachers' logits on the kept candidates travel with x' so methods need not run the teachers again."""

    Params = CutMixPickParams
    summary = "top-n of m·B CutMix candidates by teacher–student KL (or entropy)"
    needs_scores = True
    unscored_stand_in = "cutmix"  # without a training student to score with, the pool's plain CutMix

    def check(self, batch_size: int, n_teachers: int) -> None:
        self.n_pick(batch_size)
        if not n_teachers and self.params.score != "student_entropy":
            raise ConfigError(f"cutmix_pick with score={self.params.score} needs a teacher")

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

    def forward(
        self,
        x: torch.Tensor,
        g: torch.Generator | None = None,
        x_u8: torch.Tensor | None = None,
        scorer: Scorer | None = None,
    ) -> ViewOutput:
        """x: float (B, C, H, W) in [0, 1] → the n_pick best of the pool, with their MixInfo, the teachers'
        logits on them and `pick_ratio` = mean picked score / mean pool score."""
        if scorer is None:
            raise ConfigError("cutmix_pick needs a teacher to score candidates; use it with a distillation method")
        p = self.params
        pool = self.pool(x, g)
        scores, teacher_logits = scorer(pool.images, ScoreRequest(p.score, p.temperature, p.bn_update_compat))
        keep = pick_top(scores, self.n_pick(x.shape[0]))
        assert pool.mix is not None
        return ViewOutput(
            pool.images[keep],
            pool.mix.select(keep),
            [t[keep] for t in teacher_logits] if teacher_logits is not None else None,
            {"pick_ratio": scores[keep].mean() / scores.mean().clamp_min(1e-12)},
        )


def pick_top(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the n highest scores (P,) → (n,), highest first."""
    return scores.topk(n).indices
