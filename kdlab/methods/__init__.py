"""Training methods (Distillers), registered by name: importing a method's module registers it."""

from kdlab.methods import (  # noqa: F401
    atsc,
    ce,
    crd,
    ctkd,
    deit,
    dist,
    dkd,
    feature_methods,
    kd,
    kdsvd,
    mlkd,
    nst,
    ofd,
    reviewkd,
    simkd,
    ttm,
    wttm,
)
from kdlab.methods.base import METHODS, Distiller, Teacher, build_method

__all__ = ["METHODS", "Distiller", "Teacher", "build_method"]
