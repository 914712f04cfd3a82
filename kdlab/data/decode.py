"""One image file → a fixed-size uint8 array (C, S, S), as cheaply as the CPU allows (streaming workers).

Three costs per image, each cut where it can be:
1. Decoding. A JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8: libjpeg-turbo's scaled IDCT) that still
   leaves the crop at least S×S, so a 224-px crop of a large photograph decodes a quarter of its pixels or fewer.
   With `simplejpeg` installed (`pip install 'kdlab[turbo]'`, a libjpeg-turbo binding that decodes straight into
   a NumPy array) it decodes; otherwise Pillow (its `draft()` is the same scaled IDCT). Other formats: Pillow.
2. The crop: RandomResizedCrop's box (scale 0.08–1, ratio 3/4–4/3, torchvision's rule) for training; for test,
   the centre box that resizing the shorter side to S/0.875 and cropping S would keep.
3. The resize of the box to S×S: PyTorch's uint8 bilinear kernel with antialiasing on a channels-last view
   of the decoded array (Pillow's filter, the same within ±1 level on 99.9% of pixels, ≈ 4× faster on one
   core: docs/benchmarks.md).
A file that is already S×S is decoded only, so CIFAR stored as JPEG gives the in-memory path's pixels.
"""

from __future__ import annotations

import functools
import io
import math
import random
import warnings
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from kdlab.errors import ConfigError, DataError

Decoder = Literal["auto", "pillow", "simplejpeg", "gpu"]
JPEG_MAGIC = b"\xff\xd8"
TEST_CROP = 0.875  # test: the shorter side resized to S / 0.875, then the centre S×S


@functools.cache
def simplejpeg_available() -> bool:
    """Whether the optional libjpeg-turbo binding imports."""
    try:
        import simplejpeg  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_decoder(name: str) -> Literal["pillow", "simplejpeg", "gpu"]:
    """`data.decoder` as the decoder that runs: auto → simplejpeg when installed, else Pillow; simplejpeg
    without the package is a one-line ConfigError; gpu (data/device_decode.py) stays gpu."""
    if name in ("pillow", "gpu"):
        return name  # type: ignore[return-value]
    if name == "simplejpeg" and not simplejpeg_available():
        raise ConfigError("data.decoder=simplejpeg needs the simplejpeg package: pip install 'kdlab[turbo]'")
    if name not in ("auto", "simplejpeg"):
        raise ConfigError(f"data.decoder must be auto, pillow, simplejpeg or gpu, got {name!r}")
    return "simplejpeg" if simplejpeg_available() else "pillow"


