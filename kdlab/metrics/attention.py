"""Class-agnostic CAM attention masks and their intersection-over-union between models (Guo et al., "Why does
Knowledge Distillation work? Rethink its attention and fidelity mechanism", arXiv 2405.00739)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_summed_map(feature_map: torch.Tensor, fc_weight: torch.Tensor) -> torch.Tensor:
    """The final linear layer fc_weight (K, C) applied as a 1×1 convolution to feature_map (B, C, h, w) and
    summed over the K classes → (B, h, w). (The bias adds a constant per image; normalisation removes it.)"""
    return torch.einsum("bchw,c->bhw", feature_map.float(), fc_weight.float().sum(0))


def class_agnostic_cam(
    feature_map: torch.Tensor, fc_weight: torch.Tensor, size: tuple[int, int], threshold: float | None = 0.4
) -> torch.Tensor:
    """Class-agnostic CAM of a batch (Guo et al., arXiv 2405.00739): `class_summed_map` of the last stage's map
    (B, C, h, w) before
    global pooling and the final linear layer's weight (K, C), then `normalize_cam`."""
    return normalize_cam(class_summed_map(feature_map, fc_weight), size, threshold)


def normalize_cam(summed: torch.Tensor, size: tuple[int, int], threshold: float | None = 0.4) -> torch.Tensor:
    """(B, h, w) class-summed map → bilinear upsample to `size` (H, W) → min–max per image to [0, 1].
    Returns the map (B, H, W), or with `threshold` the boolean mask map ≥ threshold."""
    cam = F.interpolate(summed.float()[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = cam.flatten(1).min(1).values[:, None, None]
    hi = cam.flatten(1).max(1).values[:, None, None]
    cam = (cam - lo) / (hi - lo).clamp_min(1e-12)
    return cam if threshold is None else cam >= threshold


def iou_counts(*masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of two or more boolean masks (B, H, W): the pixels in all of them and in any of them, int64
    (B,) each (iou() of a batch is their sums' ratio)."""
    inter, union = masks[0].clone(), masks[0].clone()
    for m in masks[1:]:
        inter &= m
        union |= m
    return inter.flatten(1).sum(1), union.flatten(1).sum(1)


def batch_iou(inter: torch.Tensor, union: torch.Tensor, batch: int, weighted: bool) -> float:
    """IoU pooled within consecutive batches of `batch` images (a batch with an empty union counts 1), then
    averaged over the batches: plainly (kdlab) or weighted by batch size (Guo et al.'s release, whose last
    batch is smaller). inter, union: (N,) from iou_counts."""
    ratios, sizes = [], []
    for start in range(0, len(inter), batch):
        i, u = int(inter[start : start + batch].sum()), int(union[start : start + batch].sum())
        ratios.append(1.0 if u == 0 else i / u)
        sizes.append(min(batch, len(inter) - start))
    if not ratios:
        return float("nan")
    if weighted:
        return sum(r * n for r, n in zip(ratios, sizes, strict=True)) / sum(sizes)
    return sum(ratios) / len(ratios)


def iou(*masks: torch.Tensor) -> float:
    """Intersection over union of two or more boolean masks (B, H, W), pooled over the batch:
    Σ(A1 ∧ A2 ∧ …) / Σ(A1 ∨ A2 ∨ …). Two empty masks have IoU 1."""
    inter, union = iou_counts(*masks)
    return batch_iou(inter, union, max(1, len(inter)), weighted=False)
