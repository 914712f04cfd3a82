"""The standard view x: per-sample random crop with zero padding + horizontal flip, and normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def random_crop_flip(
    images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample RandomCrop(H×W, padding) + RandomHorizontalFlip(0.5) in one gather.

    images: (B, C, H, W) of any dtype; returns the same shape and dtype. Each sample draws its own offsets
    (uniform in [0, 2·padding]) and its own flip."""
    b, c, h, w = images.shape
    dev = images.device
    if padding == 0 and not flip:
        return images
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    src = images
    if padding > 0:
        src = F.pad(images, (padding, padding, padding, padding))
        offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator, device=dev)
        rows = rows + offsets[:, :1]
        cols = cols + offsets[:, 1:]
    if flip:
        flipped = torch.rand(b, generator=generator, device=dev) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return src[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


class Normalize(nn.Module):
    """uint8 or [0, 255]-scaled images → float (x/255 − mean)/std per channel. Mean/std are in [0, 1] units."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("scale", 1.0 / (255.0 * s), persistent=False)
        self.register_buffer("shift", -m / s, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, images.float(), self.scale)


class StandardView(nn.Module):
    """uint8 batch → normalised float batch with the standard augmentation (crop+flip) when training."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], padding: int = 4, flip: bool = True):
        super().__init__()
        self.padding = padding
        self.flip = flip
        self.normalize = Normalize(mean, std)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.training:
            images = random_crop_flip(images, self.padding, self.flip, generator)
        return self.normalize(images)
