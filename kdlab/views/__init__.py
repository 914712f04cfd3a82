"""Augmentation views on device: the standard view x and strong views x' (registered by name)."""

from kdlab.views import mixing, pick, policies, simple  # noqa: F401  (registers the views)
from kdlab.views.base import VIEWS, MixInfo, StrongView, ViewOutput, build_view
from kdlab.views.pipeline import TrainBatch, ViewPipeline
from kdlab.views.standard import STANDARD_VIEWS, Normalize, StandardView, random_crop_flip, to_unit

__all__ = [
    "STANDARD_VIEWS",
    "VIEWS",
    "MixInfo",
    "Normalize",
    "StandardView",
    "StrongView",
    "TrainBatch",
    "ViewOutput",
    "ViewPipeline",
    "build_view",
    "random_crop_flip",
    "to_unit",
]
