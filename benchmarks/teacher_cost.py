"""The teacher's share of a KD step, and what a bf16 + channels_last teacher forward buys and costs.

For resnet56 → resnet20 and resnet32x4 → resnet8x4 (batch 64, synthetic CIFAR-size data): images/s of the
teacher forward alone (fp32 vs `engine.teacher_amp=bf16`), of the whole kdlab KD step with each, and the
teacher's share of the fp32 step. Accuracy impact, on real data when a trained CIFAR-100 teacher run folder is
given: test accuracy of the fp32 and bf16 teacher and the top-1 agreement / KL between their predictions.

    .venv/bin/python benchmarks/teacher_cost.py [--steps 20] [--teacher-run runs/c100/c100-teacher-resnet20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from step_throughput import PAIRS, synthetic

from kdlab.assembly import build_trainer
from kdlab.config import load_config
from kdlab.methods import Teacher, build_method
from kdlab.models import create_model


@torch.inference_mode()
def teacher_rate(name: str, batch: int, steps: int, bf16: bool) -> float:
    teacher = Teacher(create_model(name, 100), {})
    if bf16:
        teacher.set_inference_precision(torch.bfloat16)
    x = torch.randn(batch, 3, 32, 32)
    for _ in range(3):
        teacher(x)
    t0 = time.perf_counter()
    for _ in range(steps):
        teacher(x)
    return steps * batch / (time.perf_counter() - t0)


def step_rate(t: str, s: str, batch: int, steps: int, teacher_amp: str) -> float:
    data = synthetic(steps * batch)
    fp32 = ["engine.amp=none", "engine.channels_last=false"]  # the fp32 step, whatever the hardware
    cfg = load_config(None, [f"data.batch_size={batch}", "data.drop_last=true", "method.name=kd",
                             f"engine.teacher_amp={teacher_amp}", *fp32])  # fmt: skip
    torch.manual_seed(0)
    method = build_method(cfg.method, create_model(s, 100), [Teacher(create_model(t, 100), {})])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(cfg, method, data, Path(tmp), torch.device("cpu"), log=lambda _: None)
        trainer.train_epoch(1, max_steps=2)  # warm-up
        t0 = time.perf_counter()
        trainer.train_epoch(1)
        return trainer.train_loader.num_samples / (time.perf_counter() - t0)


@torch.inference_mode()
def accuracy_impact(run: str) -> tuple[float, float, float, float]:
    """(fp32 test acc %, bf16 test acc %, top-1 agreement %, mean KL(p_fp32 ‖ p_bf16) at T=4 in nats)."""
    from kdlab.data import DeviceLoader, load_dataset
    from kdlab.experiment import load_trained
    from kdlab.views import Normalize, to_unit

    method, cfg, meta = load_trained(run)
    data = load_dataset(cfg.data.dataset, cfg.data.cache_dir)
    normalize = Normalize(meta["data"]["mean"], meta["data"]["std"])
    fp32 = Teacher(method.student, {})
    bf16 = Teacher(create_model(cfg.student.name, data.num_classes), {})
    bf16.model.load_state_dict(method.student.state_dict())
    bf16.set_inference_precision(torch.bfloat16)
    a, b = [], []
    for batch in DeviceLoader(data.test, 500, torch.device("cpu"), shuffle=False):
        x = normalize(to_unit(batch.images))
        a.append(fp32(x).float())
        b.append(bf16(x).float())
    la, lb, y = torch.cat(a), torch.cat(b), data.test.labels
    kl = (la / 4).log_softmax(1).exp() * ((la / 4).log_softmax(1) - (lb / 4).log_softmax(1))
    return (
        float((la.argmax(1) == y).float().mean() * 100),
        float((lb.argmax(1) == y).float().mean() * 100),
        float((la.argmax(1) == lb.argmax(1)).float().mean() * 100),
        float(kl.sum(1).mean()),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--teacher-run", default="runs/c100/c100-teacher-resnet20")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print("| teacher → student | teacher fwd fp32 (img/s) | teacher fwd bf16+CL (img/s) | KD step, fp32 teacher "
          "(img/s) | KD step, bf16 teacher (img/s) | teacher share of the fp32 step | step speed-up |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for t, s in PAIRS:
        f32, b16 = teacher_rate(t, args.batch, args.steps, False), teacher_rate(t, args.batch, args.steps, True)
        s32 = step_rate(t, s, args.batch, args.steps, "none")
        s16 = step_rate(t, s, args.batch, args.steps, "bf16")
        print(f"| {t} → {s} | {f32:.0f} | {b16:.0f} | {s32:.0f} | {s16:.0f} | {s32 / f32:.0%} | {s16 / s32:.2f}× |")
    if Path(args.teacher_run).is_dir():
        acc32, acc16, agree, kl = accuracy_impact(args.teacher_run)
        print()
        print(f"Accuracy impact ({args.teacher_run}, CIFAR-100 JPEG test, 10,000 images):")
        print("| teacher fp32 test acc | teacher bf16+CL test acc | top-1 agreement | KL(fp32 ‖ bf16) at τ=4 |")
        print("|---|---|---|---|")
        print(f"| {acc32:.2f}% | {acc16:.2f}% | {agree:.2f}% | {kl:.2e} nats |")


if __name__ == "__main__":
    main()
