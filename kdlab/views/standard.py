"""The standard view x: per-sample random crop with zero padding + horizontal flip, and normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.views.base import ViewOutput, build_view


def crop_flip(
    images: torch.Tensor, padding: int, offsets: torch.Tensor | None, flipped: torch.Tensor | None
) -> torch.Tensor:
    """Crop each sample of the zero-padded batch at its (dy, dx) offset and mirror it where `flipped`.

    images: (B, C, H, W) any dtype; offsets: int (B, 2) in [0, 2·padding] or None; flipped: bool (B,) or None.
    Returns (B, C, H, W), same dtype. Crop and mirror are one gather from the padded batch: output pixel (y, x)
    of sample b reads padded row y + dy_b, column dx_b + x (or dx_b + W − 1 − x when mirrored), the index shared
    by the channels (2–4× the strided-window copy followed by a full-size flip and select)."""
    b, c, h, w = images.shape
    if (padding == 0 or offsets is None) and flipped is None:
        return images
    dev = images.device
    xs = torch.arange(w, device=dev)
    col = xs.expand(b, w) if flipped is None else torch.where(flipped[:, None], w - 1 - xs, xs)  # (B, W)
    row = torch.arange(h, device=dev).expand(b, h)  # (B, H)
    src = images
    if padding > 0 and offsets is not None:
        src = F.pad(images, (padding, padding, padding, padding))
        col = col + offsets[:, 1:2]
        row = row + offsets[:, 0:1]
    hp, wp = src.shape[-2:]
    index = (row[:, :, None] * wp + col[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return src.reshape(b, c, hp * wp).gather(2, index).view(b, c, h, w)


def random_crop_flip(
    images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator | None = None, per_batch: bool = False
) -> torch.Tensor:
    """Per-sample RandomCrop(H×W, padding) + RandomHorizontalFlip(0.5).

    images: (B, C, H, W) of any dtype; returns the same shape and dtype. Each sample draws its own offsets
    (uniform in [0, 2·padding]) and flip; with `per_batch` one draw is shared by the whole batch."""
    if padding == 0 and not flip:
        return images
    b, dev = images.shape[0], images.device
    n = 1 if per_batch else b
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=dev) if padding > 0 else None
    flipped = torch.rand(n, generator=generator, device=dev) < 0.5 if flip else None
    if per_batch:
        offsets = offsets.expand(b, 2) if offsets is not None else None
        flipped = flipped.expand(b) if flipped is not None else None
    return crop_flip(images, padding, offsets, flipped)


class Normalize(nn.Module):
    """Float images in [0, 1] (B, C, H, W) → (x − mean) / std per channel. Mean/std are in [0, 1] units."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("scale", 1.0 / s, persistent=False)
        self.register_buffer("shift", -m / s, persistent=False)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x01.float(), self.scale)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) → float32 in [0, 1]."""
    return images.float().mul_(1.0 / 255.0) if images.dtype == torch.uint8 else images.float()


STANDARD_VIEWS = ("crop_flip", "weak", "strong", "none")
PRESET_FAMILIES = ("auto", "cifar", "imagenet")


def preset_family(family: str, image_size: int) -> str:
    """`cifar` or `imagenet`: `auto` is cifar for images ≤ 32 px, imagenet otherwise."""
    if family not in PRESET_FAMILIES:
        from kdlab.errors import ConfigError

        raise ConfigError(f"views.preset_family must be one of {', '.join(PRESET_FAMILIES)}; got {family!r}")
    return family if family != "auto" else ("cifar" if image_size <= 32 else "imagenet")


def guo_preset(kind: str, family: str, image_size: int, mean: Sequence[float] | None = None) -> nn.Sequential:
    """The `weak` or `strong` training transform released with Guo et al., "Why does Knowledge Distillation
    work? Rethink its attention and fidelity mechanism" (arXiv 2405.00739), on float [0, 1] images (B, C, S, S):

    - cifar weak: RandomResizedCrop(scale 0.2–1, bicubic) + flip + rotation ±15°;
    - cifar strong: RandomResizedCrop(0.2–1, bicubic) + flip + AutoAugment's CIFAR10 policy as the Pillow
      implementation it used (grey fill, fractional translations, corner shears) + Cutout (black, as applied
      before normalisation; 16 px at 224, scaled with the image), no rotation;
    - imagenet weak: RandomResizedCrop(0.08–1) + flip + ColorJitter(0.4, 0.4, 0.4);
    - imagenet strong: the weak transform, then timm's RandAugment `rand-n2-m10-mstd0.5` filled with the
      dataset mean."""
    try:
        import kornia.augmentation as K
    except ImportError:
        from kdlab.errors import ConfigError

        raise ConfigError(
            f"views.standard={kind} (its crop, flip and rotation) needs kornia: pip install kornia"
        ) from None

    family = preset_family(family, image_size)
    size = (image_size, image_size)
    if family == "cifar":
        ops: list[nn.Module] = [
            K.RandomResizedCrop(size, scale=(0.2, 1.0), resample="bicubic"),
            K.RandomHorizontalFlip(),
        ]
        if kind == "weak":
            ops.append(K.RandomRotation(15.0, p=1.0))
        else:
            ops.append(_ViewAsOp(build_view("autoaugment", {"policy": "cifar10", "ops": "pillow"}, image_size)))
            hole = max(1, round(16 * image_size / 224))
            ops.append(_ViewAsOp(build_view("cutout", {"size": hole, "ops": "pillow"}, image_size)))
        return nn.Sequential(*ops)
    ops = [
        K.RandomResizedCrop(size, scale=(0.08, 1.0)),
        K.RandomHorizontalFlip(),
        _ViewAsOp(build_view("color_jitter", {}, image_size)),
    ]
    if kind == "strong":
        timm = {"scale": "timm", "n": 2, "m": 10, "mstd": 0.5}
        ops.append(_ViewAsOp(build_view("randaugment", timm, image_size, mean)))
    return nn.Sequential(*ops)


class StandardView(nn.Module):
    """uint8 batch → float [0, 1] batch with the standard training augmentation (none in eval mode).

    kinds: `crop_flip` — per-sample RandomCrop(padding) + flip (the CRD protocol); `weak` / `strong` — the
    presets released with Guo et al. (arXiv 2405.00739), their CIFAR or ImageNet transforms by `family`
    (guo_preset); `none`."""

    def __init__(
        self,
        kind: str = "crop_flip",
        image_size: int = 32,
        padding: int = 4,
        flip: bool = True,
        mean: Sequence[float] | None = None,
        family: str = "auto",
    ):
        super().__init__()
        if kind not in STANDARD_VIEWS:
            from kdlab.errors import ConfigError

            raise ConfigError(f"views.standard must be one of {', '.join(STANDARD_VIEWS)}; got {kind!r}")
        self.kind = kind
        self.padding = padding
        self.flip = flip
        self.ops: nn.Module | None = None
        if kind in ("weak", "strong"):
            self.ops = guo_preset(kind, family, image_size, mean)

    def _pixel_view(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor | None:
        """The view where it only moves pixels (`crop_flip`, `none`, eval mode), in the input's dtype; None for
        the `weak`/`strong` presets in training."""
        if not self.training or self.kind == "none":
            return images
        if self.kind == "crop_flip":
            return random_crop_flip(images, self.padding, self.flip, generator)
        return None

    def forward_u8(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The view as uint8 (B, C, H, W) where it stays on the 8-bit values (`crop_flip`, `none`, eval mode) and
        the input is uint8; None otherwise. forward() is to_unit() of it, drawing the same random numbers."""
        return self._pixel_view(images, generator) if images.dtype == torch.uint8 else None

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        moved = self._pixel_view(images, generator)
        if moved is not None:
            return to_unit(moved)
        assert self.ops is not None
        return self.ops(to_unit(images)).clamp_(0, 1)


class PresetView(nn.Module):
    """A standard preset (`weak`, `strong`) used where a strong view is expected (e.g. `kdlab analyze --view
    strong`): float (B, C, H, W) in [0, 1] → ViewOutput, always augmenting."""

    def __init__(self, kind: str, image_size: int, mean: Sequence[float] | None = None, family: str = "auto"):
        super().__init__()
        self.preset = StandardView(kind, image_size, mean=mean, family=family).train()

    def train(self, mode: bool = True) -> PresetView:
        super().train(mode)
        self.preset.train()  # a preset used as a view augments whatever the caller's mode
        return self

    def forward(self, x: torch.Tensor, g: torch.Generator | None = None) -> ViewOutput:
        return ViewOutput(self.preset(x, g))


class _ViewAsOp(nn.Module):
    """Wrap a strong view (x → ViewOutput) as a plain image op inside a standard preset."""

    def __init__(self, view: nn.Module):
        super().__init__()
        self.view = view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.view(x).images
