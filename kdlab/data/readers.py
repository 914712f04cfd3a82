"""Readers: each turns one on-disk format into uint8 arrays (N, C, H, W) + int64 labels + class names.

Formats: scikit-learn's embedded digits, CIFAR-10/100 python pickles, ImageFolder trees
(`root/{train,test}/<class>/*.png|jpg`, as a folder or a .tar/.tar.gz archive), Tiny ImageNet's official
layout, and MNIST idx files (optionally gzipped).
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdlab.data.safe_pickle import safe_load_pickle
from kdlab.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SPLIT_NAMES = {"train": "train", "test": "test", "val": "test"}


@dataclass
class RawSplits:
    """Reader output: uint8 (N, C, H, W) arrays and int64 labels for both splits, plus class names."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]


# ------------------------------------------------------------------------------------------------ digits


def read_digits(seed: int = 0, test_fraction: float = 0.25) -> RawSplits:
    """scikit-learn's bundled digits (1,797 real 8×8 grey images, values 0–16), split with a fixed seed."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = round(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return RawSplits(images[train], labels[train], images[test], labels[test], [str(d) for d in range(10)])


# ------------------------------------------------------------------------------------------------- CIFAR


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"expected file {path} is missing")
    return path.read_bytes()


def _load_cifar_dict(path: Path) -> dict:
    """A CIFAR pickle as a dict with str keys (files pickled under Python 3 may have bytes keys)."""
    obj = safe_load_pickle(str(path), _read_bytes(path))
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR pickle (it holds a {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _text(value: object) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_cifar_dict(path)
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        raise DataError(f"{path} is not a CIFAR batch (no 'data'/'{label_key}' entries)")
    data = np.asarray(batch["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: CIFAR data must be N×3072 bytes, got {data.shape}")
    return data.reshape(-1, 3, 32, 32), np.asarray(batch[label_key], dtype=np.int64)


def is_cifar_pickle_dir(root: Path) -> bool:
    """True for an official `cifar-10-batches-py` or `cifar-100-python` folder."""
    return (root / "batches.meta").is_file() or (root / "meta").is_file()


def read_cifar_pickles(root: Path) -> RawSplits:
    """The official CIFAR-10 (`cifar-10-batches-py`) or CIFAR-100 (`cifar-100-python`) pickle folder."""
    if (root / "batches.meta").is_file():  # CIFAR-10
        meta = _load_cifar_dict(root / "batches.meta")
        classes = [_text(c) for c in meta["label_names"]]
        parts = [_cifar_batch(root / f"data_batch_{i}", "labels") for i in range(1, 6)]
        train_x = np.concatenate([p[0] for p in parts])
        train_y = np.concatenate([p[1] for p in parts])
        test_x, test_y = _cifar_batch(root / "test_batch", "labels")
    elif (root / "meta").is_file():  # CIFAR-100, fine labels
        meta = _load_cifar_dict(root / "meta")
        classes = [_text(c) for c in meta["fine_label_names"]]
        train_x, train_y = _cifar_batch(root / "train", "fine_labels")
        test_x, test_y = _cifar_batch(root / "test", "fine_labels")
    else:
        raise DataError(f"{root} is not a CIFAR python folder (no batches.meta or meta file)")
    return RawSplits(train_x, train_y, test_x, test_y, classes)


# ------------------------------------------------------------------------------------------- image trees


def _decode(name: str, data: bytes) -> tuple[np.ndarray, str]:
    """Decode one image file's bytes to an (H, W, C) uint8 array and its mode ('L' or 'RGB')."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = "L" if img.mode in ("L", "1", "I;16", "I", "F", "LA", "P") and _is_grey(img) else "RGB"
            arr = np.asarray(img.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"image {name} is unreadable or corrupt ({e}); remove or replace it") from None
    return (arr[:, :, None] if arr.ndim == 2 else arr), mode


def _is_grey(img: object) -> bool:
    mode = getattr(img, "mode", "")
    if mode != "P":
        return True
    palette = img.convert("RGB")  # type: ignore[attr-defined]
    arr = np.asarray(palette)
    return bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())


def _tree_entries(root: Path) -> Iterator[tuple[str, str, str, bytes]]:
    """(split, class, file name, bytes) for every image under root/{train,test|val}/<class>/ (folder or tar)."""
    if root.is_file():
        try:
            with tarfile.open(root) as tar:
                for member in tar:
                    if not member.isfile() or not member.name.lower().endswith(IMAGE_SUFFIXES):
                        continue
                    parts = member.name.split("/")
                    located = _locate(parts)
                    if located is None:
                        continue
                    f = tar.extractfile(member)
                    if f is None:
                        continue
                    yield (*located, f.read())
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"archive {root} is truncated or corrupt ({e}); re-download it") from None
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root).parts
        for fname in sorted(filenames):
            if fname.lower().endswith(IMAGE_SUFFIXES):
                located = _locate([*rel, fname])
                if located is not None:
                    yield (*located, (Path(dirpath) / fname).read_bytes())


def _check_no_empty_class_folders(root: Path, per_split: dict[str, list[tuple[str, str, np.ndarray]]]) -> None:
    """A class folder without images would silently drop a class (and shift every label after it)."""
    if root.is_file():
        return  # an archive lists only files; its class set is checked train against test
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in SPLIT_NAMES):
        split = SPLIT_NAMES[split_dir.name.lower()]
        found = {c for c, _, _ in per_split[split]}
        empty = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and d.name not in found)
        if empty:
            raise DataError(
                f"class folder {split_dir / empty[0]} has no images ({len(empty)} empty class folder(s) in "
                f"{split_dir.name}/); add images (.png/.jpg) or remove the folder"
            )


