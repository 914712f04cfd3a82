"""Prepared datasets: WebDataset tar shards of pre-resized images, read by kdlab's seeded streaming loader.

`kdlab prepare SRC OUT --max-side 256 --quality 90` stores every image of a dataset at most `max_side` pixels on
its longer side, as JPEG at `quality` (the FFCV practice: decoding a 256-px JPEG costs a fraction of a full-size
photograph). An image already small enough keeps its original bytes (no second JPEG generation); sources that
hold raw pixels (CIFAR's pickles, MNIST's idx files, digits) are stored as lossless PNG.

The container is WebDataset (shards are plain POSIX tars of `KEY.jpg` (or `.png`) / `KEY.cls` members, the integer
label by WebDataset's convention, written with webdataset's TarWriter): it is an existing, documented format, any
tar tool or WebDataset pipeline reads it, and WebDataset streams it from object storage (`pipe:`/`s3:`/`https:`
shard URLs) for multi-node runs. kdlab adds one index per split (`{split}-index.npy`: shard, byte offset, byte
length, label per sample, in the class-then-name order of the source) and `kdlab-prepared.json` (classes, settings,
source). With those, a sample is one seek and one read, so the order stays kdlab's own: the seeded permutation of
the in-memory loader, sliced per rank, resumed exactly (data/streaming.py's StreamingLoader). Why not MosaicML
streaming (MDS) or LitData: both bring their own shuffling and resumption state, and their dependency trees
(cloud SDKs) are large for a core dependency."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.errors import DataError

FORMAT = "kdlab-prepared-webdataset-v1"
MANIFEST = "kdlab-prepared.json"


def _fit(data: bytes, max_side: int, quality: int) -> tuple[bytes, str]:
    """One image file's bytes → (bytes to store, extension): the original when its longer side ≤ max_side (JPEG
    or PNG as it is), else resized so that side is max_side (Lanczos) and encoded as JPEG at `quality`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            kind = (img.format or "").lower()
            if max(img.size) <= max_side and kind in ("jpeg", "png"):
                return data, "jpg" if kind == "jpeg" else "png"
            img.draft("RGB", (max_side, max_side))  # JPEG: DCT scaling down to ≥ the target, much faster
            w, h = img.size
            scale = min(1.0, max_side / max(w, h))
            out = img.convert("L" if img.mode in ("L", "1", "LA", "I;16", "I", "F") else "RGB")
            if scale < 1:
                out = out.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            out.save(buf, "JPEG", quality=quality)
            return buf.getvalue(), "jpg"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"an image of the source is unreadable or corrupt ({e}); remove or replace it") from None


def _fit_job(job: tuple[str, bytes, int, int]) -> tuple[str, bytes, str]:
    key, data, max_side, quality = job
    return (key, *_fit(data, max_side, quality))


def _png(array: np.ndarray) -> bytes:
    """uint8 (C, H, W) → PNG bytes."""
    from PIL import Image

    img = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _tree_classes(root: Path) -> list[str]:
    """The training classes of an image tree (folder or archive), from file names alone (no image is read)."""
    import tarfile

    from kdlab.data import readers

    found: set[str] = set()
    if root.is_file():
        try:
            with tarfile.open(root) as tar:
                names = [m.name for m in tar if m.isfile()]
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"archive {root} is truncated or corrupt ({e}); re-download it") from None
    else:
        names = [str(Path(d, f).relative_to(root)) for d, _, files in os.walk(root) for f in files]
    for name in names:
        located = readers._locate(name.split("/")) if name.lower().endswith(readers.IMAGE_SUFFIXES) else None
        if located is not None and located[0] == "train":
            found.add(located[1])
    return sorted(found)


def _source_entries(spec: str) -> tuple[list[str], Iterator[tuple[str, str, str, bytes]]]:
    """(classes, (split, class, file name, bytes) of every image): an image tree (folder or archive) yields its
    files as they are; any other spec is loaded and its pixels given as PNG."""
    from kdlab.data import readers
    from kdlab.data.spec import load_dataset, parse_spec

    kind, root = parse_spec(spec)
    tree = root is not None and kind in ("imagefolder", "auto", "cifar10", "cifar100")
    if tree and root is not None and root.exists():
        is_raw = root.is_dir() and (
            readers.is_cifar_pickle_dir(root) or readers.is_mnist_idx_dir(root) or readers.is_tiny_imagenet(root)
        )
        if not is_raw:
            return _tree_classes(root), readers._tree_entries(root)
    data = load_dataset(spec)

    def pixels() -> Iterator[tuple[str, str, str, bytes]]:
        for split_name, split in (("train", data.train), ("test", data.test)):
            for i in range(len(split)):
                label = int(split.labels[i])
                yield split_name, data.classes[label], f"{i:09d}.png", _png(split.images[i].numpy())

    return list(data.classes), pixels()


