"""Datasets as in-memory uint8 tensors, their readers and caches, and the on-device batch loader."""

from kdlab.data.dataset import ImageDataset, ImageSplit
from kdlab.data.loader import Batch, DeviceLoader
from kdlab.data.spec import load_dataset

__all__ = ["Batch", "DeviceLoader", "ImageDataset", "ImageSplit", "load_dataset"]
