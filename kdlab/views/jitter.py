"""Colour jitter as torchvision's ColorJitter runs on Pillow images: brightness, contrast and saturation factors
drawn uniformly from [max(0, 1 − s), 1 + s], applied in a random order, each an ImageEnhance op (Brightness,
Contrast, Color) on the 8-bit values. Hue is not offered: the presets it serves (Guo et al., arXiv 2405.00739,
`ColorJitter(0.4, 0.4, 0.4, 0)`) leave it out."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.typed_config import bounded
from kdlab.views import image_ops
from kdlab.views.base import StrongView, ViewOutput, ViewParams, register_view
from kdlab.views.policies import to_u8

JITTER_OPS = ("brightness", "contrast", "color")  # ImageEnhance.Color is torchvision's adjust_saturation on PIL
_JITTER_INDEX = torch.tensor([image_ops.NAMES.index(n) for n in JITTER_OPS])


@dataclass
class ColorJitterParams(ViewParams):
    brightness: float = bounded(0.4, ge=0)
    contrast: float = bounded(0.4, ge=0)
    saturation: float = bounded(0.4, ge=0)


def jitter_draws(
    n: int, spreads: tuple[float, float, float], g: torch.Generator | None, device: torch.device, per_batch: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, on `device`: the factors (n, 3) float64 of brightness, contrast, saturation, uniform in
    [max(0, 1 − s), 1 + s] (1 where s = 0), and the order (n, 3) int64: order[i, j] is the op (index into
    JITTER_OPS) applied j-th."""
    k = 1 if per_batch else n
    draws = torch.rand(2, k, 3, generator=g, device=device).expand(2, n, 3).double()
    s = image_ops.device_values(spreads, torch.float64, device)
    lo = (1.0 - s).clamp_min(0.0)
    factors = lo + draws[0] * (1.0 + s - lo)
    return factors, torch.argsort(draws[1], dim=1, stable=True)


def color_jitter_u8(u: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """u uint8 (B, C, H, W) jittered in place with per-sample factors (B, 3) in `order` (B, 3), as jitter_draws
    gives them (on u's device); ops with skip (3,) True are left out (a spread of 0). Returns u (image_ops.apply:
    no host sync on an accelerator)."""
    index = image_ops.on_device(_JITTER_INDEX, u.device)
    skip = image_ops.on_device(skip, u.device)
    for slot in range(3):
        which = order[:, slot]
        op = torch.where(skip[which], -1, index[which])
        image_ops.apply(u, op, factors.gather(1, which[:, None])[:, 0])
    return u


@register_view("color_jitter")
class ColorJitter(StrongView):
    """torchvision's ColorJitter(brightness, contrast, saturation) on Pillow images, per sample (module doc)."""

    Params = ColorJitterParams
    summary = "colour jitter: brightness, contrast, saturation in random order"

    def _spreads(self) -> tuple[float, float, float]:
        p = self.params
        return (p.brightness, p.contrast, p.saturation)

    def _jitter(self, u: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        factors, order = jitter_draws(len(u), self._spreads(), g, u.device, self.params.per_batch_compat)
        skip = image_ops.device_values([s == 0 for s in self._spreads()], torch.bool, u.device)
        return color_jitter_u8(u, factors, order, skip)

    def transform_u8(self, u: torch.Tensor, g: torch.Generator | None) -> ViewOutput | None:
        return ViewOutput(self._jitter(u.clone(), g).to(torch.float32).div_(255))

    def transform(self, x: torch.Tensor, g: torch.Generator | None) -> ViewOutput:
        return ViewOutput(self._jitter(to_u8(x), g).to(x.dtype).div_(255))
