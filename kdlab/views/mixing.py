"""Mixing views: mixup and CutMix, with per-sample λ and a partner permutation without fixed points."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.views.base import MixInfo, StrongView, ViewOutput, ViewParams, beta, derangement, register_view, uniform
from kdlab.views.simple import box_mask


@dataclass
class MixParams(ViewParams):
    alpha: float = 1.0  # λ ~ Beta(α, α)


@register_view("mixup")
class Mixup(StrongView):
    """x' = λ·x + (1 − λ)·x[π], λ ~ Beta(α, α) per sample, π without fixed points."""

    Params = MixParams
    summary = "λ·x + (1−λ)·x[π], λ~Beta(α,α)"

    def transform(self, x: torch.Tensor, g: torch.Generator | None) -> ViewOutput:
        b = x.shape[0]
        lam = beta(b, self.params.alpha, g, x.device, self.params.per_batch_compat)
        perm = derangement(b, g, x.device)
        lam4 = lam.to(x.dtype)[:, None, None, None]
        return ViewOutput(lam4 * x + (1 - lam4) * x[perm], MixInfo(torch.arange(b, device=x.device), perm, lam))


def cutmix_boxes(
    b: int, h: int, w: int, alpha: float, g: torch.Generator | None, device: torch.device, per_batch: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix boxes: λ ~ Beta(α, α), side ratio √(1 − λ), uniform centre, clipped to the image.

    Returns (mask (B, H, W) bool — True where the partner is pasted, λ (B,) recomputed from the clipped box
    area: λ = 1 − box area / (H·W))."""
    lam = beta(b, alpha, g, device, per_batch)
    ratio = torch.sqrt(1.0 - lam)
    cut_h = (h * ratio).long()
    cut_w = (w * ratio).long()
    cy = (uniform(b, g, device, per_batch) * h).long()
    cx = (uniform(b, g, device, per_batch) * w).long()
    y1, y2 = (cy - cut_h // 2).clamp(0, h), (cy + cut_h // 2).clamp(0, h)
    x1, x2 = (cx - cut_w // 2).clamp(0, w), (cx + cut_w // 2).clamp(0, w)
    mask = box_mask(y1, y2, x1, x2, h, w)
    area = ((y2 - y1) * (x2 - x1)).to(torch.float32)
    return mask, 1.0 - area / (h * w)


def cutmix(
    x: torch.Tensor, alpha: float, g: torch.Generator | None, per_batch: bool = False
) -> tuple[torch.Tensor, MixInfo]:
    """One CutMix run over a batch: each image gets a box of its partner x[π] pasted in. → (x', MixInfo)."""
    b, _, h, w = x.shape
    mask, lam = cutmix_boxes(b, h, w, alpha, g, x.device, per_batch)
    perm = derangement(b, g, x.device)
    mixed = torch.where(mask[:, None], x[perm], x)
    return mixed, MixInfo(torch.arange(b, device=x.device), perm, lam)


@register_view("cutmix")
class CutMix(StrongView):
    """Paste a box of a partner image (π without fixed points); λ = 1 − box area fraction."""

    Params = MixParams
    summary = "paste a partner's box; λ = 1 − area fraction"

    def transform(self, x: torch.Tensor, g: torch.Generator | None) -> ViewOutput:
        mixed, info = cutmix(x, self.params.alpha, g, self.params.per_batch_compat)
        return ViewOutput(mixed, info)
