"""Training methods (Distillers), registered by name: importing a method's module registers it."""

from kdlab.methods import atsc, ce, crd, dist, dkd, feature_methods, kd, simkd, ttm  # noqa: F401
from kdlab.methods.base import METHODS, Distiller, Teacher, build_method

__all__ = ["METHODS", "Distiller", "Teacher", "build_method"]
