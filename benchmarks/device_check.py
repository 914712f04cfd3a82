"""The throughput table of the device check (`benchmarks/gpu_check.sh`): kdlab's Trainer against a plain PyTorch
loop of the same math on the same device, the relative cost of the strong views and of CRD, bf16 + channels_last,
and the aggregate images/s of N runs sharing the device. Writes OUT/throughput.md, OUT/throughput.json and
OUT/profile.txt (where a step's time goes, eager and captured: what explains a missed target).

    python benchmarks/device_check.py --device cuda --out OUT          # the real table (batch 64, CIFAR size)
    python benchmarks/device_check.py --device cpu --smoke --out OUT   # seconds: keeps the script from rotting
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_throughput import _sync, kdlab_loop, kdlab_trainer, plain_loop, synthetic

BF16 = ["engine.amp=bf16", "engine.channels_last=true"]
FP32 = ["engine.amp=none", "engine.channels_last=false"]
# how kdlab's step runs: eager fp32 first (the reference of the others), then the defaults (engine.amp and
# engine.channels_last auto: bf16 + channels_last on a GPU of compute capability >= 8); CUDA graphs on CUDA only
MODES = [("fp32", FP32), ("default (auto)", []), ("bf16 + channels_last", BF16),
         ("CUDA graphs", ["engine.cuda_graphs=true", *FP32]),
         ("CUDA graphs + bf16 + channels_last", ["engine.cuda_graphs=true", *BF16])]  # fmt: skip
HOST_MODES = [m for m in MODES if "CUDA" not in m[0]]
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
    bf16 + channels_last (+ CUDA graphs on CUDA) — test accuracy (the bf16 impact) and images/s over the wall time."""
    from kdlab.config import load_config
    from kdlab.data import load_dataset
    from kdlab.experiment import train

    rows, train_images = [], len(load_dataset(data).train)  # decoded once here: the runs time training alone
    modes = MODES if device.startswith("cuda") else HOST_MODES
    for label, extra in [m for m in modes if m[0] not in ("CUDA graphs", "default (auto)")]:
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


