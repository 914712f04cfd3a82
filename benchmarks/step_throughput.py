"""Images/s of a KD step: kdlab's Trainer vs a plain hand-written PyTorch loop of the same math, one process.

Both do, per step: index a uint8 batch in memory, per-sample crop(4)+flip, normalise, teacher forward without
grad, student forward/backward, 0.1·CE + 0.9·τ²·KL (τ=4), SGD (momentum 0.9, wd 5e-4). Runs alternate
(plain, kdlab, plain, kdlab, …) so drift affects both; the table shows medians and the ratio.

    .venv/bin/python benchmarks/step_throughput.py [--steps 30] [--repeats 3] [--batch 64] [--device cuda]
        [--extra engine.amp=bf16 engine.channels_last=true]   # kdlab variants (the plain loop stays fp32)
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from kdlab.assembly import build_trainer
from kdlab.config import load_config
from kdlab.data import ImageDataset, ImageSplit
from kdlab.engine.trainer import Trainer
from kdlab.methods import Teacher, build_method
from kdlab.models import create_model, model_taps
from kdlab.views import random_crop_flip

PAIRS = [("resnet56", "resnet20"), ("resnet32x4", "resnet8x4")]
MEAN, STD = (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)


def synthetic(n: int, classes: int = 100) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    split = ImageSplit(images, labels)
    return ImageDataset(
        "synthetic", split, ImageSplit(images[:64], labels[:64]), [str(i) for i in range(classes)], MEAN, STD
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(teacher_name: str, student_name: str, data: ImageDataset, batch: int, device: torch.device) -> float:
    """The reference: what one writes by hand in PyTorch. Returns images/s over one pass."""
    torch.manual_seed(0)
    teacher = create_model(teacher_name, 100).eval().to(device)
    student = create_model(student_name, 100).train().to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    g = torch.Generator(device=device).manual_seed(0)
    images, labels = data.train.images.to(device), data.train.labels.to(device)
    order = torch.randperm(len(labels), generator=g, device=device)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(len(labels) // batch):
        idx = order[i * batch : (i + 1) * batch]
        xb = random_crop_flip(images[idx], 4, True, g)
        x = (xb.float() / 255 - mean) / std
        y = labels[idx]
        with torch.no_grad():
            t = teacher(x)
        s = student(x)
        kl = F.kl_div(F.log_softmax(s / 4, 1), F.log_softmax(t / 4, 1), reduction="batchmean", log_target=True)
        loss = 0.1 * F.cross_entropy(s, y) + 0.9 * 16 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return (len(labels) // batch) * batch / (time.perf_counter() - t0)


@contextlib.contextmanager
def kdlab_trainer(
    teacher_name: str, student_name: str, data: ImageDataset, batch: int, extra: list[str], device: torch.device
) -> Iterator[Trainer]:
    """A KD Trainer (100 classes) on `data` with kdlab overrides `extra`, its run folder temporary; compiled or
    captured steps already compiled/captured (five steps run)."""
    cfg = load_config(None, [f"data.batch_size={batch}", "data.drop_last=true", "method.name=kd", *extra])
    torch.manual_seed(0)
    teacher = Teacher(create_model(teacher_name, 100), model_taps(teacher_name))
    method = build_method(cfg.method, create_model(student_name, 100), [teacher], model_taps(student_name))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(cfg, method, data, Path(tmp), device, log=lambda _: None)
        if "engine.compile=true" in extra or "engine.cuda_graphs=true" in extra:
            trainer.train_epoch(1, max_steps=5)  # compilation, warm-up and capture are not counted
        yield trainer


def kdlab_loop(
    teacher_name: str, student_name: str, data: ImageDataset, batch: int, extra: list[str], device: torch.device
) -> float:
    """kdlab's Trainer.train_epoch on the same data. Returns images/s over one epoch."""
    with kdlab_trainer(teacher_name, student_name, data, batch, extra, device) as trainer:
        _sync(device)
        t0 = time.perf_counter()
        trainer.train_epoch(1)
        _sync(device)
        return trainer.train_loader.num_samples / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--extra", nargs="*", default=[], help="kdlab overrides, e.g. engine.channels_last=true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    data = synthetic(args.steps * args.batch)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"torch {torch.__version__}, {where}, batch {args.batch}, {args.steps} steps/run, kdlab {args.extra or '-'}")
    print("| teacher → student | plain PyTorch (img/s) | kdlab Trainer (img/s) | ratio |")
    print("|---|---|---|---|")
    for t, s in PAIRS:
        plain_loop(t, s, synthetic(4 * args.batch), args.batch, device)  # warm-up (allocator, kernels)
        plain, ours = [], []
        for _ in range(args.repeats):
            plain.append(plain_loop(t, s, data, args.batch, device))
            ours.append(kdlab_loop(t, s, data, args.batch, args.extra, device))
        p, k = statistics.median(plain), statistics.median(ours)
        print(f"| {t} → {s} | {p:.0f} | {k:.0f} | {k / p:.3f} |")


if __name__ == "__main__":
    main()
