"""Mini-batches of an in-memory uint8 split, indexed on the device: no workers, no per-sample Python."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from kdlab.data.dataset import ImageSplit


@dataclass
class Batch:
    """One mini-batch: `images` uint8 (B, C, H, W), `labels` int64 (B,), `index` int64 (B,) sample ids."""

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor


class DeviceLoader:
    """Shuffled (or ordered) index batches over a split held on `device`. With `shard=(rank, world)` every
    process draws the same permutation and takes its own slice of each batch of `batch_size` (the global batch).

    The permutation is drawn from `generator` (on the split's device), so a seed fixes the order and a
    saved generator state resumes it exactly."""

    def __init__(
        self,
        split: ImageSplit,
        batch_size: int,
        device: torch.device,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator
        self.rank, self.world = shard  # this process takes its slice of every (global) batch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples seen per epoch (fewer than the split when drop_last cuts the tail)."""
        return len(self) * self.batch_size if self.drop_last else len(self.labels)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.world > 1:
                idx = idx.tensor_split(self.world)[self.rank]
            yield Batch(self.images[idx], self.labels[idx], idx)
