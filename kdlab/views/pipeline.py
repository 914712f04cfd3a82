"""From a uint8 batch to what a method trains on: the standard view x and, when configured, a strong view x'."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from kdlab.views.base import MixInfo, StrongView
from kdlab.views.pick import CutMixPick, pick_top
from kdlab.views.standard import Normalize, StandardView, to_unit

# scorer(candidates normalised (P, C, H, W)) → (scores (P,), teacher logits on them [per teacher] or None)
Scorer = Callable[[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor] | None]]


@dataclass
class TrainBatch:
    """x: normalised standard view (B, C, H, W); y: labels (B,); index: sample ids (B,).
    x_strong: normalised strong view (B', C, H, W) or None; mix: how x_strong was mixed (None if not mixed);
    teacher_strong: teacher logits on x_strong already computed while picking (reuse, don't recompute)."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    x_strong: torch.Tensor | None = None
    mix: MixInfo | None = None
    teacher_strong: list[torch.Tensor] | None = None
    epoch: float = 0.0  # fractional epoch of this step, 0-based (for warm-ups)


class ViewPipeline(nn.Module):
    """standard (uint8 → [0, 1] float) → optional strong view → normalise both. Keeps on-device statistics
    (the CutMixPick ratio r = mean picked score / mean pool score) until `pop_stats`."""

    def __init__(self, standard: nn.Module, normalize: Normalize, strong: StrongView | None = None):
        super().__init__()
        self.standard = standard
        self.normalize = normalize
        self.strong = strong
        self._ratio_sum: torch.Tensor | None = None
        self._ratio_n = 0

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        index: torch.Tensor,
        g: torch.Generator | None = None,
        scorer: Scorer | None = None,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> TrainBatch:
        # the 8-bit standard view, where there is one, lets policy views skip a float → uint8 conversion
        u8 = self.standard.forward_u8(images, g) if isinstance(self.standard, StandardView) else None
        x01 = to_unit(u8) if u8 is not None else self.standard(images, g)
        batch = TrainBatch(self.normalize(x01).contiguous(memory_format=memory_format), labels, index)
        if self.strong is None:
            return batch
        if isinstance(self.strong, CutMixPick):
            if scorer is None:
                raise RuntimeError("cutmix_pick needs a scorer from the method")
            pool = self.strong.pool(x01, g)
            pool_x = self.normalize(pool.images).contiguous(memory_format=memory_format)
            scores, teacher_logits = scorer(pool_x)
            keep = pick_top(scores, self.strong.n_pick(len(labels)))
            self._record_ratio(scores[keep].mean() / scores.mean().clamp_min(1e-12))
            batch.x_strong = pool_x[keep]
            batch.mix = pool.mix.select(keep) if pool.mix is not None else None
            batch.teacher_strong = [t[keep] for t in teacher_logits] if teacher_logits is not None else None
            return batch
        out = self.strong(x01, g, x_u8=u8)
        batch.x_strong = self.normalize(out.images).contiguous(memory_format=memory_format)
        batch.mix = out.mix
        return batch

    def _record_ratio(self, r: torch.Tensor) -> None:
        r = r.detach().float()
        self._ratio_sum = r if self._ratio_sum is None else self._ratio_sum + r
        self._ratio_n += 1

    def pop_stats(self) -> dict[str, float]:
        """Per-epoch view statistics as host floats (one sync), then reset."""
        out = {}
        if self._ratio_sum is not None and self._ratio_n:
            out["pick_ratio"] = float(self._ratio_sum) / self._ratio_n
        self._ratio_sum, self._ratio_n = None, 0
        return out
