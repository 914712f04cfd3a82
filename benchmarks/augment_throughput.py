"""Augmentation throughput: kdlab's batched views vs a per-sample Pillow pipeline of the same policy, and the
step-time overhead of CutMixPick (m=2) over TLCutMix.

    .venv/bin/python benchmarks/augment_throughput.py [--batch 128] [--batches 20]

Both sides start from a uint8 batch in memory and end with a float [0, 1] (B, 3, 32, 32) tensor; the Pillow
side converts each image to PIL, applies the policy per image and stacks (what a Dataset.__getitem__ with
torchvision-style transforms does, here in one process). Mixing views (mixup/CutMix) are batch ops in the
reference repos too, so their reference is the usual per-batch NumPy code on the stacked batch. Each column is
the best of --repeats interleaved passes: on a shared machine interference only ever slows a pass down."""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import pillow_reference as ref

from kdlab.engine.memory import retain_freed_memory
from kdlab.views import StandardView, build_view
from kdlab.views.standard import to_unit


class PerImage:
    """The per-sample Pillow transform of a KD repo's Dataset.__getitem__ (picklable for DataLoader workers)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, u8: np.ndarray) -> np.ndarray:
        from PIL import Image

        img = ref.crop_flip(Image.fromarray(u8.transpose(1, 2, 0)))
        if self.name == "autoaugment":
            img = ref.autoaugment_cifar10(img)
        arr = ref.to_tensor_array(img)
        return ref.cutout(arr) if self.name == "cutout" else arr


class ArrayDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, transform: PerImage):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.transform(self.images[i])


def mix_batch(name: str, out: np.ndarray) -> np.ndarray:
    """The usual per-batch NumPy mixing of the reference repos (one λ and one box per batch)."""
    if name in ("mixup", "cutmix"):
        lam = np.random.beta(1.0, 1.0)
        perm = np.random.permutation(len(out))
        if name == "mixup":
            out = lam * out + (1 - lam) * out[perm]
        else:
            h = w = out.shape[-1]
            r = np.sqrt(1 - lam)
            cy, cx = np.random.randint(h), np.random.randint(w)
            y1, y2 = np.clip([cy - int(h * r) // 2, cy + int(h * r) // 2], 0, h)
            x1, x2 = np.clip([cx - int(w * r) // 2, cx + int(w * r) // 2], 0, w)
            out[:, :, y1:y2, x1:x2] = out[perm][:, :, y1:y2, x1:x2]
    return out


def reference_pipeline(name: str):  # type: ignore[no-untyped-def]
    per_image = PerImage(name)

    def run(batch: np.ndarray) -> np.ndarray:
        return mix_batch(name, np.stack([per_image(x) for x in batch]))

    return run


def dataloader_rate(name: str, images: np.ndarray, batch: int, workers: int = 2) -> float:
    """Images/s of the common KD-repo pipeline: a torch DataLoader with `workers` processes applying the
    per-sample Pillow transforms (batches collated to float tensors, mixing on the batch), timed over one pass
    after the workers have started and delivered a first batch."""
    loader = torch.utils.data.DataLoader(
        ArrayDataset(images, PerImage(name)), batch_size=batch, shuffle=True, num_workers=workers,
        persistent_workers=True, drop_last=True,
    )  # fmt: skip
    for _ in loader:  # warm-up pass: worker start-up is not counted
        break
    t0 = time.perf_counter()
    n = 0
    for b in loader:
        mix_batch(name, b.numpy())
        n += len(b)
    return n / (time.perf_counter() - t0)


def kdlab_pipeline(name: str):  # type: ignore[no-untyped-def]
    standard = StandardView("crop_flip", 32, padding=4).train()
    strong = build_view(name, {}, 32) if name != "crop_flip" else None
    g = torch.Generator().manual_seed(0)

    def run(batch: torch.Tensor) -> torch.Tensor:  # as ViewPipeline: the 8-bit crop, its float, the strong view
        u = standard.forward_u8(batch, g)
        x = to_unit(u)
        return strong(x, g, x_u8=u).images if strong is not None else x

    return run


def timed(fn, batches) -> float:  # type: ignore[no-untyped-def]
    fn(batches[0])  # warm-up
    t0 = time.perf_counter()
    n = 0
    for b in batches:
        fn(b)
        n += len(b)
    return n / (time.perf_counter() - t0)


def pick_overhead(steps: int) -> tuple[float, float]:
    """Images/s of a resnet56 → resnet20 KD step with TLCutMix and with TLCutMix+pick (m=2), batch 64."""
    sys.path.insert(0, str(Path(__file__).parent))
    from step_throughput import synthetic

    from kdlab.assembly import build_trainer
    from kdlab.config import load_config
    from kdlab.methods import Teacher, build_method
    from kdlab.models import create_model

    data = synthetic(steps * 64)
    rates = {}
    for view in ("cutmix", "cutmix_pick"):
        cfg = load_config(None, ["data.batch_size=64", "data.drop_last=true", "method.name=kd", f"views.strong={view}"])
        torch.manual_seed(0)
        method = build_method(cfg.method, create_model("resnet20", 100), [Teacher(create_model("resnet56", 100), {})])
        with tempfile.TemporaryDirectory() as tmp:
            trainer = build_trainer(cfg, method, data, Path(tmp), torch.device("cpu"), log=lambda _: None)
            trainer.train_epoch(1)  # warm-up epoch
            t0 = time.perf_counter()
            trainer.train_epoch(2)
            rates[view] = trainer.train_loader.num_samples / (time.perf_counter() - t0)
    return rates["cutmix"], rates["cutmix_pick"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--pick-steps", type=int, default=20, help="0 skips the CutMixPick overhead table")
    ap.add_argument("--repeats", type=int, default=5, help="passes per column, interleaved; the best is shown")
    ap.add_argument("--views", default="crop_flip,cutout,mixup,cutmix,autoaugment,randaugment,trivialaugment")
    ap.add_argument("--no-retain-memory", action="store_true", help="leave glibc's malloc thresholds as they are")
    args = ap.parse_args()
    views = args.views.split(",")
    # as a kdlab run does (engine.retain_memory); set before the DataLoader forks, so its workers have it too
    retained = not args.no_retain_memory and retain_freed_memory()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    u8 = torch.randint(0, 256, (args.batches, args.batch, 3, 32, 32), dtype=torch.uint8)
    np_batches = [b.numpy() for b in u8]
    torch_batches = list(u8)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.batches} batches,"
          f" freed memory retained: {retained}")  # fmt: skip
    all_images = u8.reshape(-1, 3, 32, 32).numpy()
    print("| view (on top of crop+flip) | Pillow, 1 process (img/s) | DataLoader, 2 workers (img/s) "
          "| kdlab batched (img/s) | kdlab / Pillow | kdlab / DataLoader |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name in [v for v in views if v in ("crop_flip", "cutout", "mixup", "cutmix", "autoaugment")]:
        pil, dl, ours = [], [], []
        for _ in range(args.repeats):  # interleaved, so a slow spell of this shared machine hits every column
            pil.append(timed(reference_pipeline(name), np_batches))
            dl.append(dataloader_rate(name, all_images, args.batch))
            ours.append(timed(kdlab_pipeline(name), torch_batches))
        p, d, k = max(pil), max(dl), max(ours)
        print(f"| {name} | {p:.0f} | {d:.0f} | {k:.0f} | {k / p:.1f}× | {k / d:.1f}× |")
    for name in [v for v in views if v in ("randaugment", "trivialaugment")]:
        k = max(timed(kdlab_pipeline(name), torch_batches) for _ in range(args.repeats))
        print(f"| {name} | – | – | {k:.0f} | – | – |")
    if args.pick_steps == 0:
        return
    tl, pick = pick_overhead(args.pick_steps)
    print()
    print("| resnet56 → resnet20, batch 64 | KD+TLCutMix (img/s) | KD+TLCutMix+pick, m=2 (img/s) | step time ratio |")
    print("|---|---|---|---|")
    print(f"| CPU | {tl:.0f} | {pick:.0f} | {tl / pick:.2f} |")


if __name__ == "__main__":
    main()
