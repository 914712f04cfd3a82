"""`reviewkd`: Chen et al., "Distilling Knowledge via Knowledge Review" (CVPR 2021), as mdistiller releases it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.losses import hierarchical_context_loss
from kdlab.methods.base import linear_warmup, register_method
from kdlab.methods.feature_base import FeatureDistiller, FeatureParams
from kdlab.typed_config import bounded
from kdlab.views import TrainBatch


class AttentionBasedFusion(nn.Module):
    """ReviewKD's ABF: 1×1 conv + BN to `mid` channels; when fusing, the coarser level's output (upsampled, nearest)
    is mixed in with two sigmoid attention maps; resized (nearest) to the teacher's size; 3×3 conv + BN to the
    teacher's channels. Returns (output for the loss, the fused map passed to the next, finer level)."""

    def __init__(self, c_in: int, mid: int, c_out: int, fuse: bool):
        super().__init__()
        conv1, conv2 = nn.Conv2d(c_in, mid, 1, bias=False), nn.Conv2d(mid, c_out, 3, padding=1, bias=False)
        nn.init.kaiming_uniform_(conv1.weight, a=1)
        nn.init.kaiming_uniform_(conv2.weight, a=1)
        self.conv1 = nn.Sequential(conv1, nn.BatchNorm2d(mid))
        self.conv2 = nn.Sequential(conv2, nn.BatchNorm2d(c_out))
        self.att_conv = nn.Sequential(nn.Conv2d(mid * 2, 2, 1), nn.Sigmoid()) if fuse else None

    def forward(
        self, x: torch.Tensor, coarser: torch.Tensor | None, out_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None and coarser is not None:
            y = F.interpolate(coarser, x.shape[-2:], mode="nearest")
            z = self.att_conv(torch.cat([x, y], 1))
            x = x * z[:, :1] + y * z[:, 1:2]
        if tuple(x.shape[-2:]) != out_size:
            x = F.interpolate(x, out_size, mode="nearest")
        return self.conv2(x), x


@dataclass
class ReviewKDParams(FeatureParams):
    feat_weight: float = 1.0  # mdistiller's REVIEWKD_WEIGHT default; the pair recipes carry its per-pair weights
    warmup_epochs: float = bounded(20.0, ge=0)  # the review loss ramps linearly from 0 over these epochs
    max_mid_channels: int = bounded(512, ge=1)  # the fusion width: min(this, the student's last width)


@register_method("reviewkd", "Knowledge review: ce + warm-up·β·Σ HCL(ABF fusion of student stages, teacher pre-ReLU)")
class KnowledgeReview(FeatureDistiller):
    """The student's stage outputs (stage1..3) and pooled feature are fused from the deepest level down by
    attention-based fusion (AttentionBasedFusion), each level then matched to the teacher's pre-activation map of
    the same stage (preact1..3) and its pooled feature by the hierarchical context loss:
    L = CE + min(epoch / warmup, 1)·β·Σ_levels HCL. Channels and sizes come from probing both models (mdistiller
    configures them per pair); the fusion width is min(512, the student's last width). The warm-up reads the
    fractional epoch, as kdlab's DKD does."""

    Params = ReviewKDParams

    def tap_roles(self) -> tuple[str, ...]:
        return ("stage1", "stage2", "stage3", "feature")

    def teacher_tap_roles(self) -> tuple[str, ...]:
        return ("preact1", "preact2", "preact3", "feature")

    def build_extras(self, s_shapes: list[torch.Size], t_shapes: list[torch.Size]) -> None:
        c_in = [int(s[1]) for s in s_shapes]
        c_out = [int(t[1]) for t in t_shapes]
        mid = min(self.params.max_mid_channels, c_in[-1])
        # deepest first: the pooled feature (1×1, no fusion), then stage3, stage2, stage1
        self.abfs = nn.ModuleList(
            AttentionBasedFusion(c_in[i], mid, c_out[i], fuse=i < len(c_in) - 1) for i in reversed(range(len(c_in)))
        )
        self.out_sizes = [(1, 1)] + [(int(t[2]), int(t[3])) for t in reversed(t_shapes[:-1])]
        self._scale: float | torch.Tensor = 1.0

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"abfs": self.abfs}

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self._scale = linear_warmup(batch.epoch, self.params.warmup_epochs)
        return super().forward_train(batch)

    def feature_loss(self, s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
        levels = [*s_feats[:-1], F.adaptive_avg_pool2d(s_feats[-1], 1)][::-1]
        outs: list[torch.Tensor] = []
        coarser = None
        for abf, feat, size in zip(self.abfs, levels, self.out_sizes):
            out, coarser = abf(feat, coarser, size)
            outs.insert(0, out)
        teacher = [*t_feats[:-1], F.adaptive_avg_pool2d(t_feats[-1], 1)]
        loss = torch.stack([hierarchical_context_loss(s, t) for s, t in zip(outs, teacher)]).sum()
        return self._scale * loss
