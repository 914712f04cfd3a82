"""Augmentation views on device: the standard view x and strong views x' (registered by name)."""

from kdlab.views import jitter, mixing, pick, policies, simple  # noqa: F401  (registers the views)
from kdlab.views.base import VIEWS, MixInfo, Scorer, ScoreRequest, StrongView, ViewOutput, build_view
from kdlab.views.pipeline import TrainBatch, ViewPipeline, build_pipeline
from kdlab.views.standard import STANDARD_VIEWS, Normalize, PresetView, StandardView, random_crop_flip, to_unit

# The strong view diagnostics apply where a run has none of its own (`kdlab analyze`'s augmented test split).
REFERENCE_VIEW = "autoaugment"

__all__ = [
    "REFERENCE_VIEW",
    "STANDARD_VIEWS",
    "VIEWS",
    "MixInfo",
    "Normalize",
    "PresetView",
    "ScoreRequest",
    "Scorer",
    "StandardView",
    "StrongView",
    "TrainBatch",
    "ViewOutput",
    "ViewPipeline",
    "build_pipeline",
    "build_view",
    "random_crop_flip",
    "to_unit",
]
