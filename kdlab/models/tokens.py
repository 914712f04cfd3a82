"""Vision transformers' token sequences as feature maps, for the methods that read maps.

A ViT block outputs tokens (B, N, C): its prefix tokens (class, distillation, register tokens) and then one token
per image patch, row by row. Where a method needs a spatial map, the patch tokens become (B, C, h, w) on the
model's patch grid and the prefix tokens are dropped, as ViTKD (Yang et al., arXiv 2209.02432) and OFA-KD (Hao et
al., "One-for-All: Bridge the Gap Between Heterogeneous Architectures in Knowledge Distillation", NeurIPS 2023)
read ViT features. timm's ViT family (`num_prefix_tokens`, `patch_embed`, `blocks`) and torchvision's
`VisionTransformer` (one class token, `encoder.layers`) are recognised; other models are left as they are."""

from __future__ import annotations

import math

import torch
from torch import nn

from kdlab.errors import ModelError


def token_layout(model: nn.Module) -> tuple[int, tuple[int, int] | None] | None:
    """(prefix tokens, patch grid (h, w) or None when the model sizes it per input) of a ViT-style model; None for
    a model without tokens."""
    patch_embed = getattr(model, "patch_embed", None)
    if isinstance(getattr(model, "num_prefix_tokens", None), int) and isinstance(patch_embed, nn.Module):
        grid = getattr(patch_embed, "grid_size", None)
        dynamic = getattr(patch_embed, "dynamic_img_size", False) or getattr(model, "dynamic_img_size", False)
        return model.num_prefix_tokens, (tuple(int(g) for g in grid) if grid and not dynamic else None)  # type: ignore[return-value]
    if type(model).__name__ == "VisionTransformer" and hasattr(model, "class_token") and hasattr(model, "encoder"):
        side = int(getattr(model, "image_size")) // int(getattr(model, "patch_size"))  # noqa: B009 (ints, not modules)
        return 1, (side, side)
    return None


def token_blocks(model: nn.Module) -> list[str]:
    """Module paths of a ViT's transformer blocks, in order (timm `blocks.i`, torchvision
    `encoder.layers.encoder_layer_i`)."""
    for container in ("blocks", "encoder.layers"):
        try:
            blocks = model.get_submodule(container)
        except AttributeError:
            continue
        return [f"{container}.{name}" for name, _ in blocks.named_children()]
    return []


def tokens_to_map(x: torch.Tensor, prefix: int, grid: tuple[int, int] | None) -> torch.Tensor:
    """Tokens (B, N, C) → patch map (B, C, h, w): the last h·w tokens on the patch grid (the `prefix` class /
    distillation / register tokens before them dropped; a sequence without them, e.g. the patch embedding's, is
    taken whole). Without a known grid the patches must form a square."""
    n = x.shape[1]
    for drop in (prefix, 0):
        m = n - drop
        if grid is not None and grid[0] * grid[1] == m:
            h, w = grid
            break
        side = math.isqrt(max(m, 0))
        if grid is None and m > 0 and side * side == m:
            h = w = side
            break
    else:
        raise ModelError(f"cannot lay {n} tokens ({prefix} prefix) out on the patch grid {grid or 'square'}")
    return x[:, n - h * w :].transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
