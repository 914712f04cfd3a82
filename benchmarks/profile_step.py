"""Where a kdlab KD step spends its time: torch.profiler over a few steps, ops grouped into model math
(convolutions, batch norm, activations, pooling, linear and their backward), the optimiser, the loss, the
views and everything else (kdlab's own bookkeeping).

    .venv/bin/python benchmarks/profile_step.py [--teacher resnet56] [--student resnet20] [--steps 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from step_throughput import synthetic

from kdlab.assembly import build_trainer
from kdlab.config import load_config
from kdlab.methods import Teacher, build_method
from kdlab.models import create_model

GROUPS = [
    ("model math: convolution (fwd + bwd)", ("conv", "mkldnn_convolution")),
    ("model math: batch norm (fwd + bwd)", ("batch_norm",)),
    (
        "model math: relu / add / pool / linear",
        ("relu", "clamp", "threshold", "add", "pool", "addmm", "mm", "linear"),
    ),
    ("optimiser (SGD)", ("sgd", "_foreach", "lerp")),
    ("loss (log_softmax, KL, CE)", ("softmax", "nll", "cross_entropy", "kl", "exp", "sum", "mean", "mul", "sub")),
    ("views (crop, flip, normalise)", ("index", "pad", "flip", "where", "addcmul", "as_strided", "randint")),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--student", default="resnet20")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    data = synthetic((args.steps + 2) * 64)
    cfg = load_config(None, ["data.batch_size=64", "data.drop_last=true", "method.name=kd"])
    method = build_method(cfg.method, create_model(args.student, 100), [Teacher(create_model(args.teacher, 100), {})])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(cfg, method, data, Path(tmp), torch.device("cpu"), log=lambda _: None)
        trainer.train_epoch(1, max_steps=2)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.train_epoch(1, max_steps=args.steps)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = {}
    for e in events:
        name = e.key.lower()
        group = next((g for g, keys in GROUPS if any(k in name for k in keys)), "other aten ops")
        shares[group] = shares.get(group, 0.0) + e.self_cpu_time_total
    print(f"{args.teacher} → {args.student}, batch 64, {args.steps} steps, {torch.get_num_threads()} threads")
    print("| where | share of aten self CPU time |")
    print("|---|---|")
    for g, t in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"| {g} | {t / total:.1%} |")
    print()
    print("Top 12 aten ops by self CPU time:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
        print(f"  {e.key:45s} {e.self_cpu_time_total / total:6.1%}  calls {e.count}")


if __name__ == "__main__":
    main()
