"""The training loop: schedule, checkpoint/resume, metrics and logging."""

from kdlab.engine.schedule import LRSchedule
from kdlab.engine.trainer import Trainer

__all__ = ["LRSchedule", "Trainer"]
