"""`nst`: Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer" (arXiv 1707.01219)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kdlab.losses import nst
from kdlab.methods.base import register_method
from kdlab.methods.feature_base import FeatureDistiller, FeatureParams


@dataclass
class NSTParams(FeatureParams):
    feat_weight: float = 50.0  # mdistiller's NST.LOSS.FEAT_WEIGHT
    stages: list[str] = field(default_factory=lambda: ["stage1", "stage2", "stage3"])


@register_method("nst", "Neuron selectivity transfer: ce + β·Σ_stages MMD² (polynomial kernel), β=50")
class NeuronSelectivityTransfer(FeatureDistiller):
    """L = CE + β·Σ_j MMD²_poly(F_s^j, F_t^j) over the stage outputs (mdistiller: every stage after the stem),
    β = 50; channels may differ, spatial sizes are aligned by pooling."""

    Params = NSTParams

    def tap_roles(self) -> tuple[str, ...]:
        return tuple(self.params.stages)

    def feature_loss(self, s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([nst(fs, ft) for fs, ft in zip(s_feats, t_feats)]).sum()