def _locate(parts: list[str]) -> tuple[str, str, str] | None:
    """Find `<split>/<class>/<file>` at the end of a path's parts; None for files elsewhere."""
    if len(parts) >= 3 and parts[-3].lower() in SPLIT_NAMES:
        return SPLIT_NAMES[parts[-3].lower()], parts[-2], parts[-1]
    return None


def read_image_tree(root: Path) -> RawSplits:
    """An ImageFolder tree `root/{train,test}/<class>/*` (or `val` for test), as a folder or tar archive.

    Classes are sorted by name; images within a class by file name. All images must share one size and
    colour mode (grey or RGB)."""
    if not root.exists():
        raise DataError(f"dataset path {root} does not exist")
    per_split: dict[str, list[tuple[str, str, np.ndarray]]] = {"train": [], "test": []}
    modes: dict[str, str] = {}
    for split, cls, fname, data in _tree_entries(root):
        arr, mode = _decode(f"{split}/{cls}/{fname}", data)
        modes.setdefault(mode, f"{split}/{cls}/{fname}")
        per_split[split].append((cls, fname, arr))
    if not per_split["train"] and not per_split["test"]:
        raise DataError(f"no images found under {root}; expected root/train/<class>/*.png|jpg and root/test/<class>/*")
    _check_no_empty_class_folders(root, per_split)
    for split in ("train", "test"):
        if not per_split[split]:
            raise DataError(f"{root} has no '{split}' images (expected {root}/{split}/<class>/*)")
    if len(modes) > 1:
        raise DataError(
            f"{root} mixes grey and colour images (e.g. {modes['L']} is grey, {modes['RGB']} is RGB); "
            "convert them to one mode"
        )
    train_classes = sorted({c for c, _, _ in per_split["train"]})
    test_classes = sorted({c for c, _, _ in per_split["test"]})
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))[:5]
        only_test = sorted(set(test_classes) - set(train_classes))[:5]
        raise DataError(
            f"{root}: train and test class folders differ (only in train: {only_train}, only in test: {only_test})"
        )
    index = {c: i for i, c in enumerate(train_classes)}
    out = []
    for split in ("train", "test"):
        items = sorted(per_split[split], key=lambda t: (t[0], t[1]))
        shapes = {a.shape for _, _, a in items}
        if len(shapes) > 1:
            a, b = sorted(shapes)[:2]
            raise DataError(f"{root}/{split}: images differ in size ({a} and {b}); resize them to one size")
        images = np.stack([a for _, _, a in items]).transpose(0, 3, 1, 2)
        labels = np.array([index[c] for c, _, _ in items], dtype=np.int64)
        out.append((np.ascontiguousarray(images), labels))
    return RawSplits(out[0][0], out[0][1], out[1][0], out[1][1], train_classes)


def is_tiny_imagenet(root: Path) -> bool:
    return (root / "val" / "val_annotations.txt").is_file()


def read_tiny_imagenet(root: Path) -> RawSplits:
    """Tiny ImageNet's official layout: train/<wnid>/images/*.JPEG; val/images/* + val/val_annotations.txt."""
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"{root} has no train/ folder (expected Tiny ImageNet's layout)")
    wnids = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not wnids:
        raise DataError(f"{train_dir} has no class folders")
    index = {w: i for i, w in enumerate(wnids)}
    train_x, train_y = [], []
    for w in wnids:
        files = sorted((train_dir / w / "images").glob("*"))
        files = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise DataError(f"class folder {train_dir / w / 'images'} has no images")
        for f in files:
            train_x.append(_decode(str(f), f.read_bytes())[0])
            train_y.append(index[w])
    test_x, test_y = [], []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        if fields[1] not in index:
            raise DataError(f"val_annotations.txt names class {fields[1]} that has no train folder")
        f = root / "val" / "images" / fields[0]
        test_x.append(_decode(str(f), _read_bytes(f))[0])
        test_y.append(index[fields[1]])
    names = _tiny_names(root, wnids)
    tr = np.stack(train_x).transpose(0, 3, 1, 2)
    te = np.stack(test_x).transpose(0, 3, 1, 2)
    return RawSplits(
        np.ascontiguousarray(tr),
        np.array(train_y, np.int64),
        np.ascontiguousarray(te),
        np.array(test_y, np.int64),
        names,
    )


def _tiny_names(root: Path, wnids: list[str]) -> list[str]:
    words = root / "words.txt"
    if not words.is_file():
        return wnids
    table = dict(line.split("\t", 1) for line in words.read_text().splitlines() if "\t" in line)
    return [table.get(w, w).split(",")[0].strip() for w in wnids]


# ------------------------------------------------------------------------------------------------- MNIST


def read_idx(path: Path) -> np.ndarray:
    """One idx file (optionally .gz): unsigned-byte tensors of any rank, e.g. (N, 28, 28) or (N,)."""
    raw = _read_bytes(path)
    try:
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is truncated or corrupt ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte idx file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(f"{path} holds {len(data)} bytes but its header promises {expected}: truncated")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root} is missing {stem}(.gz)")


def is_mnist_idx_dir(root: Path) -> bool:
    return root.is_dir() and any(p.name.startswith(("t10k-", "train-")) and "idx" in p.name for p in root.iterdir())


def read_mnist_idx(root: Path) -> RawSplits:
    """MNIST / Fashion-MNIST idx files: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-…(.gz)."""
    arrays = [
        read_idx(_find_idx(root, stem))
        for stem in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    ]
    train_x, train_y, test_x, test_y = arrays
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise DataError(f"{root}: image and label counts differ")
    return RawSplits(
        np.ascontiguousarray(train_x[:, None]),
        train_y.astype(np.int64),
        np.ascontiguousarray(test_x[:, None]),
        test_y.astype(np.int64),
        [str(d) for d in range(10)],
    )
