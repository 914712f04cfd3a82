"""The model registry: zoo models by name, each with its default feature taps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from kdlab.errors import ModelError
from kdlab.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry. `build(num_classes, in_channels)` returns the module; `taps` maps roles to module paths:
    `feature` (the last stage's map before global pooling), `classifier` (the final linear layer) and
    `stage1`… (stage outputs)."""

    name: str
    build: Callable[..., nn.Module]
    taps: dict[str, str]
    family: str
    notes: str = field(default="")


MODELS: Registry[ModelSpec] = Registry("model", ModelError)


def register(name: str, family: str, taps: dict[str, str]) -> Callable[[Callable[..., nn.Module]], Callable]:
    """Register `build(num_classes, in_channels) -> nn.Module` under `name` with its taps."""

    def decorate(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(name, ModelSpec(name, build, dict(taps), family))
        return build

    return decorate


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs: object) -> nn.Module:
    """Build zoo model `name` for `num_classes` classes and `in_channels` input channels."""
    spec = MODELS.get(name)
    return spec.build(num_classes, in_channels, **kwargs)


def list_models() -> list[str]:
    """Names of every registered zoo model."""
    return MODELS.names()


def model_taps(name: str) -> dict[str, str]:
    """Default taps (role → module path) of zoo model `name`."""
    return dict(MODELS.get(name).taps)
