"""Feature-based methods of the CRD benchmark: fitnet, at, sp, rkd, pkt, vid. Each states its paper, formula and
the CRD-benchmark weight β (RepDistiller's `-r 1 -a 0 -b β`: 1·CE + 0·KD + β·loss)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.losses import align_spatial, at, fitnet, pkt, rkd, sp, vid
from kdlab.methods.base import register_method
from kdlab.methods.feature_base import FeatureDistiller, FeatureParams, pooled


class ConvRegressor(nn.Module):
    """FitNets' regressor as in the CRD code: maps a student map (C_s, H_s) to the teacher's (C_t, H_t) with a
    stride-2 conv (H_s = 2·H_t), a transposed conv (2·H_s = H_t) or a valid conv, then BN + ReLU."""

    def __init__(self, s_shape: torch.Size, t_shape: torch.Size):
        super().__init__()
        _, cs, hs, _ = s_shape
        _, ct, ht, _ = t_shape
        if hs == 2 * ht:
            self.conv: nn.Module = nn.Conv2d(cs, ct, kernel_size=3, stride=2, padding=1)
        elif hs * 2 == ht:
            self.conv = nn.ConvTranspose2d(cs, ct, kernel_size=4, stride=2, padding=1)
        elif hs >= ht:
            self.conv = nn.Conv2d(cs, ct, kernel_size=1 + hs - ht)
        else:
            raise ValueError(f"student hint {tuple(s_shape)} is smaller than the teacher's {tuple(t_shape)}")
        self.bn = nn.BatchNorm2d(ct)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


@dataclass
class FitNetParams(FeatureParams):
    feat_weight: float = 100.0
    hint: str = "stage2"  # tap role of the hint layer (the CRD code's hint_layer=2)


@register_method("fitnet", "FitNets: ce + β·MSE(regressor(student hint), teacher hint), β=100")
class FitNet(FeatureDistiller):
    """FitNets (Romero et al., ICLR 2015): L = CE + β·‖r(F_s^hint) − F_t^hint‖² (mean), β = 100; the
    regressor r (conv + BN + ReLU) is trained with the student."""

    Params = FitNetParams

    def tap_roles(self) -> tuple[str, ...]:
        return (self.params.hint,)

    def build_extras(self, s_shapes: list[torch.Size], t_shapes: list[torch.Size]) -> None:
        self.regressor = ConvRegressor(s_shapes[0], t_shapes[0])

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"regressor": self.regressor}

    def feature_loss(self, s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
        return fitnet(self.regressor(s_feats[0]), t_feats[0])


@dataclass
class ATParams(FeatureParams):
    feat_weight: float = 1000.0
    p: float = 2.0
    stages: list[str] = field(default_factory=lambda: ["stage1", "stage2", "stage3"])


@register_method("at", "Attention transfer: ce + β·Σ_stages ‖a_s − a_t‖², β=1000, p=2")
class AttentionTransfer(FeatureDistiller):
    """AT (Zagoruyko & Komodakis, ICLR 2017): L = CE + β·Σ_j mean((a_s^j − a_t^j)²), a = normalised
    channel-mean of |F|^p over the stage outputs; β = 1000, p = 2."""

    Params = ATParams

    def tap_roles(self) -> tuple[str, ...]:
        return tuple(self.params.stages)

    def feature_loss(self, s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([at(fs, ft, self.params.p) for fs, ft in zip(s_feats, t_feats)]).sum()


@dataclass
class SPParams(FeatureParams):
    feat_weight: float = 3000.0


@register_method("sp", "Similarity preserving: ce + β·‖G_s − G_t‖²/B², β=3000")
class SimilarityPreserving(FeatureDistiller):
    """SP (Tung & Mori, ICCV 2019): match the row-normalised B×B similarity (Gram) matrices of the last
    stage's maps; L = CE + β·‖G_s − G_t‖²_F / B², β = 3000."""

    Params = SPParams

    def feature_loss(self, s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
        return sp(s_feats[0], t_feats[0])


@dataclass
class RKDParams(FeatureParams):
    feat_weight: float = 1.0
    w_dist: float = 25.0
    w_angle: float = 50.0


@register_method("rkd", "Relational KD: ce + 25·distance + 50·angle on pooled embeddings")
class RelationalKD(FeatureDistiller):
    """RKD (Park et al., CVPR 2019): L = CE + w_d·ψ_D + w_a·ψ_A on the pooled penultimate embeddings,
    w_d = 25, w_a = 50 (the CRD recipe)."""

    Params = RKDParams

    def feature_loss(self, s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
        return rkd(pooled(s_feats[0]), pooled(t_feats[0]), self.params.w_dist, self.params.w_angle)


@dataclass
class PKTParams(FeatureParams):
    feat_weight: float = 30000.0


@register_method("pkt", "Probabilistic KT: ce + β·KL of cosine-similarity distributions, β=30000")
class ProbabilisticKT(FeatureDistiller):
    """PKT (Passalis & Tefas, ECCV 2018): L = CE + β·KL(P_t ‖ P_s) of the batch's cosine-similarity
    distributions of pooled embeddings, β = 30000."""

    Params = PKTParams

    def feature_loss(self, s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
        return pkt(pooled(s_feats[0]), pooled(t_feats[0]))


class VIDRegressor(nn.Module):
    """VID's per-stage predictor as in the CRD code: 1×1 conv → ReLU → 1×1 conv → ReLU → 1×1 conv (C_s → C_t,
    hidden C_t), and a per-channel variance σ² = softplus(α) + ε initialised to `init_var`."""

    def __init__(self, c_s: int, c_t: int, init_var: float = 5.0, eps: float = 1e-5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_s, c_t, 1, bias=False), nn.ReLU(),
            nn.Conv2d(c_t, c_t, 1, bias=False), nn.ReLU(),
            nn.Conv2d(c_t, c_t, 1, bias=False),
        )  # fmt: skip
        self.eps = eps
        self.log_scale = nn.Parameter(torch.full((c_t,), math.log(math.expm1(init_var - eps))))

    def forward(self, f_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(f_s), F.softplus(self.log_scale) + self.eps


@dataclass
class VIDParams(FeatureParams):
    feat_weight: float = 1.0
    init_var: float = 5.0
    stages: list[str] = field(default_factory=lambda: ["stage1", "stage2", "stage3"])


@register_method("vid", "VID: ce + β·Σ_stages Gaussian NLL of F_t under a predictor of F_s, β=1")
class VariationalInformationDistillation(FeatureDistiller):
    """VID (Ahn et al., CVPR 2019): maximise a variational lower bound of I(F_t; F_s) with a Gaussian
    q(F_t | F_s) = N(μ(F_s), σ²) per stage; L = CE + β·Σ_j mean(½((F_t − μ)²/σ² + log σ²)), β = 1 (CRD
    benchmark), σ² initialised to 5. Maps of different sizes are aligned by adaptive average pooling."""

    Params = VIDParams

    def tap_roles(self) -> tuple[str, ...]:
        return tuple(self.params.stages)

    def build_extras(self, s_shapes: list[torch.Size], t_shapes: list[torch.Size]) -> None:
        self.regressors = nn.ModuleList(
            VIDRegressor(int(s[1]), int(t[1]), self.params.init_var) for s, t in zip(s_shapes, t_shapes)
        )

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"regressors": self.regressors}

    def feature_loss(self, s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
        losses = []
        for reg, fs, ft in zip(self.regressors, s_feats, t_feats):
            fs, ft = align_spatial(fs, ft)
            mean, var = reg(fs)
            losses.append(vid(mean, var, ft))
        return torch.stack(losses).sum()
