"""Data that does not fit in memory (ImageNet: 1.28M images): an ImageFolder tree streamed from disk.

DataLoader workers decode each file and bring it to a fixed size (data/decode.py; training: RandomResizedCrop
when the file is not already that size; test: resize the shorter side to size/0.875 and centre-crop), and
yield uint8 batches (B, C, S, S). Everything after that — the standard and strong views, normalisation, the
method — is the in-memory path's code. The sample order comes from the same seeded generator as the
in-memory loader, so a folder of already-sized images (CIFAR as JPEG) gives the same batches either way."""

from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.data.dataset import ImageDataset, ImageSplit, channel_stats, first_per_class_mask
from kdlab.data.decode import decode_fixed, read_bytes, resolve_decoder
from kdlab.data.device_decode import check_device_decode, collate_encoded, decode_batch, encoded_sample
from kdlab.data.loader import Batch, IndexBatches
from kdlab.data.readers import IMAGE_SUFFIXES, SPLIT_NAMES
from kdlab.errors import DataError


@dataclass
class FileSplit:
    """One split on disk: image `files` and int64 `labels` (N,); with `spans` (N, 2) int64, sample i is the
    bytes [offset, offset + length) of files[i] (a shard of a prepared dataset: data/prepared.py)."""

    files: list[str]
    labels: torch.Tensor
    spans: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def source(self, i: int) -> str | io.BytesIO:
        """What Pillow opens for sample i: its file, or its bytes read from the shard."""
        if self.spans is None:
            return self.files[i]
        offset, length = self.spans[i].tolist()
        with open(self.files[i], "rb") as f:
            f.seek(offset)
            return io.BytesIO(f.read(length))

    def first_per_class(self, k: int, num_classes: int) -> FileSplit:
        keep = first_per_class_mask(self.labels, k, num_classes)
        idx = torch.nonzero(keep).flatten().tolist()
        spans = self.spans[keep] if self.spans is not None else None
        return FileSplit([self.files[i] for i in idx], self.labels[keep], spans)


@dataclass
class StreamingDataset:
    """Like ImageDataset, but the splits are files decoded on the fly to `channels`×`size`×`size`."""

    name: str
    train: FileSplit
    test: FileSplit
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int
    channels: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.channels, self.size, self.size

    def decoded(self, n: int, workers: int | None = None) -> ImageDataset:
        """An in-memory ImageDataset of up to `n` evenly spaced samples per split (every class represented),
        decoded with the test crop: what `kdlab analyze` and `kdlab tstddev` measure a streamed run on."""
        splits = []
        for split in (self.train, self.test):
            idx = torch.linspace(0, len(split) - 1, min(n, len(split))).round().long().unique()
            spans = split.spans[idx] if split.spans is not None else None
            part = FileSplit([split.files[i] for i in idx.tolist()], split.labels[idx].clone(), spans)
            loader = StreamingLoader(self, part, 256, torch.device("cpu"), shuffle=False, train=False,
                                     workers=workers if workers is not None else default_workers())  # fmt: skip
            splits.append(ImageSplit(torch.cat([b.images for b in loader]), part.labels))
            loader.close()
        return ImageDataset(self.name, splits[0], splits[1], self.classes, self.mean, self.std)


def index_image_tree(root: Path) -> tuple[list[str], FileSplit, FileSplit]:
    """Class names and the files of `root/{train,test|val}/<class>/*` (a folder; sorted like the in-memory
    reader: classes by name, files by name within a class)."""
    if not root.is_dir():
        raise DataError(f"streaming reads an image folder; {root} is not one (extract an archive first)")
    per_split: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in SPLIT_NAMES):
        split = SPLIT_NAMES[split_dir.name.lower()]
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            files = sorted(f.name for f in class_dir.iterdir() if f.name.lower().endswith(IMAGE_SUFFIXES))
            if not files:
                raise DataError(f"class folder {class_dir} has no images; add images or remove the folder")
            per_split[split][class_dir.name] = [str(class_dir / f) for f in files]
    if not per_split["train"] or not per_split["test"]:
        raise DataError(f"{root} needs train/<class>/* and test/<class>/* (or val/) image folders")
    classes = sorted(per_split["train"])
    if sorted(per_split["test"]) != classes:
        raise DataError(f"{root}: train and test class folders differ")
    splits = []
    for split in ("train", "test"):
        files = [f for c in classes for f in per_split[split][c]]
        labels = torch.tensor([i for i, c in enumerate(classes) for _ in per_split[split][c]], dtype=torch.long)
        splits.append(FileSplit(files, labels))
    return classes, splits[0], splits[1]


