"""Data-parallel training across processes started by `torchrun` (gloo on CPU, NCCL on GPU).

kdlab averages gradients across processes just before every optimiser step — the arithmetic of
DistributedDataParallel — through an optimiser step pre-hook rather than the DDP wrapper: a distillation
step runs the student several times before one backward (x, the strong view x', CutMixPick scoring) and
ATSC takes a second optimiser step on the teachers' biases, patterns DDP's reducer does not allow. Each
process takes its slice of every global batch (`data.batch_size` is the global batch), so 1 or N processes
see the same batches; BatchNorm statistics are per process during the step and averaged across processes
before every evaluation and checkpoint, so all processes hold the same model. Rank 0 alone logs and writes."""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from kdlab.errors import ConfigError


@dataclass
class Distributed:
    """This process's place among `world` processes (world 1: everything below is a no-op)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def average_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Replace every existing .grad of the optimiser's parameters by its mean over processes (one
        flattened all-reduce per dtype)."""
        if not self.active:
            return
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        for dtype in {g.dtype for g in grads}:
            group = [g for g in grads if g.dtype == dtype]
            flat = torch.cat([g.reshape(-1) for g in group])
            dist.all_reduce(flat)
            flat /= self.world
            offset = 0
            for g in group:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def average_buffers(self, modules: list[nn.Module]) -> None:
        """Mean over processes of every floating-point buffer (BatchNorm running statistics)."""
        if not self.active:
            return
        for m in modules:
            for b in m.buffers():
                if b.is_floating_point():
                    dist.all_reduce(b)
                    b /= self.world

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduced sum of a tensor (a new tensor; the input is untouched)."""
        if not self.active:
            return t
        out = t.clone()
        dist.all_reduce(out)
        return out

    def any(self, flag: torch.Tensor) -> bool:
        """True if `flag` (a bool scalar) is true on any process (a host sync)."""
        return bool(self.sum(flag.to(torch.int32)) > 0)

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every process's copy of a same-shaped tensor, in rank order."""
        if not self.active:
            return [t]
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every process."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def init_distributed(device: str) -> Distributed:
    """Join the process group `torchrun` describes in the environment (WORLD_SIZE, RANK, LOCAL_RANK); a single
    process (no WORLD_SIZE, or 1) gets Distributed(). NCCL when the run uses CUDA, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        # Left to interpreter finalisation, gloo's worker threads can abort the process ("terminate called
        # without an active exception", pytorch/pytorch#190489): destroy the group while Python is still whole.
        atexit.register(_destroy_process_group)
    return Distributed(rank, world, local_rank)


def _destroy_process_group() -> None:
    """At exit: wait until every process is here, then tear the group down together. A process that tears its
    gloo group down while a peer still works in its own aborts now and then ("terminate called without an active
    exception", SIGABRT) on a loaded machine; after the barrier no peer has any work left."""
    if not dist.is_initialized():
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=120))
        else:
            dist.barrier()
    except RuntimeError:  # a peer died or hung: nothing to wait for, tear down alone
        pass
    dist.destroy_process_group()


def check_distributed_config(cfg: Any, d: Distributed) -> None:
    """What multi-process training cannot do (yet), as config errors."""
    if not d.active:
        return
    if cfg.data.batch_size % d.world:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} is the global batch and must divide evenly over {d.world} processes"
        )
    if cfg.engine.compile and cfg.engine.nonfinite == "skip":
        raise ConfigError("engine.nonfinite=skip with engine.compile is not supported across processes")
    if cfg.engine.cuda_graphs:
        raise ConfigError(
            "engine.cuda_graphs runs in one process only: the gradients are averaged across processes between "
            "steps, outside a captured step (use it for one-GPU runs, e.g. kdlab sweep --jobs N on one GPU)"
        )
