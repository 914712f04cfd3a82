"""CPU time of kdlab's batched AutoAugment ops and of the whole policy, one thread, best of several passes.

    .venv/bin/python benchmarks/policy_ops.py [--images 12] [--batch 128]

For A/B comparisons of two versions, run it from a `git worktree` of each, alternately (`--repo PATH` imports
kdlab from PATH): on a shared machine interference only ever slows a pass, so the best of the passes is the
figure that compares."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable


def best_us(fn: Callable[[], object], calls: int, passes: int) -> float:
    """Best mean time per call over `passes` passes of `calls` calls, in µs (thread CPU time)."""
    for _ in range(max(1, calls // 10)):
        fn()
    best = float("inf")
    for _ in range(passes):
        t0 = time.thread_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.thread_time() - t0) / calls * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=12, help="images per op call (≈ an op's share of a batch)")
    ap.add_argument("--batch", type=int, default=128, help="batch of the whole-policy row")
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--repo", default=None, help="import kdlab from this checkout")
    args = ap.parse_args()
    if args.repo:
        sys.path.insert(0, args.repo)
    import torch
    from kornia.augmentation.auto.autoaugment import autoaugment as tables

    from kdlab.engine.memory import retain_freed_memory
    from kdlab.views import image_ops as O
    from kdlab.views.policies import FusedPolicy

    retain_freed_memory()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g)
    factor = torch.full((args.images,), 1.3)
    rows = {name: best_us(lambda fn=O.OPS[name][0]: fn(u, factor), 200, args.passes)
            for name in ("equalize", "auto_contrast", "contrast", "sharpness", "color")}  # fmt: skip
    policy = FusedPolicy(tables.cifar10_policy, 32)
    batch = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8, generator=g)
    rows[f"AutoAugment policy, batch {args.batch}"] = best_us(
        lambda: policy.run(batch.clone(), g, False), 50, args.passes
    )
    print(f"kdlab from {O.__file__}; torch {torch.__version__}, 1 thread, {args.images} images per op call")
    print("| op | µs per call |")
    print("|---|---|")
    for name, us in rows.items():
        print(f"| {name} | {us:.1f} |")


if __name__ == "__main__":
    main()