def random_resized_box(w: int, h: int, rng: random.Random) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (x0, y0, x1, y1) in pixels of a w×h image: area 8–100%, aspect 3/4–4/3 (log-
    uniform), ten tries, then the centred square of the shorter side."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return x, y, x + cw, y + ch
    side = min(w, h)
    return (w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side


def center_box(w: int, h: int, size: int) -> tuple[int, int, int, int]:
    """The box of a w×h image that `resize shorter side to size/0.875, centre-crop size` keeps."""
    side = min(min(w, h), max(1, round(size * min(w, h) / round(size / TEST_CROP))))
    x, y = (w - side) // 2, (h - side) // 2
    return x, y, x + side, y + side


def dct_reduction(w: int, h: int, box: tuple[int, int, int, int], size: int) -> int | None:
    """The largest reduction k ∈ {2, 4, 8} of a scaled IDCT (libjpeg-turbo decodes at 1/k, ⌈w/k⌉ × ⌈h/k⌉) that
    leaves `box` at least size×size; None: decode at full size. Both decoders take this k, so their pixels
    are the same."""
    fits = min(box[2] - box[0], box[3] - box[1]) / size
    k = next((k for k in (8, 4, 2) if k <= fits and min(w, h) >= 8 * k), 1)
    return k if k > 1 else None


def read_bytes(source: str | io.BytesIO) -> bytes:
    """The bytes of a file path, or of a prepared shard's sample."""
    if isinstance(source, io.BytesIO):
        return source.getvalue()
    with open(source, "rb") as f:
        return f.read()


def _decode_simplejpeg(data: bytes, channels: int, w: int, h: int, k: int | None) -> np.ndarray:
    import simplejpeg

    min_w, min_h = (math.ceil(w / k), math.ceil(h / k)) if k else (0, 0)  # the smallest M/8 scale: 1/k
    colorspace = "GRAY" if channels == 1 else "RGB"
    arr = simplejpeg.decode_jpeg(data, colorspace=colorspace, min_height=min_h, min_width=min_w)
    return arr[..., 0] if channels == 1 else arr


def _decode_pillow(source: str | io.BytesIO, channels: int, w: int, h: int, k: int | None) -> np.ndarray:
    from PIL import Image

    with Image.open(source) as f:
        mode = "L" if channels == 1 else "RGB"
        if k and f.format == "JPEG":
            f.draft(mode, (w // k, h // k))  # Pillow picks the scale w // (w // k) rounded down to 1, 2, 4, 8: k
        return np.asarray(f.convert(mode))


def _image_size(data: bytes, source: str | io.BytesIO, decoder: str) -> tuple[int, int]:
    if decoder == "simplejpeg" and data[:2] == JPEG_MAGIC:
        import simplejpeg

        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        return w, h
    from PIL import Image

    with Image.open(io.BytesIO(data) if isinstance(source, str) else source) as f:
        return f.size


def decode_fixed(
    source: str | io.BytesIO, size: int, channels: int, rng: random.Random | None, decoder: str = "pillow"
) -> np.ndarray:
    """One file (a path, or the bytes of a prepared shard's sample) → uint8 (channels, size, size): decoded only
    when already size×size; else the crop box (RandomResizedCrop with `rng`, the test centre box without),
    decoded at the smallest sufficient DCT scale and resized with antialiasing. `decoder`: pillow | simplejpeg
    (resolve_decoder's result). Unreadable data: a one-line DataError."""
    try:
        data = read_bytes(source)
        w, h = _image_size(data, source, decoder)
        if (w, h) == (size, size):
            box, k = None, None
        else:
            box = random_resized_box(w, h, rng) if rng is not None else center_box(w, h, size)
            k = dct_reduction(w, h, box, size)
        if decoder == "simplejpeg" and data[:2] == JPEG_MAGIC:
            arr = _decode_simplejpeg(data, channels, w, h, k)
        else:
            arr = _decode_pillow(io.BytesIO(data), channels, w, h, k)
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's UnidentifiedImageError is an OSError
        where = source if isinstance(source, str) else "of a prepared shard"
        raise DataError(f"image {where} is unreadable or corrupt ({e}); remove or replace it") from None
    with warnings.catch_warnings():  # Pillow's arrays are read-only; nothing below writes to this view
        warnings.simplefilter("ignore", UserWarning)
        hwc = torch.from_numpy(arr).view(arr.shape[0], arr.shape[1], -1)
    if box is None:
        return np.ascontiguousarray(hwc.permute(2, 0, 1).numpy())
    x0, y0, x1, y1 = decoded_box(box, k or 1, hwc.shape[1], hwc.shape[0])
    crop = hwc[y0:y1, x0:x1].permute(2, 0, 1).unsqueeze(0).contiguous(memory_format=torch.channels_last)
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return np.ascontiguousarray(out.numpy())


def decoded_box(box: tuple[int, int, int, int], k: int, dw: int, dh: int) -> tuple[int, int, int, int]:
    """`box` (source pixels) on the image decoded at 1/k (dw×dh): its corners rounded to whole decoded pixels, so
    the crop taken is the box (x0·k, y0·k, x1·k, y1·k) of the source, within k/2 pixels of the one drawn."""
    x0, y0 = min(dw - 1, round(box[0] / k)), min(dh - 1, round(box[1] / k))
    return x0, y0, max(x0 + 1, min(dw, round(box[2] / k))), max(y0 + 1, min(dh, round(box[3] / k)))
