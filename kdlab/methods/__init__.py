"""Training methods (Distillers), registered by name."""

from kdlab.methods import atsc, ce, crd, feature_methods, kd, logit_methods, simkd  # noqa: F401
from kdlab.methods.base import METHODS, Distiller, Teacher, build_method

__all__ = ["METHODS", "Distiller", "Teacher", "build_method"]
