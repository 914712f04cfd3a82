"""`kdlab data check SPEC`: validate a dataset without training."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from kdlab.data.spec import load_dataset


def _hashes(images: torch.Tensor) -> list[str]:
    return [hashlib.blake2b(img.numpy().tobytes(), digest_size=12).hexdigest() for img in images]


def _stored_hashes(split: Any) -> list[str]:
    """Hashes of a streamed split's stored files (or byte spans of a prepared dataset's shards)."""
    out = []
    for i in range(len(split)):
        src = split.source(i)
        data = src.getvalue() if hasattr(src, "getvalue") else Path(src).read_bytes()
        out.append(hashlib.blake2b(data, digest_size=12).hexdigest())
    return out


def check_dataset(spec: str, cache_dir: str | None = None) -> dict[str, Any]:
    """Load `spec` (raising DataError with the reason if it is unusable) and describe it: sizes, image shape
    and mode, per-class counts per split, and exact duplicate images within and across splits (for streamed
    and prepared data: duplicate stored files)."""
    d = load_dataset(spec, cache_dir)
    hashes = _stored_hashes if not hasattr(d.train, "images") else (lambda split: _hashes(split.images))
    train_h, test_h = hashes(d.train), hashes(d.test)
    overlap = len(set(test_h) & set(train_h))
    c, height, width = d.image_shape
    counts = {
        split: torch.bincount(s.labels, minlength=d.num_classes).tolist()
        for split, s in (("train", d.train), ("test", d.test))
    }
    empty = [d.classes[i] for i, n in enumerate(counts["test"]) if n == 0]
    return {
        "dataset": d.name,
        "classes": d.num_classes,
        "train": len(d.train),
        "test": len(d.test),
        "image": {"channels": c, "height": height, "width": width, "mode": "grey" if c == 1 else "RGB"},
        "per_class": {
            split: {"min": min(v), "max": max(v), "counts": dict(zip(d.classes, v))} for split, v in counts.items()
        },
        "duplicates": {
            "within_train": len(train_h) - len(set(train_h)),
            "within_test": len(test_h) - len(set(test_h)),
            "test_images_also_in_train": overlap,
        },
        "classes_without_test_images": empty,
        "mean": [round(m, 4) for m in d.mean],
        "std": [round(s, 4) for s in d.std],
    }