def prepare(
    spec: str,
    out_dir: str | Path,
    max_side: int = 256,
    quality: int = 90,
    shard_images: int = 5000,
    workers: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write `spec`'s images as WebDataset shards under `out_dir` (module doc); returns the manifest."""
    import multiprocessing

    import webdataset

    if max_side < 8 or not 1 <= quality <= 100 or shard_images < 1:
        raise DataError("kdlab prepare: --max-side must be ≥ 8, --quality in 1…100, --shard-images ≥ 1")
    out = Path(out_dir)
    if (out / MANIFEST).exists():
        raise DataError(f"{out} already holds a prepared dataset; choose another folder or remove it")
    out.mkdir(parents=True, exist_ok=True)
    classes, entries = _source_entries(spec)
    label = {c: i for i, c in enumerate(classes)}
    rows: dict[str, list[tuple[str, str, int, int]]] = {"train": [], "test": []}  # class, name, shard, bytes
    shards: dict[str, list[str]] = {"train": [], "test": []}
    writers: dict[str, Any] = {}

    def jobs() -> Iterator[tuple[str, bytes, int, int]]:
        for split, cls, name, data in entries:
            yield f"{split}\x00{cls}\x00{name}", data, max_side, quality

    n_workers = workers or max(1, (os.cpu_count() or 2) - 1)
    with contextlib.ExitStack() as stack:
        if n_workers > 1:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(n_workers))
            fitted: Iterator[tuple[str, bytes, str]] = pool.imap(_fit_job, jobs(), chunksize=16)
        else:
            fitted = map(_fit_job, jobs())
        for key, data, ext in fitted:
            split, cls, name = key.split("\x00")
            i = len(rows[split])
            if i % shard_images == 0:
                if split in writers:
                    writers[split].close()
                shards[split].append(f"{split}-{len(shards[split]):06d}.tar")
                writers[split] = webdataset.TarWriter(str(out / shards[split][-1]))
            if cls not in label:
                raise DataError(f"{spec}: class {cls!r} of the {split} split has no training images")
            writers[split].write({"__key__": f"{i:09d}", ext: data, "cls": str(label[cls]).encode()})
            rows[split].append((cls, name, len(shards[split]) - 1, len(data)))
            if (done := len(rows["train"]) + len(rows["test"])) % 10000 == 0:
                log(f"{done} images stored")
    for w in writers.values():
        w.close()
    counts = {split: len(r) for split, r in rows.items()}
    if not counts["train"] or not counts["test"]:
        raise DataError(f"{spec} has no train or no test images to prepare")
    if {r[0] for r in rows["test"]} - set(classes) or sorted({r[0] for r in rows["train"]}) != sorted(classes):
        raise DataError(f"{spec}: train and test class folders differ")
    for split in ("train", "test"):
        offsets = _member_offsets(out, shards[split])
        table = []
        for k, (cls, name, shard, length) in enumerate(rows[split]):
            table.append((cls, name, shard, offsets[shard][k], length, label[cls]))
        table.sort(key=lambda r: (r[5], r[1]))  # the source's order: classes by name, files by name
        np.save(out / f"{split}-index.npy", np.array([r[2:] for r in table], dtype=np.int64))
    manifest = {
        "format": FORMAT,
        "source": spec,
        "max_side": max_side,
        "quality": quality,
        "classes": classes,
        "shards": shards,
        "images": counts,
        "stored_bytes": sum(r[3] for split in rows.values() for r in split),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _member_offsets(out: Path, shard_names: list[str]) -> list[dict[int, int]]:
    """Per shard: {sample number: byte offset of its image member's data}."""
    found: list[dict[int, int]] = []
    for name in shard_names:
        offsets: dict[int, int] = {}
        with tarfile.open(out / name) as tar:
            for m in tar:
                stem, _, ext = m.name.partition(".")
                if ext in ("jpg", "png"):
                    offsets[int(stem)] = m.offset_data
        found.append(offsets)
    return found


def open_prepared(root: Path, size: int | None, train_per_class: int | None, test_per_class: int | None) -> Any:
    """A StreamingDataset over a prepared folder: each sample is (its shard's path, byte span)."""
    from kdlab.data.streaming import FileSplit, open_streaming

    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"{root} is not a prepared dataset (no {MANIFEST}); make one with `kdlab prepare SRC {root}`")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise DataError(f"{root}: prepared format {manifest.get('format')!r}, this kdlab reads {FORMAT}")
    splits = []
    for split in ("train", "test"):
        table = np.load(root / f"{split}-index.npy")
        paths = [str(root / s) for s in manifest["shards"][split]]
        files = [paths[i] for i in table[:, 0].tolist()]
        splits.append(FileSplit(files, torch.from_numpy(table[:, 3].copy()), torch.from_numpy(table[:, 1:3].copy())))
    index = (list(manifest["classes"]), splits[0], splits[1])
    return open_streaming(index, f"prepared:{root.name}", size, train_per_class, test_per_class)
