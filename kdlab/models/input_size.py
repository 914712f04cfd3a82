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

RESIZER = "kdlab_input_resize"  # the child module's name on a resized model


class InputResize(nn.Module):
    """Images (B, C, H, W) → (B, C, size[0], size[1]); a batch already at that size passes unchanged."""

    def __init__(self, size: tuple[int, int], mode: str):
        super().__init__()
        self.size, self.mode = size, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        return F.interpolate(x, size=self.size, mode=self.mode, align_corners=False, antialias=True)

    def extra_repr(self) -> str:
        return f"size={self.size}, mode={self.mode}, antialias=True"


def _resize_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (getattr(module, RESIZER)(args[0]), *args[1:])


def attach_input_size(model: nn.Module, size: tuple[int, int] | None, mode: str) -> nn.Module:
    """Make `model` resize every input batch to `size` (H, W) first (None: nothing to do). Returns the model."""
    if size is None:
        return model
    if hasattr(model, RESIZER):
        raise ConfigError("the model already has an input size attached")
    model.add_module(RESIZER, InputResize(size, mode))
    model.register_forward_pre_hook(_resize_input)
    return model
