"""Augmentation throughput: kdlab's batched views vs a per-sample Pillow pipeline of the same policy, and the
step-time overhead of CutMixPick (m=2) over TLCutMix.

    .venv/bin/python benchmarks/augment_throughput.py [--batch 128] [--batches 20]

Both sides start from a uint8 batch in memory and end with a float [0, 1] (B, 3, 32, 32) tensor; the Pillow
side converts each image to PIL, applies the policy per image and stacks (what a Dataset.__getitem__ with
torchvision-style transforms does, here in one process). Mixing views (mixup/CutMix) are batch ops in the
reference repos too, so their reference is the usual per-batch NumPy code on the stacked batch."""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import pillow_reference as ref

from kdlab.views import StandardView, build_view


def reference_pipeline(name: str):  # type: ignore[no-untyped-def]
    def per_image(u8: np.ndarray) -> np.ndarray:
        img = ref.crop_flip(__import__("PIL.Image").Image.fromarray(u8.transpose(1, 2, 0)))
        if name == "autoaugment":
            img = ref.autoaugment_cifar10(img)
        arr = ref.to_tensor_array(img)
        return ref.cutout(arr) if name == "cutout" else arr

    def run(batch: np.ndarray) -> np.ndarray:
        out = np.stack([per_image(x) for x in batch])
        if name in ("mixup", "cutmix"):  # the usual per-batch NumPy mixing (one λ per batch)
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

    return run


def kdlab_pipeline(name: str):  # type: ignore[no-untyped-def]
    standard = StandardView("crop_flip", 32, padding=4).train()
    strong = build_view(name, {}, 32) if name != "crop_flip" else None
    g = torch.Generator().manual_seed(0)

    def run(batch: torch.Tensor) -> torch.Tensor:
        x = standard(batch, g)
        return strong(x, g).images if strong is not None else x

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

    from kdlab.config import load_config
    from kdlab.engine import Trainer
    from kdlab.methods import Teacher, build_method
    from kdlab.models import create_model

    data = synthetic(steps * 64)
    rates = {}
    for view in ("cutmix", "cutmix_pick"):
        cfg = load_config(None, ["data.batch_size=64", "data.drop_last=true", "method.name=kd", f"views.strong={view}"])
        torch.manual_seed(0)
        method = build_method(cfg.method, create_model("resnet20", 100), [Teacher(create_model("resnet56", 100), {})])
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(cfg, method, data, Path(tmp), torch.device("cpu"), log=lambda _: None)
            trainer.train_epoch(1)  # warm-up epoch
            t0 = time.perf_counter()
            trainer.train_epoch(2)
            rates[view] = trainer.train_loader.num_samples / (time.perf_counter() - t0)
    return rates["cutmix"], rates["cutmix_pick"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--pick-steps", type=int, default=20)
    args = ap.parse_args()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    u8 = torch.randint(0, 256, (args.batches, args.batch, 3, 32, 32), dtype=torch.uint8)
    np_batches = [b.numpy() for b in u8]
    torch_batches = list(u8)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.batches} batches")
    print("| view (on top of crop+flip) | per-sample Pillow (img/s) | kdlab batched (img/s) | speed-up |")
    print("|---|---|---|---|")
    for name in ("crop_flip", "cutout", "mixup", "cutmix", "autoaugment"):
        pil = [timed(reference_pipeline(name), np_batches) for _ in range(2)]
        ours = [timed(kdlab_pipeline(name), torch_batches) for _ in range(2)]
        p, k = statistics.median(pil), statistics.median(ours)
        print(f"| {name} | {p:.0f} | {k:.0f} | {k / p:.1f}× |")
    for name in ("randaugment", "trivialaugment"):
        k = statistics.median([timed(kdlab_pipeline(name), torch_batches) for _ in range(2)])
        print(f"| {name} | – | {k:.0f} | – |")
    tl, pick = pick_overhead(args.pick_steps)
    print()
    print("| resnet56 → resnet20, batch 64 | KD+TLCutMix (img/s) | KD+TLCutMix+pick, m=2 (img/s) | step time ratio |")
    print("|---|---|---|---|")
    print(f"| CPU | {tl:.0f} | {pick:.0f} | {tl / pick:.2f} |")


if __name__ == "__main__":
    main()
