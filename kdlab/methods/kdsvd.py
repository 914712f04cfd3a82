"""`kdsvd`: Lee et al., "Self-supervised Knowledge Distillation Using Singular Value Decomposition" (ECCV 2018)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kdlab.errors import ConfigError
from kdlab.losses import kdsvd
from kdlab.methods.base import register_method
from kdlab.methods.feature_base import FeatureDistiller, FeatureParams
from kdlab.typed_config import bounded


@dataclass
class KDSVDParams(FeatureParams):
    feat_weight: float = 1.0  # mdistiller's KDSVD.LOSS.FEAT_WEIGHT
    k: int = bounded(1, ge=1)  # singular vectors kept from the teacher (the student keeps k + 3)
    stages: list[str] = field(default_factory=lambda: ["stage1", "stage2", "stage3"])


@register_method("kdsvd", "KD via SVD: ce + β·RBF-kernel match of leading singular vectors across stages, β=1")
class SingularValueKD(FeatureDistiller):
    """L = CE + β·kdsvd(stage maps) (losses.kdsvd: the release's SVD of each map, sign-aligned student vectors,
    RBF kernels between consecutive stages), β = 1, k = 1. Student and teacher maps of a stage must have the same
    width (the last axis of the release's reshape, where the singular vectors live)."""

    Params = KDSVDParams

    def tap_roles(self) -> tuple[str, ...]:
        if len(self.params.stages) < 2:
            raise ConfigError("kdsvd compares consecutive stages: method.stages needs at least two")
        return tuple(self.params.stages)

    def build_extras(self, s_shapes: list[torch.Size], t_shapes: list[torch.Size]) -> None:
        for role, s, t in zip(self.params.stages, s_shapes, t_shapes):
            if s[-1] != t[-1]:
                raise ConfigError(
                    f"kdsvd matches singular vectors along the map's width: the student's {role} is {int(s[-1])} "
                    f"wide, the teacher's {int(t[-1])}"
                )

    def feature_loss(self, s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
        return kdsvd(s_feats, t_feats, self.params.k)
