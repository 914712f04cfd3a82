"""A run's checkpoints: what `last` and `best` hold, and resuming from `last` exactly.

`checkpoints/last.safetensors` holds, in one atomically written file, the trainable modules (`model.*`), the
optimiser's buffers (`optim.*`), every random stream (`rng.*`: the sample order, the augmentation streams of
each process, torch's CPU and CUDA states) and JSON metadata (epoch, best accuracy so far, the resolved
config, dataset facts). `best.safetensors` holds the weights alone. With engine.ema_decay, `model.*` are
the averaged weights everywhere (what eval and export read) and `last` keeps the raw ones as `model.raw.*`.
Resuming restores all of it and drops metric lines written after the checkpoint, so a resumed run ends
bitwise equal to an uninterrupted one."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdlab.engine.distributed import Distributed
from kdlab.engine.ema import WeightAverage
from kdlab.engine.state import load_training_state, optimizer_from_flat, save_training_state
from kdlab.errors import CheckpointError
from kdlab.io import atomic_write_text
from kdlab.methods.base import Distiller

FORMAT = "kdlab-checkpoint-v1"
RAW = "raw."  # with engine.ema_decay, `last` holds the raw weights under model.raw.* (model.* are the averaged)


@dataclass
class Progress:
    """Where a resumed run continues: the next epoch and the best test accuracy (%) so far, with its epoch."""

    start_epoch: int = 1
    best_acc: float = -1.0
    best_epoch: int = 0


class Checkpointer:
    """Writes and reads the checkpoints of one run folder for `method` trained by `optimizer` with the random
    streams `generator` (sample order, shared by all processes) and `view_generator` (augmentation, one per
    process). Under torchrun every process calls `save` (it gathers state), rank 0 writes."""

    def __init__(
        self,
        run_dir: Path,
        method: Distiller,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        view_generator: torch.Generator,
        device: torch.device,
        dist: Distributed,
        log: Callable[[str], None] = print,
        ema: WeightAverage | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "checkpoints"
        self.method = method
        self.optimizer = optimizer
        self.generator = generator
        self.view_generator = view_generator
        self.device = device
        self.dist = dist
        self.log = log
        self.ema = ema

    @property
    def last(self) -> Path:
        return self.dir / "last.safetensors"

    def rng_state(self) -> dict[str, torch.Tensor]:
        """Every random stream of the run as uint8 state tensors (gathered from all processes)."""
        state = {"data": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.dist.active:  # every process's augmentation and torch streams, gathered to the writer
            for r, st in enumerate(self.dist.gather(self.view_generator.get_state().to(self.device))):
                state[f"views{r}"] = st.cpu()
            for r, st in enumerate(self.dist.gather(torch.get_rng_state().to(self.device))):
                state[f"torch{r}"] = st.cpu()
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save(self, name: str, meta: dict[str, Any], full: bool) -> None:
        """checkpoints/<name>.safetensors with `meta`; `full` adds the optimiser and random streams."""
        # Both may be collectives (the gathered RNG streams; CRD's pending memory update): every process
        # takes part, rank 0 writes.
        model_state = self.method.checkpoint_state()
        if self.ema is not None:  # the averaged weights are the model; `last` keeps the raw ones to resume
            averaged = self.ema.state()
            model_state = {**averaged, **{RAW + k: v for k, v in model_state.items()}} if full else averaged
        rng = self.rng_state() if full else {}
        if not self.dist.is_main:
            return
        meta = {"format": FORMAT, **meta}
        save_training_state(self.dir / f"{name}.safetensors", model_state, self.optimizer if full else None, rng, meta)

    def resume(self) -> Progress:
        """Restore weights, optimiser, random streams and progress from `last`; with no checkpoint yet (killed
        in the first epoch) start over in the same folder."""
        partial = [*self.run_dir.glob(".tmp-*"), *self.dir.glob(".tmp-*")] if self.dist.is_main else []
        for tmp in partial:
            tmp.unlink()  # a write cut short by a kill; the file it was replacing is intact
        path = self.last
        if not path.is_file():
            self.log("no checkpoint yet (the run stopped in its first epoch): starting again from epoch 1")
            self.truncate_metrics(0)
            return Progress()
        model, tensors, meta = load_training_state(path)
        if self.ema is not None:
            if not any(k.startswith(RAW) for k in model):
                raise CheckpointError(f"{path} was written without engine.ema_decay; resume it without it")
            self.ema.load({k: v for k, v in model.items() if not k.startswith(RAW)})
            model = {k[len(RAW) :]: v for k, v in model.items() if k.startswith(RAW)}
        self.method.load_checkpoint_state(model)
        optimizer_from_flat(self.optimizer, tensors, meta["optimizer"])
        self.generator.set_state(tensors["rng.data"])
        if self.dist.active:
            key = f"rng.views{self.dist.rank}"
            if key not in tensors:
                raise CheckpointError(f"cannot resume on {self.dist.world} processes: {path} was written by fewer")
            self.view_generator.set_state(tensors[key])
            torch.set_rng_state(tensors[f"rng.torch{self.dist.rank}"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.truncate_metrics(int(meta["epoch"]))
        return Progress(int(meta["epoch"]) + 1, float(meta["best_acc"]), int(meta["best_epoch"]))

    def truncate_metrics(self, epoch: int) -> None:
        """Drop metric lines of epochs after the checkpoint (written before a kill, to be redone)."""
        path = self.run_dir / "metrics.jsonl"
        if self.dist.is_main and path.is_file():
            lines = path.read_text().splitlines()
            keep = [ln for ln in lines if (e := epoch_of(ln)) is not None and e <= epoch]
            atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def epoch_of(line: str) -> int | None:
    """The epoch of a metrics.jsonl line; None for a blank line or one cut short by a kill."""
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return None