class _Files(torch.utils.data.Dataset):
    """Sample (i, epoch_seed) of `split` → (uint8 (C, S, S), label, i); the crop's randomness comes from the
    seed of the epoch the sampler hands over with the index, so workers can live across epochs."""

    def __init__(self, split: FileSplit, size: int, channels: int, train: bool, decoder: str):
        self.split, self.size, self.channels, self.train, self.decoder = split, size, channels, train, decoder

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Any, ...]:
        i, epoch_seed = item
        rng = random.Random(epoch_seed * 1_000_003 + i) if self.train else None
        source = self.split.source(i)
        if self.decoder == "gpu":  # bytes and crop box only: the device decodes (data/device_decode.py)
            where = source if isinstance(source, str) else "of a prepared shard"
            return (*encoded_sample(read_bytes(source), where, self.size, rng), int(self.split.labels[i]), i)
        img = decode_fixed(source, self.size, self.channels, rng, self.decoder)
        return torch.from_numpy(img), int(self.split.labels[i]), i


class _EpochOrder:
    """A batch sampler holding the current epoch's batches of (index, epoch seed); set before each pass."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _collate(items: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, labels, index = zip(*items, strict=True)
    return torch.stack(images), torch.tensor(labels), torch.tensor(index)


class StreamingLoader(IndexBatches):
    """DeviceLoader's interface over files: the same seeded order (and rank slices), uint8 batches decoded by
    `workers` DataLoader processes, moved to `device`. The workers start on the first pass and stay for the
    next ones (no start-up per epoch) until `close()` or the loader is dropped."""

    def __init__(
        self,
        data: StreamingDataset,
        split: FileSplit,
        batch_size: int,
        device: torch.device,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        shard: tuple[int, int] = (0, 1),
        workers: int = 4,
        train: bool = True,
        decoder: str = "auto",
    ):
        super().__init__(split.labels, batch_size, device, shuffle, drop_last, generator, shard)
        self.data, self.split, self.workers, self.train = data, split, workers, train
        self.decoder = resolve_decoder(decoder)
        if self.decoder == "gpu":
            check_device_decode(device)
        self._order = _EpochOrder()
        self._loader: torch.utils.data.DataLoader | None = None

    def __iter__(self) -> Iterator[Batch]:
        batches = [b.tolist() for b in self.index_batches()]
        # Crops are drawn in the workers from a seed taken from the run's generator (resumable); a folder of
        # already-sized images draws nothing, keeping the generator in step with the in-memory loader.
        needs_crops = self.train and _size_of(self.split.source(0)) != (self.data.size, self.data.size)
        seed = int(torch.randint(2**31, (1,), generator=self.generator, device=self.device)) if needs_crops else 0
        self._order.batches = [[(i, seed) for i in b] for b in batches]
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                _Files(self.split, self.data.size, self.data.channels, self.train, self.decoder),
                batch_sampler=self._order,
                num_workers=self.workers,
                collate_fn=collate_encoded if self.decoder == "gpu" else _collate,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,
            )
        for parts in self._loader:
            if self.decoder == "gpu":
                encoded, boxes, labels, index = parts
                images = decode_batch(encoded, boxes, self.data.size, self.data.channels, self.device)
            else:
                images, labels, index = parts
            yield Batch(
                images.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True),
                index.to(self.device, non_blocking=True),
            )

    def close(self) -> None:
        """Stop the decoding workers now (dropping the DataLoader shuts them down); a later pass starts new ones."""
        self._loader = None


def _size_of(path: str | io.BytesIO) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


TreeIndex = tuple[list[str], FileSplit, FileSplit]  # index_image_tree's (classes, train, test)


def _first_image_facts(train: FileSplit) -> tuple[int, tuple[int, int]]:
    """(channels, (width, height)) of the first training image."""
    from PIL import Image

    with Image.open(train.source(0)) as first:
        return (1 if first.mode in ("L", "1", "I;16", "I", "F", "LA") else 3), first.size


def open_streaming(
    index: TreeIndex, name: str, size: int | None, train_per_class: int | None, test_per_class: int | None
) -> StreamingDataset:
    """A StreamingDataset over an indexed tree; mean/std measured on up to 2,000 evenly spaced training images
    (centre crops)."""
    classes, train, test = index
    if train_per_class:
        train = train.first_per_class(train_per_class, len(classes))
    if test_per_class:
        test = test.first_per_class(test_per_class, len(classes))
    channels, first_size = _first_image_facts(train)
    size = size or min(first_size)
    step = max(1, len(train) // 2000)
    sample = np.stack([decode_fixed(train.source(i), size, channels, None) for i in range(0, len(train), step)])
    mean, std = channel_stats(torch.from_numpy(sample))
    return StreamingDataset(name, train, test, classes, mean, std, size, channels)


def estimated_bytes(index: TreeIndex) -> int:
    """Decoded size of an indexed image tree if held in memory: files × bytes of the first image (uint8)."""
    _, train, test = index
    channels, (w, h) = _first_image_facts(train)
    return (len(train) + len(test)) * channels * w * h


def default_workers() -> int:
    """Decoding processes per loader: the cores but one, shared among the processes of this node (torchrun's
    LOCAL_WORLD_SIZE); no fixed cap (a 16-core GPU host decodes with 15)."""
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, ((os.cpu_count() or 2) - 1) // max(1, per_node))
