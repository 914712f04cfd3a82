"""The throughput table of the device check (`benchmarks/gpu_check.sh`): kdlab's Trainer against a plain PyTorch
loop of the same math on the same device, the relative cost of the strong views and of CRD, bf16 + channels_last,
and the aggregate images/s of N runs sharing the device. Writes OUT/throughput.md and OUT/throughput.json.

    python benchmarks/device_check.py --device cuda --out OUT          # the real table (batch 64, CIFAR size)
    python benchmarks/device_check.py --device cpu --smoke --out OUT   # seconds: keeps the script from rotting
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_throughput import kdlab_loop, plain_loop, synthetic

# (what, teacher → student, kdlab overrides, target) — targets on one H200 at batch 64 (the CRD protocol's)
KD_PAIRS = [("resnet56", "resnet20", 30_000), ("resnet32x4", "resnet8x4", 15_000)]
RELATIVE = [  # (row, overrides of the measured step, overrides of its reference step, at most × the reference)
    ("CutMixPick vs TLCutMix", ["views.strong=cutmix_pick"], ["views.strong=cutmix"], 1.5),
    ("AutoAugment vs crop+flip", ["views.strong=autoaugment"], [], 1.3),
    ("CRD vs KD", ["method.name=crd", "method.nce_k=4096"], [], 1.2),
]


def _rate(t: str, s: str, steps: int, batch: int, extra: list[str], device: torch.device) -> float:
    data = synthetic(steps * batch)
    nce_k = [int(e.split("=")[1]) for e in extra if e.startswith("method.nce_k=")]
    warm = synthetic(2 * batch + (nce_k[0] if nce_k else 0))  # CRD draws nce_k negatives from the data
    kdlab_loop(t, s, warm, batch, extra, device)  # warm-up: allocator, kernels, compile
    return kdlab_loop(t, s, data, batch, extra, device)


def _one_run(args: tuple[str, str, int, int, str, Any, Any]) -> None:
    t, s, steps, batch, device, barrier, queue = args
    torch.set_num_threads(1)
    data = synthetic(steps * batch)
    kdlab_loop(t, s, synthetic(2 * batch), batch, [], torch.device(device))  # start-up and warm-up not timed
    barrier.wait()  # all runs train at once from here
    start = time.time()
    kdlab_loop(t, s, data, batch, [], torch.device(device))
    queue.put((len(data.train), start, time.time()))


def concurrent(t: str, s: str, n: int, steps: int, batch: int, device: str) -> float:
    """Aggregate images/s of n processes each training one KD run on the same device at the same time (as
    `kdlab sweep --jobs n`): their images over the span from the first start to the last end."""
    ctx = mp.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(n)
    procs = [ctx.Process(target=_one_run, args=((t, s, steps, batch, device, barrier, queue),)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    span = max(r[2] for r in results) - min(r[1] for r in results)
    return sum(r[0] for r in results) / span


def end_to_end(data: str, device: str, epochs: int, out: Path, facts: dict[str, Any]) -> list[str]:
    """Whole runs, views and evaluation included: resnet20 with CE on `data` for `epochs` (cosine), fp32 against
    bf16 + channels_last — test accuracy (the bf16 impact) and images/s over the run's wall time."""
    from kdlab.config import load_config
    from kdlab.data import load_dataset
    from kdlab.experiment import train

    rows, train_images = [], len(load_dataset(data).train)  # decoded once here: the runs time training alone
    for label, extra in (("fp32", []), ("bf16 + channels_last", ["engine.amp=bf16", "engine.channels_last=true"])):
        cfg = load_config(None, [f"data.dataset={data}", "student.name=resnet20", f"schedule.epochs={epochs}",
                                 "schedule.kind=cosine", f"engine.device={device}", "engine.progress=false",
                                 "engine.report=false", f"output_dir={out / 'runs'}", *extra])  # fmt: skip
        t0 = time.perf_counter()
        _, summary = train(cfg, log=lambda _: None)
        wall = time.perf_counter() - t0
        images = train_images * epochs
        acc = summary["last_epoch_test_acc"]
        rows.append(f"| CE resnet20, {epochs} epochs end to end, {label}: test acc {acc:.2f}% | – | "
                    f"{images / wall:.0f} img/s | – | – | – |")  # fmt: skip
        facts[f"end_to_end_{label}"] = {"test_acc": summary["last_epoch_test_acc"], "wall_s": wall}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny models and step counts (a CPU check in seconds)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", default="1,2,4,8", help="concurrent runs to measure")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (a minute each)")
    ap.add_argument("--data", help="a CIFAR-100 spec for the end-to-end rows (fp32 vs bf16 accuracy, img/s)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs of each end-to-end run")
    args = ap.parse_args()
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batch, steps, repeats = (16, 2, 1) if args.smoke else (64, 200, 3)
    pairs = [("resnet8", "resnet8", None)] if args.smoke else KD_PAIRS
    jobs = [1, 2] if args.smoke else [int(j) for j in args.jobs.split(",")]
    rows, facts = [], {"device": str(device), "batch": batch, "steps": steps, "smoke": args.smoke}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    rows.append("| measurement | plain PyTorch | kdlab | ratio | target | met |")
    rows.append("|---|---|---|---|---|---|")
    for t, s, target in pairs:
        plain_loop(t, s, synthetic(2 * batch), batch, device)
        plain = statistics.median(plain_loop(t, s, synthetic(steps * batch), batch, device) for _ in range(repeats))
        ours = statistics.median(_rate(t, s, steps, batch, [], device) for _ in range(repeats))
        fast = statistics.median(
            _rate(t, s, steps, batch, ["engine.amp=bf16", "engine.channels_last=true"], device) for _ in range(repeats)
        )
        met = "-" if target is None else ("yes" if ours >= target else f"no ({ours / target:.2f}× the target)")
        rows.append(f"| KD {t} → {s}, img/s | {plain:.0f} | {ours:.0f} | {ours / plain:.3f} | "
                    f"{'-' if target is None else f'≥ {target}'} | {met} |")  # fmt: skip
        rows.append(f"| same, bf16 + channels_last, img/s | – | {fast:.0f} | {fast / ours:.3f}× fp32 | – | – |")
        facts[f"kd_{t}_{s}"] = {"plain": plain, "kdlab": ours, "kdlab_bf16_cl": fast}
    t, s, _ = pairs[0]
    if not args.smoke and not args.no_compile:
        for mode in ("default", "reduce-overhead"):
            extra = ["engine.compile=true", f"engine.compile_mode={mode}"]
            rate = statistics.median(_rate(t, s, steps, batch, extra, device) for _ in range(repeats))
            base = facts[f"kd_{t}_{s}"]["kdlab"]
            rows.append(
                f"| KD {t} → {s}, torch.compile {mode}, img/s | – | {rate:.0f} | {rate / base:.3f}× eager | – | – |"
            )
            facts[f"compile_{mode}"] = rate
    for what, measured, reference, limit in RELATIVE:
        extra = ["method.nce_k=16"] if args.smoke and "method.name=crd" in measured else []
        ref = statistics.median(_rate(t, s, steps, batch, reference, device) for _ in range(repeats))
        new = statistics.median(_rate(t, s, steps, batch, measured + extra, device) for _ in range(repeats))
        cost = ref / new  # time per step relative to the reference step
        met = "yes" if cost <= limit else f"no ({cost / limit:.2f}× the limit)"
        rows.append(f"| {what}: step time | – | {cost:.2f}× | – | ≤ {limit}× | {met} |")
        facts[what] = cost
    one = None
    for n in jobs:
        agg = concurrent(t, s, n, steps, batch, args.device)
        one = one or agg
        target = "≥ 4× one run" if n == 8 else "–"
        met = ("yes" if agg >= 4 * one else "no") if n == 8 else "–"
        rows.append(
            f"| {n} concurrent runs: aggregate img/s | – | {agg:.0f} | {agg / one:.2f}× one run | {target} | {met} |"
        )
        facts[f"jobs_{n}"] = agg
    if args.data:
        rows += end_to_end(args.data, args.device, args.epochs, out, facts)
    table = "\n".join(rows) + "\n"
    head = f"# Device check: {facts.get('gpu', device)}, batch {batch}, {steps} steps per measurement\n\n"
    (out / "throughput.md").write_text(head + table)
    (out / "throughput.json").write_text(json.dumps(facts, indent=1))
    print(head + table)


if __name__ == "__main__":
    main()
