"""Distillation losses as pure functions: tensors in, scalar out (float32)."""

from kdlab.losses.feature import align_spatial, at, attention_map, fitnet, pkt, rkd, sp, vid
from kdlab.losses.logit import cross_entropy, dist, dkd, dkd_parts, kd, logit_mse, logit_standardize

__all__ = [
    "align_spatial",
    "at",
    "attention_map",
    "cross_entropy",
    "dist",
    "dkd",
    "dkd_parts",
    "fitnet",
    "kd",
    "logit_mse",
    "logit_standardize",
    "pkt",
    "rkd",
    "sp",
    "vid",
]
