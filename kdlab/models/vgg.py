"""VGG with batch norm as in the CRD benchmark (vgg8, vgg11, vgg13, vgg16, vgg19), same parameter names."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.models.init import kaiming_init
from kdlab.models.registry import register

CFG = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _block(widths: list[int], in_channels: int) -> nn.Sequential:
    """conv3×3(bias)+BN+ReLU per width, without the final ReLU (applied by the caller, as in CRD)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [
            nn.Conv2d(in_channels, w, kernel_size=3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
        ]
        in_channels = w
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """Five conv blocks; max-pool after blocks 0–2 (and 3 for 64×64 inputs), global average pool, linear."""

    def __init__(self, cfg: list[list[int]], num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        self.block0 = _block(cfg[0], in_channels)
        self.block1 = _block(cfg[1], cfg[0][-1])
        self.block2 = _block(cfg[2], cfg[1][-1])
        self.block3 = _block(cfg[3], cfg[2][-1])
        self.block4 = _block(cfg[4], cfg[3][-1])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.final_relu = nn.ReLU()  # parameter-free: gives the pre-pool map a module to tap
        self.classifier = nn.Linear(512, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        x = self.pool0(F.relu(self.block0(x)))
        x = self.pool1(F.relu(self.block1(x)))
        x = self.pool2(F.relu(self.block2(x)))
        x = F.relu(self.block3(x))
        if h == 64:
            x = self.pool3(x)
        x = self.final_relu(self.block4(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


_TAPS = {"stage1": "block1", "stage2": "block2", "stage3": "block3", "stage4": "block4",
         "feature": "final_relu", "classifier": "classifier"}  # fmt: skip


def _vgg(cfg: list[list[int]]) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int = 3) -> nn.Module:
        return VGG(cfg, num_classes, in_channels)

    return build


for _name, _cfg in CFG.items():
    register(_name, "vgg", _TAPS)(_vgg(_cfg))
