"""Step time of every distillation method relative to `kd`, same pair, same data, one process.

    .venv/bin/python benchmarks/method_step_time.py [--teacher resnet56 --student resnet20] [--steps 15]

Synthetic CIFAR-size data with 16,448 samples (so CRD can draw its 16,384 negatives), batch 64, the first
`--steps` batches after 3 warm-up batches, each method timed twice in alternation; medians and ratios."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from step_throughput import synthetic

from kdlab.assembly import build_trainer
from kdlab.config import load_config
from kdlab.methods import Teacher, build_method
from kdlab.models import create_model, model_taps

METHODS = ["kd", "dkd", "dist", "ttm", "fitnet", "at", "sp", "rkd", "pkt", "crd", "simkd"]


def images_per_s(method: str, teacher: str, student: str, data, steps: int, views: list[str]) -> float:  # type: ignore[no-untyped-def]
    cfg = load_config(None, ["data.batch_size=64", f"method.name={method}", *views])
    torch.manual_seed(0)
    t = Teacher(create_model(teacher, 100), model_taps(teacher))
    m = build_method(cfg.method, create_model(student, 100), [t], model_taps(student), (3, 32, 32))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(cfg, m, data, Path(tmp), torch.device("cpu"), log=lambda _: None)
        trainer.train_epoch(1, max_steps=3)
        t0 = time.perf_counter()
        trainer.train_epoch(1, max_steps=steps)
        return steps * 64 / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--student", default="resnet20")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--views", nargs="*", default=[], help="e.g. views.strong=cutmix_pick")
    ap.add_argument("--methods", nargs="*", default=METHODS, help="the methods to time (kd is always timed)")
    args = ap.parse_args()
    methods = ["kd", *(m for m in args.methods if m != "kd")]
    data = synthetic(16448)
    print(f"{args.teacher} → {args.student}, batch 64, {args.steps} steps, {torch.get_num_threads()} threads")
    rates: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(2):
        for m in methods:
            rates[m].append(images_per_s(m, args.teacher, args.student, data, args.steps, args.views))
    kd_rate = statistics.median(rates["kd"])
    print("| method | images/s | step time relative to kd |")
    print("|---|---|---|")
    for m in methods:
        r = statistics.median(rates[m])
        print(f"| {m} | {r:.0f} | {kd_rate / r:.2f} |")


if __name__ == "__main__":
    main()
