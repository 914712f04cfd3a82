"""From a uint8 batch to what a method trains on: the standard view x and, when configured, a strong view x'."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdlab.views.base import MixInfo, Scorer, ScoreRequest, StrongView, build_view
from kdlab.views.standard import Normalize, StandardView, to_unit


@dataclass
class TrainBatch:
    """x: normalised standard view (B, C, H, W); y: labels (B,); index: sample ids (B,).
    x_strong: normalised strong view (B', C, H, W) or None; mix: how x_strong was mixed (None if not mixed);
    teacher_strong: teacher logits on x_strong the view already computed (reuse, don't recompute)."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    x_strong: torch.Tensor | None = None
    mix: MixInfo | None = None
    teacher_strong: list[torch.Tensor] | None = None
    epoch: float | torch.Tensor = 0.0  # fractional epoch of this step, 0-based (for warm-ups; 0-dim when captured)

    def views(self) -> list[torch.Tensor]:
        """[x] or [x, x']: the inputs every method trains on."""
        return [self.x] if self.x_strong is None else [self.x, self.x_strong]

    def strong_labels(self) -> torch.Tensor:
        """One class per row of x' (B',): the label of the larger part of a mixed image, else y."""
        if self.mix is None:
            return self.y
        src, partner = self.y[self.mix.src], self.y[self.mix.partner]
        return torch.where(self.mix.lam >= 0.5, src, partner)


class ViewPipeline(nn.Module):
    """standard (uint8 → [0, 1] float) → optional strong view → normalise both. Averages the strong view's
    per-step statistics on the device until `pop_stats`. A view with `needs_scores` gets the method's scorer
    (`attach_scorer`), wrapped so the method sees normalised candidates."""

    def __init__(self, standard: nn.Module, normalize: Normalize, strong: StrongView | None = None):
        super().__init__()
        self.standard = standard
        self.normalize = normalize
        self.strong = strong
        self.scorer: Scorer | None = None
        # updated in place, so that a step captured as a CUDA graph keeps adding to them at every replay
        self._stat_sums: dict[str, torch.Tensor] = {}
        self._stat_n: torch.Tensor | None = None

    def check(self, batch_size: int, n_teachers: int) -> None:
        """Let the strong view refuse the run's batch size or teachers (ConfigError)."""
        if self.strong is not None:
            self.strong.check(batch_size, n_teachers)

    @property
    def needs_scores(self) -> bool:
        return self.strong is not None and self.strong.needs_scores

    def attach_scorer(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        index: torch.Tensor,
        g: torch.Generator | None = None,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> TrainBatch:
        # the 8-bit standard view, where there is one, lets policy views skip a float → uint8 conversion
        u8 = self.standard.forward_u8(images, g) if isinstance(self.standard, StandardView) else None
        x01 = to_unit(u8) if u8 is not None else self.standard(images, g)
        batch = TrainBatch(self.normalize(x01).contiguous(memory_format=memory_format), labels, index)
        if self.strong is None:
            return batch
        scorer = None
        if self.strong.needs_scores and self.scorer is not None:
            method_scorer = self.scorer

            def scorer(candidates: torch.Tensor, request: ScoreRequest) -> Any:
                return method_scorer(self.normalize(candidates).contiguous(memory_format=memory_format), request)

        out = self.strong(x01, g, x_u8=u8, scorer=scorer)
        batch.x_strong = self.normalize(out.images).contiguous(memory_format=memory_format)
        batch.mix = out.mix
        batch.teacher_strong = out.teacher_logits
        self._record(out.stats)
        return batch

    def _record(self, stats: dict[str, torch.Tensor]) -> None:
        if not stats:
            return
        for k, v in stats.items():
            v = v.detach().float()
            if k in self._stat_sums:
                self._stat_sums[k].add_(v)
            else:
                self._stat_sums[k] = v.clone()
        if self._stat_n is None:
            self._stat_n = torch.zeros((), device=next(iter(stats.values())).device)
        self._stat_n.add_(1)

    def pop_stats(self) -> dict[str, float]:
        """Per-epoch means of the view's statistics as host floats (one sync), then reset (in place)."""
        if self._stat_n is None or not self._stat_sums:
            return {}
        n = float(self._stat_n)
        out = {k: float(v) / n for k, v in self._stat_sums.items()} if n else {}
        for v in self._stat_sums.values():
            v.zero_()
        self._stat_n.zero_()
        return out


def build_pipeline(
    standard: str,
    strong: str | None,
    params: dict[str, Any],
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_padding: int = 4,
    flip: bool = True,
    preset_family: str = "auto",
) -> ViewPipeline:
    """The standard view `standard`, the optional strong view `strong` with its `params` (strength and
    per_batch_compat included), and normalisation by the dataset's mean/std ([0, 1] units) for
    square images of `image_size` pixels; `preset_family` picks the weak/strong presets' transforms."""
    view = build_view(strong, params, image_size, mean) if strong else None
    x_view = StandardView(standard, image_size, crop_padding, flip, mean, preset_family)
    return ViewPipeline(x_view, Normalize(mean, std), view)
