"""The projector + shared teacher classifier of SimKD and ATSC."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.losses import align_spatial


class Projector(nn.Module):
    """Conv1×1(C_s→C_t/f) → BN → ReLU → Conv3×3(C_t/f→C_t/f, pad 1) → BN → ReLU → Conv1×1(C_t/f→C_t) → BN → ReLU,
    convolutions without bias (SimKD / ATSC, factor f = 2)."""

    def __init__(self, c_s: int, c_t: int, factor: int = 2):
        super().__init__()
        mid = c_t // factor
        self.net = nn.Sequential(
            nn.Conv2d(c_s, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, c_t, 1, bias=False),
            nn.BatchNorm2d(c_t),
            nn.ReLU(inplace=True),
        )

    def forward(self, f_s: torch.Tensor) -> torch.Tensor:
        return self.net(f_s)


class SharedHead(nn.Module):
    """Student feature map (B, C_s, H, W) → projector → global average pool → the teacher's classifier.

    Holds its own copy of the teacher's final linear layer (`classifier`), so a checkpoint of the student +
    this head is self-contained for inference."""

    def __init__(self, c_s: int, c_t: int, teacher_classifier: nn.Linear, factor: int = 2, trainable: bool = False):
        super().__init__()
        self.projector = Projector(c_s, c_t, factor)
        self.classifier = copy.deepcopy(teacher_classifier)
        for p in self.classifier.parameters():
            p.requires_grad_(trainable)

    def project(self, f_s: torch.Tensor, f_t_size: tuple[int, int] | None = None) -> torch.Tensor:
        """proj(F_s), pooled to the teacher map's H×W when that is smaller."""
        out = self.projector(f_s)
        if f_t_size is not None and tuple(out.shape[-2:]) != tuple(f_t_size):
            out, _ = align_spatial(out, torch.empty(1, 1, *f_t_size, device=out.device))
        return out

    def classify(self, projected: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(projected, 1).flatten(1))
