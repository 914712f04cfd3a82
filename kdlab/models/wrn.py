"""Wide ResNets of the CRD benchmark (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2), same parameter names."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.models.init import kaiming_init
from kdlab.models.registry import register


class WideBasicBlock(nn.Module):
    """Pre-activation block; a 1×1 `convShortcut` when the width changes."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(pre)
        return shortcut + out


class NetworkBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k for 32×32 inputs: depth = 6n+4."""

    def __init__(self, depth: int, widen: int, num_classes: int = 10, in_channels: int = 3, drop_rate: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError("WideResNet depth must be 6n+4")
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# Pre-activation blocks: a stage's output is already its pre-activation (preactN); the last one's is the final
# BatchNorm's output, taken as the input of the ReLU after it; preact_bnN is the BatchNorm before that ReLU.
_TAPS = {"stage1": "block1", "stage2": "block2", "stage3": "block3", "feature": "relu", "classifier": "fc",
         "preact1": "block1", "preact2": "block2", "preact3": "relu:in",
         "preact_bn1": "block2.layer.0.bn1", "preact_bn2": "block3.layer.0.bn1", "preact_bn3": "bn1"}  # fmt: skip


def _wrn(depth: int, widen: int) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int = 3) -> nn.Module:
        return WideResNet(depth, widen, num_classes, in_channels)

    return build


for _d, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    register(f"wrn_{_d}_{_k}", "wrn", _TAPS)(_wrn(_d, _k))
