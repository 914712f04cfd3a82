"""Images/s per core of three input pipelines on the same folder of photographs, side by side in one run.

1. torchvision: ImageFolder + RandomResizedCrop(224) + flip + ToTensor + Normalize in a DataLoader (the released
   code's pipeline; needs torchvision: run it with .venv-vision/bin/python).
2. kdlab streaming: `imagefolder:` with `data.stream=on` — DataLoader workers decode each file (Pillow, or
   simplejpeg when installed: both rows) at the smallest sufficient DCT scale and resize its RandomResizedCrop
   box to 224 px with PyTorch's uint8 antialiased kernel (data/decode.py); uint8 batches (flip and
   normalisation follow on the device).
3. kdlab prepared: `kdlab prepare --max-side 256 --quality 90` of that folder, read by the same streaming loader.

Each pipeline runs one pass over the training images with 1 and with 2 workers, batch 64, after one batch of
warm-up (worker start-up is not counted); img/s per core = img/s / workers. Without `--folder`, a folder of
photograph-sized JPEGs is made from CIFAR-100 (each image upscaled to 500×375, bicubic, with Gaussian grain of
σ = 10 so that the files weigh about what photographs do (≈ 60 KB at quality 90): JPEG decoding costs per pixel and per
coded bit, so the size and weight are what matter).

    .venv-vision/bin/python benchmarks/input_throughput.py [--folder IMAGEFOLDER] [--images 768] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kdlab.data import load_dataset, make_loader
from kdlab.data.decode import simplejpeg_available
from kdlab.data.prepared import prepare

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar100-jpg.tar.gz"


def photo_folder(root: Path, n: int, classes: int = 8) -> Path:
    """`n` train images (and a few test ones) of 500×375 px, JPEG q90, from CIFAR-100's first images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    made = 0
    with tarfile.open(SHARED) as tar:
        for m in tar:
            if not m.isfile() or not m.name.lower().endswith((".jpg", ".png")) or "/train/" not in m.name:
                continue
            split = "train" if made < n else "test"
            cls = f"c{made % classes}"
            f = tar.extractfile(m)
            assert f is not None
            img = Image.open(f).convert("RGB").resize((500, 375), Image.Resampling.BICUBIC)
            arr = np.asarray(img).astype(np.float32) + rng.normal(0, 10, (375, 500, 3))
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / split / cls / f"{made:06d}.jpg", quality=90)
            made += 1
            if made == n + classes * 2:
                break
    return root


def time_batches(batches, n_images: int) -> float:
    """img/s over the batches after the first (warm-up: worker start-up)."""
    it = iter(batches)
    first = next(it)
    seen, t0 = 0, time.perf_counter()
    for b in it:
        images = b[0] if isinstance(b, list | tuple) else b.images
        seen += images.shape[0]
    elapsed = time.perf_counter() - t0
    del first
    return seen / elapsed


def torchvision_pipeline(root: Path, workers: int, n: int) -> float | None:
    try:
        from torchvision import datasets, transforms
    except ImportError:
        return None
    tf = transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])  # fmt: skip
    ds = datasets.ImageFolder(str(root / "train"), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=workers)
    return time_batches(loader, n)


def kdlab_pipeline(spec: str, workers: int, n: int, decoder: str = "pillow") -> float | None:
    if decoder == "simplejpeg" and not simplejpeg_available():
        return None
    data = load_dataset(spec, stream="on", image_size=224)
    loader = make_loader(data, "train", 64, torch.device("cpu"), True, generator=torch.Generator().manual_seed(0),
                         workers=workers, decoder=decoder)  # fmt: skip
    return time_batches(loader, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", help="an ImageFolder tree (train/<class>/*.jpg, test/…) of real photographs")
    p.add_argument("--images", type=int, default=768, help="training images made when --folder is not given")
    p.add_argument("--out", help="write input_throughput.json here")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.folder) if args.folder else photo_folder(Path(tmp) / "photos", args.images)
        files = sorted((root / "train").rglob("*.jpg"))
        n = len(files)
        mean_kb = sum(f.stat().st_size for f in files) / n / 1024
        t0 = time.perf_counter()
        manifest = prepare(f"imagefolder:{root}", Path(tmp) / "prepared", max_side=256, quality=90, log=lambda _: None)
        prep_s = time.perf_counter() - t0
        rows = []
        for workers in (1, 2):
            prepared = f"prepared:{Path(tmp) / 'prepared'}"
            results = {
                "torchvision ImageFolder + RandomResizedCrop(224)": torchvision_pipeline(root, workers, n),
                "kdlab streaming (imagefolder:, stream=on), Pillow": kdlab_pipeline(f"imagefolder:{root}", workers, n),
                "kdlab streaming, simplejpeg": kdlab_pipeline(f"imagefolder:{root}", workers, n, "simplejpeg"),
                "kdlab prepared (max side 256, q90), Pillow": kdlab_pipeline(prepared, workers, n),
                "kdlab prepared, simplejpeg": kdlab_pipeline(prepared, workers, n, "simplejpeg"),
            }
            rows += [(name, workers, v) for name, v in results.items()]
    base = {w: v for name, w, v in rows if name.startswith("torchvision") and v}
    print(f"{n} training images, {mean_kb:.0f} KB on average; prepare: {prep_s:.1f} s, "
          f"{manifest['stored_bytes'] / n / 1024:.0f} KB per stored image\n")  # fmt: skip
    print("| pipeline | workers | img/s | img/s per core | × torchvision per core |")
    print("|---|---|---|---|---|")
    for name, workers, v in rows:
        ratio = f"{v / base[workers]:.2f}" if v and workers in base else "–"
        cells = (f"{v:.0f}", f"{v / workers:.0f}") if v else ("– (not installed)", "–")
        print(f"| {name} | {workers} | {cells[0]} | {cells[1]} | {ratio} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"images": n, "mean_kb": mean_kb, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
