"""`data.decoder=gpu`: JPEGs decoded on the CUDA device, a batch at a time (torchvision.io.decode_jpeg, nvJPEG).

The DataLoader workers only read each file's bytes and draw its crop box from the JPEG header (RandomResizedCrop
for training, the test centre box otherwise: the same boxes as the CPU decoders, data/decode.py); the main process
hands the batch's bytes to the device, which decodes them all in one call, crops each box and resizes it to S×S
(bilinear, antialiased). The CPU then only moves compressed bytes: ≈ 10–60 KB per image instead of 150 KB of
pixels, and no decoding. Needs CUDA and torchvision; anywhere else it is refused in one line.
"""

from __future__ import annotations

import io
import random
from typing import Any

import torch
import torch.nn.functional as F

from kdlab.data.decode import JPEG_MAGIC, center_box, random_resized_box
from kdlab.errors import ConfigError, DataError


def check_device_decode(device: torch.device) -> None:
    """Refuse `data.decoder=gpu` in one line where it cannot run: not a CUDA device, or no torchvision."""
    if device.type != "cuda":
        raise ConfigError(
            f"data.decoder=gpu decodes JPEGs on a CUDA device (torchvision.io.decode_jpeg); this run's device is "
            f"{device.type}: use data.decoder=auto"
        )
    try:
        import torchvision.io  # noqa: F401
    except ImportError:
        raise ConfigError("data.decoder=gpu needs torchvision: pip install 'kdlab[vision]'") from None


def encoded_sample(data: bytes, where: str, size: int, rng: random.Random | None) -> tuple[torch.Tensor, list[int]]:
    """A JPEG's bytes as a uint8 tensor (N,) and its crop box [x0, y0, x1, y1] (the whole image when it is already
    size×size). Not a JPEG, or no readable header: a one-line DataError."""
    from PIL import Image

    if data[:2] != JPEG_MAGIC:
        raise DataError(
            f"image {where} is not a JPEG: data.decoder=gpu decodes JPEG files only (use data.decoder=auto)"
        )
    try:
        with Image.open(io.BytesIO(data)) as f:  # reads the header only
            w, h = f.size
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"image {where} is unreadable or corrupt ({e}); remove or replace it") from None
    if (w, h) == (size, size):
        box = [0, 0, w, h]
    else:
        box = list(random_resized_box(w, h, rng) if rng is not None else center_box(w, h, size))
    return torch.frombuffer(bytearray(data), dtype=torch.uint8), box


def collate_encoded(items: list[tuple[torch.Tensor, list[int], int, int]]) -> tuple[Any, ...]:
    """Samples → (list of byte tensors, boxes (B, 4) int64, labels (B,), indices (B,))."""
    encoded, boxes, labels, index = zip(*items, strict=True)
    return list(encoded), torch.tensor(boxes), torch.tensor(labels), torch.tensor(index)


def decode_batch(
    encoded: list[torch.Tensor], boxes: torch.Tensor, size: int, channels: int, device: torch.device
) -> torch.Tensor:
    """JPEG bytes (a list of B uint8 tensors) → uint8 (B, channels, size, size) on `device`: one batched decode,
    then each box cropped and resized (bilinear, antialiased, rounded back to uint8)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    try:
        images = decode_jpeg(encoded, mode=mode, device=device)
    except RuntimeError as e:
        raise DataError(
            f"a JPEG of this batch could not be decoded on {device} ({e}); run `kdlab data check`"
        ) from None
    out = torch.empty(len(images), channels, size, size, dtype=torch.uint8, device=device)
    for j, (img, (x0, y0, x1, y1)) in enumerate(zip(images, boxes.tolist(), strict=True)):
        crop = img[:, y0:y1, x0:x1]
        if crop.shape[1:] == (size, size):
            out[j] = crop
        else:
            resized = F.interpolate(crop[None].float(), size=(size, size), mode="bilinear", antialias=True)
            out[j] = resized[0].round_().clamp_(0, 255).to(torch.uint8)
    return out
