"""The optional libjpeg-turbo decoder (`pip install 'kdlab[turbo]'`: simplejpeg), run by `make test-vision`:
it gives Pillow's pixels exactly — full size and at every scaled-IDCT reduction — so a run's batches do not
depend on which decoder the machine has."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from test_decode import photo, photo_tree

from kdlab.data import load_dataset, make_loader
from kdlab.data.decode import decode_fixed, resolve_decoder

pytest.importorskip("simplejpeg")


@pytest.mark.parametrize("size", [224, 160, 96, 48, 24])  # full decode and the reductions 2, 4, 8
@pytest.mark.parametrize("seed", range(3))
def test_simplejpeg_gives_pillows_pixels(size, seed):
    data = photo(800, 600, seed)
    for rng in (random.Random(seed), None):
        a = decode_fixed(io.BytesIO(data), size, 3, rng and random.Random(seed), "pillow")
        b = decode_fixed(io.BytesIO(data), size, 3, rng and random.Random(seed), "simplejpeg")
        assert np.array_equal(a, b), (size, seed, rng is None)


def test_simplejpeg_on_grey_images_and_png_files(tmp_path):
    data = photo(400, 300, 1, mode="L")
    assert np.array_equal(decode_fixed(io.BytesIO(data), 64, 1, None, "pillow"),
                          decode_fixed(io.BytesIO(data), 64, 1, None, "simplejpeg"))  # fmt: skip
    from PIL import Image

    Image.fromarray(np.full((40, 60, 3), 9, np.uint8)).save(tmp_path / "a.png")  # not a JPEG: Pillow decodes it
    assert (decode_fixed(str(tmp_path / "a.png"), 16, 3, None, "simplejpeg") == 9).all()


def test_auto_picks_simplejpeg_and_the_loader_batches_equal_pillows(tmp_path):
    assert resolve_decoder("auto") == "simplejpeg"
    data = load_dataset(f"imagefolder:{photo_tree(tmp_path, 6, (300, 200))}", stream="on", image_size=64)
    batches = {}
    for decoder in ("pillow", "simplejpeg"):
        loader = make_loader(data, "train", 4, torch.device("cpu"), True,
                             generator=torch.Generator().manual_seed(0), workers=1, decoder=decoder)  # fmt: skip
        batches[decoder] = [b.images for b in loader]
    assert len(batches["pillow"]) == 3
    assert all(torch.equal(a, b) for a, b in zip(batches["pillow"], batches["simplejpeg"], strict=True))
