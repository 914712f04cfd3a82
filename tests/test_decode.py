"""Streaming decode (data/decode.py): the crop boxes, the scaled-IDCT decode and the antialiased uint8 resize,
against Pillow's own full decode and resize (the releases' pipeline) as the reference."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdlab.data import decode
from kdlab.data.decode import (
    center_box,
    dct_reduction,
    decode_fixed,
    decoded_box,
    random_resized_box,
    resolve_decoder,
)
from kdlab.errors import ConfigError, DataError


def photo(w: int, h: int, seed: int = 0, quality: int = 90, mode: str = "RGB") -> bytes:
    """A JPEG of w×h with a photograph's spectrum, roughly: amplitude falling with frequency (random grids at
    1/128, 1/32 and 1/8 of the size, bicubic-upsampled, weighted 4 : 2 : 1) plus grain of σ = 3."""
    rng = np.random.default_rng(seed)
    c = 3 if mode == "RGB" else 1
    field = np.zeros((h, w, c), np.float32)
    for cell, weight in ((128, 4.0), (32, 2.0), (8, 1.0)):
        grid = rng.normal(0, 1, (max(2, h // cell), max(2, w // cell), c)).astype(np.float32)
        up = [np.asarray(Image.fromarray(grid[..., i]).resize((w, h), Image.Resampling.BICUBIC)) for i in range(c)]
        field += weight * np.stack(up, -1)
    arr = (128 + 12 * field + rng.normal(0, 3, field.shape)).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr.squeeze(-1) if c == 1 else arr).save(out, "JPEG", quality=quality)
    return out.getvalue()


def photo_tree(root: Path, per_class: int, size: tuple[int, int], classes: int = 2) -> Path:
    """An ImageFolder tree of photo() JPEGs: root/{train,test}/c<k>/<i>.jpg."""
    for split in ("train", "test"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(per_class):
                (root / split / f"c{c}" / f"{i}.jpg").write_bytes(photo(*size, seed=10 * c + i))
    return root


def pillow_reference(data: bytes, box: tuple[int, int, int, int], size: int, mode: str = "RGB") -> np.ndarray:
    """The releases' way: decode at full size, then Pillow's bilinear (antialiased) resize of the box."""
    with Image.open(io.BytesIO(data)) as f:
        out = np.asarray(f.convert(mode).resize((size, size), Image.Resampling.BILINEAR, box=box))
    return out[None] if out.ndim == 2 else out.transpose(2, 0, 1)


def test_random_resized_box_follows_torchvisions_rule():
    rng = random.Random(0)
    for _ in range(200):
        x0, y0, x1, y1 = random_resized_box(500, 375, rng)
        area, aspect = (x1 - x0) * (y1 - y0) / (500 * 375), (x1 - x0) / (y1 - y0)
        assert 0 <= x0 < x1 <= 500 and 0 <= y0 < y1 <= 375
        assert 0.079 <= area <= 1.0 and 3 / 4 - 0.02 <= aspect <= 4 / 3 + 0.02


def test_center_box_is_what_resize_then_centre_crop_keeps():
    # 500×375 → shorter side 224 / 0.875 = 256 → the 224 centre square is 224 · 375/256 = 328 source pixels
    assert center_box(500, 375, 224) == (86, 23, 414, 351)
    assert center_box(32, 32, 32) == (2, 2, 30, 30)  # 28 = 32 · 32/37 of a 32-px image: the 0.875 crop


def test_dct_reduction_takes_the_largest_scale_that_keeps_the_crop():
    assert dct_reduction(2000, 1500, (0, 0, 1500, 1500), 224) == 4  # 1500/224 = 6.7: 1/4, not 1/8
    assert dct_reduction(2000, 1500, (0, 0, 1800, 1800), 224) == 8
    assert dct_reduction(500, 375, (0, 0, 440, 375), 224) is None  # 375/224 < 2: full size
    assert dct_reduction(500, 375, (0, 0, 375, 375), 160) == 2


@pytest.mark.parametrize("seed", range(4))
def test_a_random_crop_equals_pillows_decode_and_resize(seed):
    """No DCT scaling (crops under 2× the output): the antialiased uint8 resize is Pillow's filter, within one
    level on ≥ 99% of the values."""
    data = photo(500, 375, seed)
    ours = decode_fixed(io.BytesIO(data), 224, 3, random.Random(seed))
    box = random_resized_box(500, 375, random.Random(seed))
    diff = np.abs(ours.astype(int) - pillow_reference(data, box, 224))
    assert ours.shape == (3, 224, 224) and ours.dtype == np.uint8
    assert (diff <= 1).mean() >= 0.99 and diff.max() <= 8, (diff.max(), (diff <= 1).mean())


def test_the_test_crop_equals_pillows_and_a_grey_image_keeps_one_channel():
    data = photo(320, 200, 5, mode="L")
    ours = decode_fixed(io.BytesIO(data), 96, 1, None)
    assert dct_reduction(320, 200, center_box(320, 200, 96), 96) is None  # 175 source px for 96: full decode
    ref = pillow_reference(data, center_box(320, 200, 96), 96, "L")
    assert ours.shape == (1, 96, 96) and np.abs(ours.astype(int) - ref).mean() < 0.2


def test_a_large_photo_decodes_at_a_reduced_scale_and_stays_close_to_the_full_decode(monkeypatch):
    """A 1600×1200 photo's test crop at 96 px: decoded at 1/8 (a 64th of the pixels). The crop taken is the drawn
    box rounded to whole decoded pixels; against a full decode + Pillow resize of that box the values stay within
    about one level (the scaled IDCT is itself a low-pass)."""
    data = photo(1600, 1200, 1)
    shapes: list[tuple[int, ...]] = []
    real = decode._decode_pillow

    def spy(*args):
        arr = real(*args)
        shapes.append(arr.shape)
        return arr

    monkeypatch.setattr(decode, "_decode_pillow", spy)
    ours = decode_fixed(io.BytesIO(data), 96, 3, None, "pillow")
    assert shapes == [(150, 200, 3)]
    taken = tuple(8 * v for v in decoded_box(center_box(1600, 1200, 96), 8, 200, 150))
    diff = np.abs(ours.astype(int) - pillow_reference(data, taken, 96))  # type: ignore[arg-type]
    assert diff.mean() < 1.5, diff.mean()


def test_an_image_of_the_output_size_is_decoded_only():
    data = photo(32, 32, 2)
    with Image.open(io.BytesIO(data)) as f:
        exact = np.asarray(f.convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(decode_fixed(io.BytesIO(data), 32, 3, random.Random(0)), exact)


def test_png_files_and_corrupt_files(tmp_path):
    png = tmp_path / "a.png"
    Image.fromarray(np.full((40, 60, 3), 7, np.uint8)).save(png)
    assert (decode_fixed(str(png), 16, 3, random.Random(0)) == 7).all()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(photo(64, 64)[:100])
    with pytest.raises(DataError, match="bad.jpg is unreadable or corrupt"):
        decode_fixed(str(bad), 16, 3, random.Random(0))


def test_decoder_choice(monkeypatch):
    monkeypatch.setattr(decode, "simplejpeg_available", lambda: False)
    assert resolve_decoder("auto") == "pillow" and resolve_decoder("pillow") == "pillow"
    with pytest.raises(ConfigError, match=r"pip install 'kdlab\[turbo\]'"):
        resolve_decoder("simplejpeg")
    monkeypatch.setattr(decode, "simplejpeg_available", lambda: True)
    assert resolve_decoder("auto") == "simplejpeg" and resolve_decoder("pillow") == "pillow"


def test_gpu_decode_is_refused_in_one_line_off_cuda(tmp_path):
    from kdlab.data import load_dataset, make_loader

    data = load_dataset(f"imagefolder:{photo_tree(tmp_path, 1, (48, 40))}", stream="on", image_size=32)
    with pytest.raises(ConfigError, match=r"^data.decoder=gpu decodes JPEGs on a CUDA device .*device is cpu: use"):
        make_loader(data, "train", 2, torch.device("cpu"), True, decoder="gpu")


def test_gpu_decode_workers_hand_over_bytes_and_the_cpu_decoders_box():
    from kdlab.data.device_decode import encoded_sample

    data = photo(300, 200, 3)
    encoded, box = encoded_sample(data, "x.jpg", 96, random.Random(4))
    assert encoded.dtype == torch.uint8 and bytes(encoded.numpy()) == data
    assert tuple(box) == random_resized_box(300, 200, random.Random(4))
    assert encoded_sample(data, "x.jpg", 96, None)[1] == list(center_box(300, 200, 96))
    assert encoded_sample(photo(32, 32), "x.jpg", 32, random.Random(0))[1] == [0, 0, 32, 32]
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, "PNG")
    with pytest.raises(DataError, match="x.png is not a JPEG: data.decoder=gpu decodes JPEG files only"):
        encoded_sample(png.getvalue(), "x.png", 8, None)
