"""Weight initialisation shared by the CIFAR zoo (as in the CRD benchmark code)."""

from __future__ import annotations

import math

from torch import nn


def kaiming_init(model: nn.Module) -> None:
    """Conv: Kaiming normal (fan_out, ReLU); BN: weight 1, bias 0; Linear: bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.constant_(m.bias, 0)


def mobilenet_init(model: nn.Module) -> None:
    """MobileNetV2's init: conv N(0, sqrt(2/(k·k·C_out))), BN 1/0, Linear N(0, 0.01)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / n))
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.data.normal_(0, 0.01)
            m.bias.data.zero_()
