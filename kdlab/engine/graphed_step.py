"""`engine.cuda_graphs`: the whole training step — views, forwards, loss, backward, the optimiser step and the
method's post-step — captured once as a CUDA graph and replayed for every full batch.

Why: a batch-64 step of a CIFAR ResNet is a few hundred small kernels; on a GPU the host launching them is the
limit, not the arithmetic. A replay launches the recorded step in one call.

What a step must be for a capture to mean the same as running it (kept by the step's code, checked by tests on
the CPU with `TraceCapture` and on CUDA with the real capture, both against the uncaptured step):
- tensor code only, no host sync (a capture records kernels; nothing on the host runs again at replay);
- every value that changes between steps read from a tensor: the batch (copied into static buffers), the
  learning rate (a 0-dim tensor the fused SGD reads), the fractional epoch (a 0-dim tensor for warm-ups);
- randomness from generators the graph knows (the run's view and sample-order generators are registered; the
  default CUDA generator always is), so each replay draws new numbers;
- state kept across steps updated in place inside the step (running statistics, memory banks, view statistics).

The first `warmup` calls run uncaptured (lazy set-up: momentum buffers, cuDNN's choices, the view's statistics
buffers), the next full-size batch is captured, every later batch of that size replays it; a batch of another
size (an epoch's last, partial batch) runs uncaptured."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import torch

from kdlab.errors import ConfigError

StepOutput = tuple[torch.Tensor, torch.Tensor]
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "float | torch.Tensor"], StepOutput]


class Capture(Protocol):
    def __call__(self, fn: Callable[[], StepOutput]) -> tuple[StepOutput, Callable[[], StepOutput]]:
        """Record `fn` (the step on static buffers) → (this step's outputs, a replay returning the next's)."""
        ...


class CudaGraphCapture:
    """torch.cuda.CUDAGraph capture with `generators` registered, so every replay advances them and draws anew.
    Capture records without running: the captured step is then run by one replay."""

    def __init__(self, device: torch.device, generators: Sequence[torch.Generator]):
        self.device = device
        self.generators = _unique(g for g in generators if g.device.type == "cuda")

    def __call__(self, fn: Callable[[], StepOutput]) -> tuple[StepOutput, Callable[[], StepOutput]]:
        graph = torch.cuda.CUDAGraph()
        if self.generators and not hasattr(graph, "register_generator_state"):
            raise ConfigError(
                f"engine.cuda_graphs needs PyTorch ≥ 2.5 (a graph drawing from the run's own generators); "
                f"this is {torch.__version__}"
            )
        for g in self.generators:
            graph.register_generator_state(g)
        with torch.cuda.device(self.device), torch.cuda.graph(graph):
            outputs = fn()

        def replay() -> StepOutput:
            graph.replay()
            return outputs

        return replay(), replay


class TraceCapture:
    """A CPU stand-in for CUDA graph capture (for tests): the step traced once into a graph of ATen ops
    (`make_fx`; tracing runs the step, so this step is done) and replayed by running that graph. As in a CUDA
    graph, a replay re-runs the recorded ops on the same tensors: a Python number, a branch taken on the host or
    state kept in Python is frozen at its traced value here as it would be there. A value read back to the host
    or an op sized by the data (a boolean index, nonzero, unique) is refused: a GPU would sync on it."""

    def __call__(self, fn: Callable[[], StepOutput]) -> tuple[StepOutput, Callable[[], StepOutput]]:
        from torch.fx.experimental.proxy_tensor import make_fx

        traced: list[StepOutput] = []
        graph = make_fx(lambda: _keep(traced, fn()))()  # a value read to the host raises here
        sized_by_data = [n for n in graph.graph.nodes if _sized_by_data(n)]
        if sized_by_data:
            raise RuntimeError(
                f"the step has an op whose output size depends on the data ({sized_by_data[0].target}): on a GPU "
                "it reads a count back to the host, and a captured step would keep the capture's size"
            )

        def replay() -> StepOutput:
            with torch.no_grad():  # the backward pass is in the recorded ops: no autograd graph at replay
                values, correct = graph()
            return values, correct

        return traced[0], replay


def capture_for(device: torch.device, generators: Sequence[torch.Generator]) -> Capture:
    """The capture a run on `device` uses: CUDA graphs (the only kind `engine.cuda_graphs` means)."""
    if device.type != "cuda":
        raise ConfigError(f"engine.cuda_graphs=true needs a CUDA device; this run's device is {device}")
    return CudaGraphCapture(device, generators)


def _sized_by_data(node: object) -> bool:
    """An FX node of an ATen op whose output size depends on tensor values (nonzero, masked_select, unique, a
    boolean index)."""
    target = str(getattr(node, "target", ""))
    if any(name in target for name in ("nonzero", "masked_select", "unique", "repeat_interleave.Tensor")):
        return "nonzero_static" not in target
    if target.startswith(("aten.index.", "aten.index_put")):
        indices = node.args[1] if len(node.args) > 1 else []  # type: ignore[attr-defined]
        return any(getattr(i, "meta", {}).get("val", torch.empty(0)).dtype == torch.bool for i in indices or [] if i)
    return False


def _keep(into: list[StepOutput], out: StepOutput) -> StepOutput:
    into.append(out)
    return out


def _unique(gens: Iterable[torch.Generator]) -> list[torch.Generator]:
    """The generators without repeats (the run's view and sample-order streams are one object in one process)."""
    out: list[torch.Generator] = []
    for g in gens:
        if all(g is not h for h in out):
            out.append(g)
    return out


class GraphedStep:
    """`step(images, labels, index, epoch)` → (loss terms (T,), correct count) run through a captured graph
    (module doc). Inputs: uint8 images (B, C, H, W), labels (B,), sample ids (B,) on the device; `epoch` the
    fractional epoch (float). Batches of `batch_size` images replay the graph; the outputs of a replay are its
    static tensors, overwritten by the next replay: read them before the next call."""

    def __init__(self, step: Step, device: torch.device, batch_size: int, capture: Capture, warmup: int = 3):
        self.step, self.device, self.batch_size, self.capture = step, device, batch_size, capture
        self.warmup = warmup
        self.calls = 0
        self.replays = 0
        self.replay: Callable[[], StepOutput] | None = None
        self.static: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, epoch: float = 0.0
    ) -> StepOutput:
        self.calls += 1
        full = images.shape[0] == self.batch_size
        if self.replay is not None and self.static is not None and full:
            for buffer, value in zip(self.static[:3], (images, labels, index), strict=True):
                buffer.copy_(value)
            self.static[3].fill_(epoch)
            self.replays += 1
            return self.replay()
        if self.calls <= self.warmup:
            return self._warm_up(images, labels, index, epoch)
        if self.replay is not None or not full:
            return self.step(images, labels, index, epoch)
        epoch_t = torch.full((), epoch, dtype=torch.float32, device=self.device)
        static = self.static = (images.clone(), labels.clone(), index.clone(), epoch_t)
        outputs, self.replay = self.capture(lambda: self.step(*static))
        return outputs

    def _warm_up(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, epoch: float) -> StepOutput:
        if self.device.type != "cuda":
            return self.step(images, labels, index, epoch)
        # on a side stream, as torch.cuda.graph's own examples warm up: lazy set-up stays off the capture's stream
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            out = self.step(images, labels, index, epoch)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return out
