"""The one in-memory dataset form every reader produces: uint8 N×C×H×W images, int64 labels, class names."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdlab.errors import DataError


def first_per_class_mask(labels: torch.Tensor, k: int, num_classes: int) -> torch.Tensor:
    """Boolean mask (N,) of the first k samples of every class among int labels (N,)."""
    keep = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(num_classes):
        keep[torch.nonzero(labels == c).flatten()[:k]] = True
    return keep


@dataclass
class ImageSplit:
    """One split: `images` uint8 (N, C, H, W), `labels` int64 (N,) with values in [0, num_classes)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"images must be uint8 N×C×H×W, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise DataError(f"{len(self.images)} images but labels of shape {tuple(self.labels.shape)}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def first_per_class(self, k: int, num_classes: int) -> ImageSplit:
        """The first k samples of every class, in stored order (a deterministic subset for small runs)."""
        keep = first_per_class_mask(self.labels, k, num_classes)
        return ImageSplit(self.images[keep], self.labels[keep])


@dataclass
class ImageDataset:
    """Train and test splits with class names and per-channel mean/std of the training images (in [0, 1])."""

    name: str
    train: ImageSplit
    test: ImageSplit
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for split_name, split in (("train", self.train), ("test", self.test)):
            if len(split) == 0:
                raise DataError(f"dataset {self.name}: the {split_name} split is empty")
            top = int(split.labels.max())
            if top >= len(self.classes) or int(split.labels.min()) < 0:
                raise DataError(
                    f"dataset {self.name}: {split_name} label {top} outside the {len(self.classes)} classes"
                )
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise DataError(
                f"dataset {self.name}: train images are {tuple(self.train.images.shape[1:])} but test images "
                f"are {tuple(self.test.images.shape[1:])}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images scaled to [0, 1], in float64 chunks."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (total_sq / n - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
