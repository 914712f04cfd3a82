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


class IndexBatches:
    """Shuffled (or ordered) index batches over `labels` (N,) on `device`. With `shard=(rank, world)` every
    process draws the same permutation and takes its own slice of each batch of `batch_size` (the global batch).

    The permutation is drawn from `generator` (on `device`), so a seed fixes the order and a saved generator
    state resumes it exactly. Subclasses turn each index batch into a Batch of images."""

    def __init__(
        self,
        labels: torch.Tensor,
        batch_size: int,
        device: torch.device,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator
        self.rank, self.world = shard

    def close(self) -> None:
        """Release what iterating holds between passes (a streaming loader's workers); nothing here."""

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples seen per epoch, all processes together (fewer than the split when drop_last cuts the tail)."""
        return len(self) * self.batch_size if self.drop_last else len(self.labels)

    def index_batches(self) -> list[torch.Tensor]:
        """This epoch's index batches (this process's slices), drawing the permutation now."""
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        batches = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))]
        return [b.tensor_split(self.world)[self.rank] for b in batches] if self.world > 1 else batches

    def __iter__(self) -> Iterator[Batch]:
        raise NotImplementedError


class DeviceLoader(IndexBatches):
    """Batches of an in-memory split held on `device` (see IndexBatches for order and sharding)."""

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
        super().__init__(split.labels, batch_size, device, shuffle, drop_last, generator, shard)
        self.images = split.images.to(device)

    def __iter__(self) -> Iterator[Batch]:
        for idx in self.index_batches():
            yield Batch(self.images[idx], self.labels[idx], idx)