def photo_files(root: Path, n: int, classes: int = 10, size: tuple[int, int] = (256, 192)) -> Path:
    """An ImageFolder of `n` training (and `classes` test) JPEGs, q90, at `size` (≤ 256 on the short side: what
    `kdlab prepare --max-side 256` stores), with a photograph's falling spectrum and grain (no photographs are
    carried to the device): what the prepared store's readers decode."""
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    for i in range(n + classes):
        split = "train" if i < n else "test"
        field = np.zeros((h, w, 3), np.float32)
        for cell, weight in ((128, 4.0), (32, 2.0), (8, 1.0)):
            grid = rng.normal(0, 1, (max(2, h // cell), max(2, w // cell), 3)).astype(np.float32)
            field += weight * np.stack([np.asarray(Image.fromarray(grid[..., c]).resize(size, Image.Resampling.BICUBIC))
                                        for c in range(3)], -1)  # fmt: skip
        arr = (128 + 12 * field + rng.normal(0, 3, field.shape)).clip(0, 255).astype(np.uint8)
        folder = root / split / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def prepared_input_rows(device: torch.device, smoke: bool, facts: dict[str, Any], table: Table) -> None:
    """The prepared store feeding a KD step (ResNet-34 → ResNet-18, ImageNet layout, bf16 default) at 224 and
    160 px: img/s of the loader alone and of loader + step, with the CPU decoders (data.decoder=auto, the
    default workers) and with the device's (data.decoder=gpu, CUDA only). Written as rows of `table`."""
    from kdlab.data import load_dataset
    from kdlab.data.prepared import prepare

    n, batch = (32, 8) if smoke else (6144, 128)
    pair = ("resnet8", "resnet8") if smoke else ("resnet34_imagenet", "resnet18_imagenet")
    sizes = (32,) if smoke else (224, 160)
    decoders = ["auto"] + (["gpu"] if device.type == "cuda" else [])
    with tempfile.TemporaryDirectory() as tmp:
        folder = photo_files(Path(tmp) / "photos", n, size=(48, 40) if smoke else (256, 192))
        prepare(f"imagefolder:{folder}", Path(tmp) / "prepared", max_side=256, quality=90, log=lambda _: None)
        for size in sizes:
            data = load_dataset(f"prepared:{Path(tmp) / 'prepared'}", stream="on", image_size=size)
            for decoder in decoders:
                what = f"prepared store → KD {pair[0]} → {pair[1]} at {size} px, data.decoder={decoder}"
                with table.section(what):
                    extra = [f"data.decoder={decoder}", "data.crop_padding=0"]
                    with kdlab_trainer(pair[0], pair[1], data, batch, extra, device) as trainer:  # type: ignore[arg-type]
                        for _ in trainer.train_loader:  # warm: workers start, files cached
                            pass
                        _sync(device)
                        t0 = time.perf_counter()
                        for b in trainer.train_loader:
                            last = b.images
                        _sync(device)
                        del last
                        alone = trainer.train_loader.num_samples / (time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        trainer.train_epoch(1)
                        _sync(device)
                        step = trainer.train_loader.num_samples / (time.perf_counter() - t0)
                    table.rows.append(f"| {what}: img/s, input alone / input + step | – | {alone:.0f} / {step:.0f} | "
                                      f"{step / alone:.2f} | – | – |")  # fmt: skip
                    facts[f"prepared_{size}_{decoder}"] = {"input": alone, "input_and_step": step}


def profile_steps(
    t: str, s: str, batch: int, steps: int, modes: list[tuple[str, list[str]]], device: torch.device
) -> str:
    """Where a KD step's time goes, per mode: wall time per step, the device's busy share (kernel time / wall: a
    low share means the host — launches, Python — is the limit), and the top operators by device and host time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out = []
    for label, extra in modes:
        try:
            with kdlab_trainer(t, s, synthetic((steps + 5) * batch), batch, extra, device) as trainer:
                trainer.train_epoch(1, max_steps=5)  # warm: allocator, kernels, capture
                _sync(device)
                t0 = time.perf_counter()
                with profile(activities=activities) as prof:
                    trainer.train_epoch(1, max_steps=steps)
                    _sync(device)
                wall = time.perf_counter() - t0
        except Exception as e:  # the other modes' profiles still count
            traceback.print_exc()
            out += [f"## KD {t} → {s}, {label}: failed — {type(e).__name__}: {e}", ""]
            continue
        events = prof.key_averages()
        dev = lambda e: getattr(e, "self_device_time_total", 0.0)  # noqa: E731  (µs)
        busy = sum(dev(e) for e in events) / 1e6
        share = f", device busy {busy / wall:.0%} of the wall time" if device.type == "cuda" else ""
        out.append(f"## KD {t} → {s}, {label}: {wall / steps * 1e3:.2f} ms per step of {batch} (profiled){share}")
        keys = [("host", lambda e: e.self_cpu_time_total)]
        for what, key in ([("device", dev)] if device.type == "cuda" else []) + keys:
            top = sorted(events, key=key, reverse=True)[:12]
            total = sum(key(e) for e in events) or 1.0
            out.append(f"top operators by {what} time:")
            out += [f"  {e.key[:70]:70s} {key(e) / total:6.1%}  calls {e.count}" for e in top if key(e) > 0]
        out.append("")
    return "\n".join(out) + "\n"


class Table:
    """The throughput table, written out after every section (a run cut short by its time limit still leaves
    what it measured); a section that fails becomes a row with its error, and the check goes on."""

    def __init__(self, out: Path, facts: dict[str, Any], head: str):
        self.out, self.facts, self.head = out, facts, head
        self.rows = ["| measurement | plain PyTorch | kdlab | ratio | target | met |", "|---|---|---|---|---|---|"]

    @contextlib.contextmanager
    def section(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as e:  # one failed measurement must not lose the others
            traceback.print_exc()
            self.rows.append(
                f"| {what}: failed — {type(e).__name__}: {str(e).splitlines()[0][:150]} | – | – | – | – | – |"
            )
            self.facts.setdefault("failed", []).append(what)
        self.write()

    def write(self) -> None:
        table = self.head + "\n".join(self.rows) + "\n"
        (self.out / "throughput.md").write_text(table)
        (self.out / "throughput.json").write_text(json.dumps(self.facts, indent=1))


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
    facts: dict[str, Any] = {"device": str(device), "batch": batch, "steps": steps, "smoke": args.smoke}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    head = f"# Device check: {facts.get('gpu', device)}, batch {batch}, {steps} steps per measurement\n\n"
    table = Table(out, facts, head)
    rows = table.rows
    modes = MODES if device.type == "cuda" else HOST_MODES  # a CUDA graph needs CUDA
    for t, s, target in pairs:
        with table.section(f"KD {t} → {s}"):
            plain_loop(t, s, synthetic(2 * batch), batch, device)
            plain = statistics.median(plain_loop(t, s, synthetic(steps * batch), batch, device) for _ in range(repeats))
            rates: dict[str, float] = {}
            for label, extra in modes:
                with table.section(f"KD {t} → {s}, {label}"):
                    rates[label] = statistics.median(_rate(t, s, steps, batch, extra, device) for _ in range(repeats))
            ours = rates["fp32"]
            best_label, best = max(rates.items(), key=lambda item: item[1])
            met = "-" if target is None else ("yes" if best >= target else f"no ({best / target:.2f}× the target)")
            rows.append(f"| KD {t} → {s}, img/s | {plain:.0f} | {ours:.0f} | {ours / plain:.3f} | "
                        f"{'-' if target is None else f'≥ {target}'} | {met}, best: {best_label} |")  # fmt: skip
            for label, rate in list(rates.items())[1:]:
                rows.append(f"| same, {label}, img/s | – | {rate:.0f} | {rate / ours:.3f}× fp32 | – | – |")
            facts[f"kd_{t}_{s}"] = {"plain": plain, **rates}
    t, s, _ = pairs[0]
    if not args.smoke and not args.no_compile:
        for mode in ("default", "reduce-overhead"):
            with table.section(f"KD {t} → {s}, torch.compile {mode}"):
                extra = ["engine.compile=true", f"engine.compile_mode={mode}"]
                rate = statistics.median(_rate(t, s, steps, batch, extra, device) for _ in range(repeats))
                base = facts[f"kd_{t}_{s}"]["fp32"]
                rows.append(
                    f"| KD {t} → {s}, torch.compile {mode}, img/s | – | {rate:.0f} | {rate / base:.3f}× eager | – | – |"
                )
                facts[f"compile_{mode}"] = rate
    for what, measured, reference, limit in RELATIVE:
        with table.section(what):
            extra = ["method.nce_k=16"] if args.smoke and "method.name=crd" in measured else []
            ref = statistics.median(_rate(t, s, steps, batch, reference, device) for _ in range(repeats))
            new = statistics.median(_rate(t, s, steps, batch, measured + extra, device) for _ in range(repeats))
            cost = ref / new  # time per step relative to the reference step
            met = "yes" if cost <= limit else f"no ({cost / limit:.2f}× the limit)"
            rows.append(f"| {what}: step time | – | {cost:.2f}× | – | ≤ {limit}× | {met} |")
            facts[what] = cost
    one = None
    for n in jobs:
        with table.section(f"{n} concurrent runs"):
            agg = concurrent(t, s, n, steps, batch, args.device)
            one = one or agg
            target = "≥ 4× one run" if n == 8 else "–"
            met = ("yes" if agg >= 4 * one else "no") if n == 8 else "–"
            ratio = f"{agg / one:.2f}× one run"
            rows.append(f"| {n} concurrent runs: aggregate img/s | – | {agg:.0f} | {ratio} | {target} | {met} |")
            facts[f"jobs_{n}"] = agg
    prepared_input_rows(device, args.smoke, facts, table)
    if args.data:
        with table.section("end to end"):
            rows += end_to_end(args.data, args.device, args.epochs, out, facts)
    with table.section("profile"):
        profiled = [m for m in modes if m[0] in ("fp32", "CUDA graphs + bf16 + channels_last")]
        (out / "profile.txt").write_text(profile_steps(t, s, batch, 3 if args.smoke else 20, profiled, device))
    print(head + "\n".join(rows))
    if facts.get("failed"):
        sys.exit(1)


if __name__ == "__main__":
    main()
