"""Datasets as in-memory uint8 tensors, their readers and caches, and the on-device batch loader."""

from kdlab.data.dataset import ImageDataset, ImageSplit
from kdlab.data.loader import Batch, DeviceLoader, IndexBatches
from kdlab.data.spec import load_dataset


def make_loader(
    data: object,
    split: str,
    batch_size: int,
    device: object,
    shuffle: bool,
    drop_last: bool = False,
    generator: object = None,
    shard: tuple[int, int] = (0, 1),
    workers: int | None = None,
    decoder: str = "auto",
) -> IndexBatches:
    """The loader for `data.<split>` ('train' or 'test'): in-memory DeviceLoader, or a StreamingLoader
    (same interface) for a StreamingDataset. Training batches of streamed data get random crops; `decoder`
    (auto | pillow | simplejpeg) decodes streamed files (data/decode.py)."""
    from kdlab.data.streaming import StreamingDataset, StreamingLoader, default_workers

    part = getattr(data, split)
    if isinstance(data, StreamingDataset):
        return StreamingLoader(
            data, part, batch_size, device, shuffle, drop_last, generator, shard,  # type: ignore[arg-type]
            workers if workers is not None else default_workers(), train=split == "train", decoder=decoder,
        )  # fmt: skip
    return DeviceLoader(part, batch_size, device, shuffle, drop_last, generator, shard)  # type: ignore[arg-type]


__all__ = ["Batch", "DeviceLoader", "ImageDataset", "ImageSplit", "IndexBatches", "load_dataset", "make_loader"]
