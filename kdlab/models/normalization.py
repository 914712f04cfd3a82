"""A model's own input normalisation: the preprocessing it was trained with, when it is not the dataset's.

kdlab normalises every batch once with the dataset's statistics (views/pipeline.py). A model that declares its
own (`teacher.normalize={mean: […], std: […]}`, or `none` for [0, 1] input) gets a forward pre-hook that maps
the dataset-normalised input to its own, one per-channel affine on the device:
x_own = (x01 − m_own) / s_own with x01 = x_ds·s_ds + m_ds, i.e. x_own = x_ds·(s_ds / s_own) + (m_ds − m_own) / s_own.
The hook's constants are non-persistent buffers of a child module: they follow the model to its device and stay
out of its state dict, so checkpoints and feature taps are unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from kdlab.config import InputNorm
from kdlab.errors import ConfigError

ADAPTER = "kdlab_input_norm"  # the child module's name on an adapted model


class InputAdapter(nn.Module):
    """Dataset-normalised images (B, C, H, W) → the model's own normalisation (module doc)."""

    def __init__(self, own: InputNorm, data_mean: Sequence[float], data_std: Sequence[float]):
        super().__init__()
        m_ds, s_ds = torch.tensor(data_mean, dtype=torch.float64), torch.tensor(data_std, dtype=torch.float64)
        m, s = torch.tensor(own.mean, dtype=torch.float64), torch.tensor(own.std, dtype=torch.float64)
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("scale", (s_ds / s).float().view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", ((m_ds - m) / s).float().view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift.to(x.dtype), x, self.scale.to(x.dtype))


def _adapt_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (getattr(module, ADAPTER)(args[0]), *args[1:])


def attach_input_norm(
    model: nn.Module, own: InputNorm | None, data_mean: Sequence[float], data_std: Sequence[float]
) -> nn.Module:
    """Make `model`, which will be fed images normalised with the dataset's data_mean/data_std, see them
    normalised its own way (`own`; None: nothing to do). Returns the model."""
    if own is None:
        return model
    if hasattr(model, ADAPTER):
        raise ConfigError("the model already has an input normalisation attached")
    model.add_module(ADAPTER, InputAdapter(own, data_mean, data_std))
    model.register_forward_pre_hook(_adapt_input)
    return model


def effective_norm(own: InputNorm | None, data_mean: Sequence[float], data_std: Sequence[float]) -> InputNorm:
    """The normalisation the model actually sees: its own, else the dataset's."""
    return own if own is not None else InputNorm(tuple(data_mean), tuple(data_std))
