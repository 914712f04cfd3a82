"""Strong views that move or erase pixels: identity, flip, crop_flip, cutout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from kdlab.views import image_ops
from kdlab.views.base import StrongView, ViewOutput, ViewParams, register_view, uniform
from kdlab.views.standard import random_crop_flip


@register_view("identity")
class Identity(StrongView):
    """x' = x (the teacher-labelled second view is the same image: a control)."""

    summary = "x' = x"

    def transform(self, x: torch.Tensor, g: torch.Generator | None) -> ViewOutput:
        return ViewOutput(x)


@register_view("flip")
class Flip(StrongView):
    """Horizontal flip of each sample with probability 0.5 (on top of x's own flip)."""

    summary = "random horizontal flip"

    def transform(self, x: torch.Tensor, g: torch.Generator | None) -> ViewOutput:
        flipped = uniform(x.shape[0], g, x.device, self.params.per_batch_compat) < 0.5
        return ViewOutput(torch.where(flipped[:, None, None, None], x.flip(3), x))


@dataclass
class CropFlipParams(ViewParams):
    padding: int | None = None  # default: image size / 8 (4 px at 32×32)


@register_view("crop_flip")
class CropFlip(StrongView):
    """Another random crop (zero padding) + horizontal flip on top of x."""

    Params = CropFlipParams
    summary = "random crop (padding) + flip"

    def transform(self, x: torch.Tensor, g: torch.Generator | None) -> ViewOutput:
        pad = self.params.padding if self.params.padding is not None else max(1, self.image_size // 8)
        return ViewOutput(random_crop_flip(x, pad, True, g, self.params.per_batch_compat))


@dataclass
class CutoutParams(ViewParams):
    size: int | None = None  # hole side in pixels; default image size / 4 (8 CIFAR, 16 Tiny ImageNet, 56 ImageNet)
    # release: the hole is the dataset mean (the released code multiplies the *normalised* image by the mask, as
    # DeVries & Taylor's cutout does); pillow: the hole is black (kdlab's behaviour before 2026-12-04)
    ops: Literal["release", "pillow"] = "release"


@register_view("cutout")
class Cutout(StrongView):
    """One square hole per image, centre uniform over the image, clipped at the border, filled with the
    dataset mean (`ops=release`; black where the mean is unknown) or black (`ops=pillow`)."""

    Params = CutoutParams
    summary = "one square hole (size image/4), the dataset mean (ops=release) or black (ops=pillow)"

    def transform(self, x: torch.Tensor, g: torch.Generator | None) -> ViewOutput:
        b, _, h, w = x.shape
        size = self.params.size if self.params.size is not None else max(1, self.image_size // 4)
        pb = self.params.per_batch_compat
        cy = (uniform(b, g, x.device, pb) * h).long()
        cx = (uniform(b, g, x.device, pb) * w).long()
        hole = box_mask(cy - size // 2, cy + size - size // 2, cx - size // 2, cx + size - size // 2, h, w)
        if self.params.ops == "release" and self.dataset_mean is not None:
            fill = image_ops.device_values(self.dataset_mean, x.dtype, x.device).view(1, -1, 1, 1)
            return ViewOutput(torch.where(hole[:, None], fill, x))
        return ViewOutput(x.masked_fill(hole[:, None], 0.0))


def box_mask(y1: torch.Tensor, y2: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H, W) bool: True inside rows [y1, y2) × cols [x1, x2) of each sample (bounds are clipped)."""
    rows = torch.arange(h, device=y1.device)
    cols = torch.arange(w, device=y1.device)
    in_rows = (rows[None] >= y1[:, None]) & (rows[None] < y2[:, None])
    in_cols = (cols[None] >= x1[:, None]) & (cols[None] < x2[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :]
