"""Per-sample Pillow augmentation, the way DataLoader-based KD repositories do it (one PIL image at a time).

Used only as the reference in benchmarks/augment_throughput.py. The AutoAugment CIFAR10 policy uses the
same 25 sub-policies as kornia's table, with the PIL magnitude ranges of the common PIL implementation."""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

BINS = 10


def _mag(lo: float, hi: float, level: int) -> float:
    return lo + (hi - lo) * level / (BINS - 1)


def _sign() -> int:
    return random.choice((-1, 1))


def _affine(img: Image.Image, matrix: tuple) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, matrix, fillcolor=(128, 128, 128))


PIL_OPS = {
    "shear_x": lambda img, m: _affine(img, (1, _mag(0, 0.3, m) * _sign(), 0, 0, 1, 0)),
    "shear_y": lambda img, m: _affine(img, (1, 0, 0, _mag(0, 0.3, m) * _sign(), 1, 0)),
    "translate_x": lambda img, m: _affine(img, (1, 0, _mag(0, 150 / 331, m) * img.size[0] * _sign(), 0, 1, 0)),
    "translate_y": lambda img, m: _affine(img, (1, 0, 0, 0, 1, _mag(0, 150 / 331, m) * img.size[1] * _sign())),
    "rotate": lambda img, m: img.rotate(_mag(0, 30, m) * _sign(), fillcolor=(128, 128, 128)),
    "color": lambda img, m: ImageEnhance.Color(img).enhance(1 + _mag(0, 0.9, m) * _sign()),
    "posterize": lambda img, m: ImageOps.posterize(img, round(_mag(8, 4, m))),
    "solarize": lambda img, m: ImageOps.solarize(img, int(_mag(256, 0, m))),
    "contrast": lambda img, m: ImageEnhance.Contrast(img).enhance(1 + _mag(0, 0.9, m) * _sign()),
    "sharpness": lambda img, m: ImageEnhance.Sharpness(img).enhance(1 + _mag(0, 0.9, m) * _sign()),
    "brightness": lambda img, m: ImageEnhance.Brightness(img).enhance(1 + _mag(0, 0.9, m) * _sign()),
    "auto_contrast": lambda img, m: ImageOps.autocontrast(img),
    "equalize": lambda img, m: ImageOps.equalize(img),
    "invert": lambda img, m: ImageOps.invert(img),
}


def autoaugment_cifar10(img: Image.Image) -> Image.Image:
    from kornia.augmentation.auto.autoaugment.autoaugment import cifar10_policy

    for name, prob, level in random.choice(cifar10_policy):
        if random.random() < prob:
            img = PIL_OPS[name](img, level or 0)
    return img


def crop_flip(img: Image.Image, pad: int = 4) -> Image.Image:
    w, h = img.size
    canvas = Image.new(img.mode, (w + 2 * pad, h + 2 * pad))
    canvas.paste(img, (pad, pad))
    x, y = random.randint(0, 2 * pad), random.randint(0, 2 * pad)
    img = canvas.crop((x, y, x + w, y + h))
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if random.random() < 0.5 else img


def to_tensor_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0


def cutout(arr: np.ndarray, size: int = 8) -> np.ndarray:
    _, h, w = arr.shape
    cy, cx = random.randrange(h), random.randrange(w)
    arr = arr.copy()
    arr[:, max(0, cy - size // 2) : cy + size - size // 2, max(0, cx - size // 2) : cx + size - size // 2] = 0
    return arr
