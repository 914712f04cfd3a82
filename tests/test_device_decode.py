"""`data.decoder=gpu` (data/device_decode.py): one batched torchvision.io.decode_jpeg on the device, then each
crop box resized. Run by `make test-vision` on the CPU (torchvision's decode_jpeg takes device="cpu" too) and by
the device check on CUDA (KDLAB_TEST_DEVICE=cuda): the pixels of the CPU decoders, within one level."""

from __future__ import annotations

import io
import os
import random

import numpy as np
import pytest
import torch
from test_decode import photo, photo_tree

from kdlab.data import load_dataset, make_loader, streaming
from kdlab.data.decode import decode_fixed
from kdlab.data.device_decode import decode_batch, encoded_sample

pytest.importorskip("torchvision")
DEVICE = torch.device(os.environ.get("KDLAB_TEST_DEVICE", "cpu"))
if DEVICE.type == "cuda" and not torch.cuda.is_available():
    pytest.skip("KDLAB_TEST_DEVICE=cuda but no CUDA device", allow_module_level=True)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    diff = np.abs(a.astype(int) - b.astype(int))
    return bool((diff <= 1).mean() >= 0.99 and diff.max() <= 8)


@pytest.mark.parametrize("channels", [3, 1])
def test_a_batch_decoded_on_the_device_equals_the_cpu_decoders(channels):
    """Crops under twice the output (the CPU decoders then decode at full size too): the same box, Pillow's
    filter within one level on ≥ 99% of the values; a file already of the output size: exactly its pixels."""
    mode = "RGB" if channels == 3 else "L"
    files = [photo(300, 200, s, mode=mode) for s in range(6)] + [photo(160, 160, 9, mode=mode)]
    rngs = [random.Random(s) for s in range(len(files))]
    samples = [encoded_sample(f, "x.jpg", 160, r) for f, r in zip(files, rngs, strict=True)]
    out = decode_batch([e for e, _ in samples], torch.tensor([b for _, b in samples]), 160, channels, DEVICE)
    assert out.shape == (7, channels, 160, 160) and out.dtype == torch.uint8 and out.device.type == DEVICE.type
    for j, f in enumerate(files):
        cpu = decode_fixed(io.BytesIO(f), 160, channels, random.Random(j), "pillow")
        assert _close(out[j].cpu().numpy(), cpu), j
    encoded, box = encoded_sample(files[0], "x.jpg", 160, None)
    test = decode_batch([encoded], torch.tensor([box]), 160, channels, DEVICE)
    assert _close(test[0].cpu().numpy(), decode_fixed(io.BytesIO(files[0]), 160, channels, None, "pillow"))


def test_the_loader_with_gpu_decode_gives_the_cpu_loaders_batches(tmp_path, monkeypatch):
    """Same seeded order, labels and crops as the CPU decoder's loader (on the CPU: the device check lifted)."""
    if DEVICE.type != "cuda":
        monkeypatch.setattr(streaming, "check_device_decode", lambda device: None)
    data = load_dataset(f"imagefolder:{photo_tree(tmp_path, 5, (120, 90))}", stream="on", image_size=64)
    runs = {}
    for decoder in ("pillow", "gpu"):
        for split in ("train", "test"):
            g = torch.Generator(DEVICE).manual_seed(0)
            loader = make_loader(data, split, 4, DEVICE, split == "train", generator=g, workers=1, decoder=decoder)
            runs[decoder, split] = [(b.images.cpu(), b.labels.cpu(), b.index.cpu()) for b in loader]
            loader.close()
    for split in ("train", "test"):
        for (ia, la, xa), (ib, lb, xb) in zip(runs["pillow", split], runs["gpu", split], strict=True):
            assert torch.equal(la, lb) and torch.equal(xa, xb)
            assert _close(ia.numpy(), ib.numpy())
