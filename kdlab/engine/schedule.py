"""Learning-rate schedules as a pure function of (fractional) epoch."""

from __future__ import annotations

import bisect
import math

from kdlab.config import ScheduleConfig


class LRSchedule:
    """lr(epoch) for multistep / cosine / constant schedules with linear warm-up.

    The epoch factor k multiplies epochs, milestones and warm-up ("longer training")."""

    def __init__(self, cfg: ScheduleConfig, base_lr: float):
        k = cfg.epoch_factor
        self.kind = cfg.kind
        self.base_lr = base_lr
        self.epochs = max(1, round(cfg.epochs * k))
        self.milestones = [round(m * k) for m in cfg.milestones]
        self.gamma = cfg.gamma
        self.warmup = cfg.warmup_epochs * k
        self.min_lr = cfg.min_lr

    def __call__(self, epoch: float) -> float:
        """Learning rate at `epoch` (0-based, fractional within an epoch)."""
        if self.warmup > 0 and epoch < self.warmup:
            return self.base_lr * (epoch + 1e-3) / self.warmup
        if self.kind == "multistep":
            return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, math.floor(epoch))
        if self.kind == "cosine":
            span = max(self.epochs - self.warmup, 1e-8)
            progress = min(max((epoch - self.warmup) / span, 0.0), 1.0)
            return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress))
        return self.base_lr
