"""Dataset spec strings → ImageDataset, with a .npy cache so a second load is fast.

Specs: `digits` (embedded), `cifar10:PATH`, `cifar100:PATH` (the official python folder, or a JPEG/PNG
ImageFolder tree or archive), `imagefolder:PATH`, `tinyimagenet:PATH`, `mnist:PATH` (idx files or an
ImageFolder), `prepared:PATH` (`kdlab prepare`'s WebDataset shards, always streamed: data/prepared.py). A bare
existing PATH is detected by its layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.data import readers
from kdlab.data.dataset import ImageDataset, ImageSplit, channel_stats
from kdlab.errors import DataError, suggest

KINDS = ("digits", "cifar10", "cifar100", "imagefolder", "tinyimagenet", "mnist", "prepared")
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """$KDLAB_CACHE, else ~/.cache/kdlab."""
    return Path(os.environ.get("KDLAB_CACHE") or Path.home() / ".cache" / "kdlab")


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """`kind:PATH` → (kind, Path); `digits` → ('digits', None); a bare path → ('auto', Path)."""
    if spec == "digits":
        return "digits", None
    kind, sep, path = spec.partition(":")
    if sep and kind in KINDS:
        if not path:
            raise DataError(f"dataset spec {spec!r} needs a path after the colon")
        return kind, Path(path).expanduser()
    if sep and len(kind) > 1 and not Path(spec).exists():
        raise DataError(f"unknown dataset kind {kind!r}{suggest(kind, KINDS)}; use one of {', '.join(KINDS)}")
    return "auto", Path(spec).expanduser()


def _read(kind: str, root: Path) -> readers.RawSplits:
    if not root.exists():
        raise DataError(f"dataset path {root} does not exist; check the path in data.dataset")
    if kind in ("cifar10", "cifar100", "auto") and root.is_dir() and readers.is_cifar_pickle_dir(root):
        return readers.read_cifar_pickles(root)
    if kind in ("tinyimagenet", "auto") and root.is_dir() and readers.is_tiny_imagenet(root):
        return readers.read_tiny_imagenet(root)
    if kind == "tinyimagenet":
        raise DataError(f"{root} is not in Tiny ImageNet's layout (no val/val_annotations.txt)")
    if kind in ("mnist", "auto") and readers.is_mnist_idx_dir(root):
        return readers.read_mnist_idx(root)
    return readers.read_image_tree(root)


def _fingerprint(root: Path) -> str:
    """Cheap identity of a data path: resolved path, sizes and mtimes of it and its first two levels."""
    h = hashlib.sha1(f"v{CACHE_VERSION}:{root.resolve()}".encode())
    entries = [root]
    if root.is_dir():
        for child in sorted(root.iterdir()):
            entries.append(child)
            if child.is_dir():
                entries.extend(sorted(child.iterdir()))
    for p in entries:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _load_cached(kind: str, root: Path, cache_dir: Path) -> tuple[readers.RawSplits, dict[str, Any]]:
    folder = cache_dir / f"{kind}-{root.name}-{_fingerprint(root)}"
    names = ("train_images", "train_labels", "test_images", "test_labels")
    if (folder / "meta.json").is_file():
        try:
            meta = json.loads((folder / "meta.json").read_text())
            a = [np.load(folder / f"{n}.npy") for n in names]
            return readers.RawSplits(a[0], a[1], a[2], a[3], meta["classes"]), meta
        except (OSError, ValueError, KeyError):
            shutil.rmtree(folder, ignore_errors=True)  # a damaged cache is rebuilt, never trusted
    raw = _read(kind, root)
    mean, std = channel_stats(torch.from_numpy(raw.train_images))
    meta = {"classes": raw.classes, "mean": mean, "std": std, "source": root.name}
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
        for n in names:
            np.save(tmp / f"{n}.npy", getattr(raw, n))
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process cached it first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass  # caching is an optimisation; an unwritable cache dir must not stop a run
    return raw, meta


def load_dataset(
    spec: str,
    cache_dir: str | Path | None = None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    stream: str = "off",
    memory_budget_gb: float = 16.0,
    image_size: int | None = None,
) -> ImageDataset:
    """Load a dataset by spec string into memory (uint8 tensors), optionally keeping the first k per class.

    An image-folder tree (a folder, not an archive) can instead be streamed from disk (`stream=on`, or `auto`
    when its decoded size exceeds `memory_budget_gb`): the result is then a StreamingDataset with the same
    attributes, whose loaders decode files in worker processes (kdlab.data.streaming)."""
    kind, root = parse_spec(spec)
    if stream not in ("auto", "on", "off"):
        raise DataError(f"data.stream must be auto, on or off, got {stream!r}")
    if kind == "prepared" and root is not None:
        from kdlab.data.prepared import open_prepared

        return open_prepared(root, image_size, train_per_class, test_per_class)  # a StreamingDataset
    if root is not None and stream != "off" and kind in ("imagefolder", "auto", "cifar10", "cifar100"):
        from kdlab.data import streaming

        tree = root.is_dir() and not readers.is_mnist_idx_dir(root) and not (root / "batches.meta").exists()
        tree = tree and not (root / "meta").exists()
        if stream == "on" or tree:
            index = streaming.index_image_tree(root)  # walked once, for the size estimate and the dataset
            if stream == "on" or streaming.estimated_bytes(index) > memory_budget_gb * 2**30:
                name = f"{kind}:{root.name}" if kind != "auto" else root.name
                return streaming.open_streaming(index, name, image_size, train_per_class, test_per_class)  # type: ignore[return-value]
    if root is None:
        raw = readers.read_digits()
        mean, std = channel_stats(torch.from_numpy(raw.train_images))
        meta: dict[str, Any] = {"classes": raw.classes, "mean": mean, "std": std}
        name = "digits"
    else:
        if not root.exists():
            raise DataError(f"dataset path {root} does not exist; check the path in data.dataset")
        raw, meta = _load_cached(kind, root, Path(cache_dir) if cache_dir else default_cache_dir())
        name = f"{kind}:{root.name}" if kind != "auto" else root.name
    train = ImageSplit(torch.from_numpy(raw.train_images), torch.from_numpy(raw.train_labels))
    test = ImageSplit(torch.from_numpy(raw.test_images), torch.from_numpy(raw.test_labels))
    classes = list(meta["classes"])
    if kind == "cifar100" and len(classes) != 100:
        raise DataError(f"{spec}: expected 100 classes for cifar100, found {len(classes)}")
    if kind == "cifar10" and len(classes) != 10:
        raise DataError(f"{spec}: expected 10 classes for cifar10, found {len(classes)}")
    if train_per_class:
        train = train.first_per_class(train_per_class, len(classes))
    if test_per_class:
        test = test.first_per_class(test_per_class, len(classes))
    return ImageDataset(name, train, test, classes, tuple(meta["mean"]), tuple(meta["std"]))
