"""A model's own input size: an ImageNet-pretrained teacher at 224 px teaching a 32-px CIFAR student, say.

The views draw each batch once, at the data's size. A model that declares its own size (`teacher.input_size=224`)
gets a forward pre-hook that resizes the batch on the device for it (bilinear or bicubic, antialiased, as timm's and
torchvision's eval transforms resize with antialiasing), so every model sees its own resize of the same images. The
resize has no parameters or buffers: checkpoints and feature taps are unchanged, and the exported student carries
it inside its program."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.errors import ConfigError
from kdlab.models.pretrained import scale_size

RESIZER = "kdlab_input_resize"  # the child module's name on a resized model


class InputResize(nn.Module):
    """Images (B, C, H, W) → (B, C, size[0], size[1]); a batch already at that size passes unchanged. With
    crop_pct < 1 (a pretrained model's eval transform, timm's rule): the shorter side resized to
    ⌊size / crop_pct⌋ (both sides for a non-square size), then the center crop of `size`."""

    def __init__(self, size: tuple[int, int], mode: str, crop_pct: float = 1.0):
        super().__init__()
        self.size, self.mode, self.crop_pct = size, mode, crop_pct

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop_pct >= 1:
            if tuple(x.shape[-2:]) == self.size:
                return x
            return F.interpolate(x, size=self.size, mode=self.mode, align_corners=False, antialias=True)
        h, w = x.shape[-2:]
        sh, sw = scale_size(self.size, self.crop_pct)
        if self.size[0] == self.size[1]:  # the shorter side to the scale, the aspect kept (torchvision Resize(int))
            short, long = min(h, w), max(h, w)
            new_long = int(sh * long / short)
            sh, sw = (sh, new_long) if h <= w else (new_long, sh)
        if (sh, sw) != (h, w):
            x = F.interpolate(x, size=(sh, sw), mode=self.mode, align_corners=False, antialias=True)
        top, left = round((sh - self.size[0]) / 2.0), round((sw - self.size[1]) / 2.0)  # torchvision's CenterCrop
        return x[..., top : top + self.size[0], left : left + self.size[1]]

    def extra_repr(self) -> str:
        return f"size={self.size}, mode={self.mode}, crop_pct={self.crop_pct}, antialias=True"


def _resize_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (getattr(module, RESIZER)(args[0]), *args[1:])


def attach_input_size(model: nn.Module, size: tuple[int, int] | None, mode: str, crop_pct: float = 1.0) -> nn.Module:
    """Make `model` resize every input batch to `size` (H, W) first, center-cropping `crop_pct` of it (None:
    nothing to do). Returns the model."""
    if size is None:
        return model
    if hasattr(model, RESIZER):
        raise ConfigError("the model already has an input size attached")
    model.add_module(RESIZER, InputResize(size, mode, crop_pct))
    model.register_forward_pre_hook(_resize_input)
    return model
