"""`ofd`: Heo et al., "A Comprehensive Overhaul of Feature Distillation" (ICCV 2019), as mdistiller releases it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.errors import ConfigError
from kdlab.losses import ofd, ofd_margin
from kdlab.methods.base import register_method
from kdlab.methods.feature_base import FeatureDistiller, FeatureParams
from kdlab.models.features import get_module
from kdlab.typed_config import bounded

STAGES = ("preact1", "preact2", "preact3")


class Connector(nn.Module):
    """OFD's connector: conv (C_s → C_t, no bias) + BatchNorm, the conv initialised N(0, 2/(k²·C_t)), the BN to
    the identity, as released."""

    def __init__(self, c_s: int, c_t: int, kernel_size: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_s, c_t, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_t)
        nn.init.normal_(self.conv.weight, 0.0, math.sqrt(2.0 / (kernel_size * kernel_size * c_t)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


@dataclass
class OFDParams(FeatureParams):
    feat_weight: float = 0.001  # mdistiller's OFD.LOSS.FEAT_WEIGHT
    kernel_size: int = bounded(1, ge=1)  # the connector's kernel (OFD.CONNECTOR.KERNEL_SIZE)


@register_method("ofd", "Overhaul of FD: ce + β·Σ_stages partial L2(connector(pre-ReLU_s), pre-ReLU_t), β=0.001")
class OverhaulFeatureDistillation(FeatureDistiller):
    """L = CE + β·Σ_i ofd(connector_i(P_s^i), pool(P_t^i), m_i) / 2^(n−1−i) over the three stages' pre-activation
    maps P (taps preact1..3; the teacher's map average-pooled to the student's size), with the margin m_i from the
    BatchNorm before the teacher's ReLU (taps preact_bn1..3; losses.ofd_margin). β = 0.001 as in mdistiller.
    The zoo declares these taps for the CIFAR ResNets and WRNs; other models name them in *.taps. The released
    code also switches the teacher to train mode (BatchNorm on batch statistics); kdlab keeps it frozen in eval."""

    Params = OFDParams

    def tap_roles(self) -> tuple[str, ...]:
        return STAGES

    def setup(self) -> None:
        for who, taps in (("student", self.student_taps), ("teacher", self.teacher(0).taps if self.teachers else {})):
            roles = STAGES + (tuple(f"preact_bn{i}" for i in (1, 2, 3)) if who == "teacher" else ())
            missing = [r for r in roles if r not in taps]
            if missing:
                raise ConfigError(
                    f"ofd needs the {who}'s pre-activation taps {missing} (the zoo declares them for the CIFAR "
                    f"ResNets and WRNs; otherwise give {who}.taps.{missing[0]}=MODULE_PATH, or PATH:in for the "
                    "input of a module)"
                )
        super().setup()

    def build_extras(self, s_shapes: list[torch.Size], t_shapes: list[torch.Size]) -> None:
        self.connectors = nn.ModuleList(
            Connector(int(s[1]), int(t[1]), self.params.kernel_size) for s, t in zip(s_shapes, t_shapes)
        )
        teacher = self.teacher(0)
        for i, t in enumerate(t_shapes):
            bn = get_module(teacher.model, teacher.taps[f"preact_bn{i + 1}"])
            if not isinstance(bn, nn.BatchNorm2d) or bn.num_features != int(t[1]):
                raise ConfigError(
                    f"the teacher's preact_bn{i + 1} tap must be the BatchNorm2d({int(t[1])}) before the stage's ReLU"
                )
            self.register_buffer(f"margin{i}", ofd_margin(bn.weight, bn.bias), persistent=False)

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"connectors": self.connectors}

    def feature_loss(self, s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
        n = len(s_feats)
        losses = []
        for i, (conn, fs, ft) in enumerate(zip(self.connectors, s_feats, t_feats)):
            s = conn(fs)
            t = F.adaptive_avg_pool2d(ft, s.shape[-2:])
            losses.append(ofd(s, t, getattr(self, f"margin{i}")) / 2 ** (n - i - 1))
        return torch.stack(losses).sum()
