"""The training loop (Trainer), its parts, schedule, checkpoints and resume."""

from kdlab.engine.schedule import LRSchedule
from kdlab.engine.trainer import Trainer, TrainingParts

__all__ = ["LRSchedule", "Trainer", "TrainingParts"]
