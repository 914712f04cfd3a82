"""Distillation losses as pure functions: tensors in, scalar out."""

from kdlab.losses.logit import cross_entropy, kd

__all__ = ["cross_entropy", "kd"]
