"""Augmentation views applied on device to uint8/float batches."""

from kdlab.views.standard import Normalize, StandardView, random_crop_flip

__all__ = ["Normalize", "StandardView", "random_crop_flip"]
