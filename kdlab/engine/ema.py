"""An exponential moving average of the weights being trained (timm's ModelEmaV3 idea), `engine.ema_decay`.

After every optimiser step: ema ← decay·ema + (1 − decay)·w for every floating tensor of the method's trainable
modules (parameters and BatchNorm statistics), integer buffers copied — foreach ops on the device, no host sync.
When on, the averaged weights are what the run evaluates (test_acc; the raw weights' accuracy is logged as
raw_test_acc), what `best` keeps and what `kdlab eval` / `export` use; `last` keeps both, to resume exactly."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from kdlab.methods.base import Distiller

PREFIX = "ema."  # checkpoint keys of the averaged weights: ema.<module>.<tensor>


class WeightAverage:
    """The EMA of `method`'s trainable tensors (method.checkpoint_state(): aliases of the live tensors)."""

    def __init__(self, method: Distiller, decay: float):
        self.method, self.decay = method, decay
        self.average = {k: v.detach().clone() for k, v in method.checkpoint_state().items()}
        self._refresh()

    def _refresh(self) -> None:
        self.live = self.method.checkpoint_state()  # aliases: they follow in-place updates of the weights
        floats = [k for k, v in self.live.items() if v.is_floating_point()]
        self._float_avg = [self.average[k] for k in floats]
        self._float_live = [self.live[k] for k in floats]
        self._other = [(self.average[k], v) for k, v in self.live.items() if not v.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average (after an optimiser step)."""
        if self._float_avg:
            torch._foreach_lerp_(self._float_avg, self._float_live, 1.0 - self.decay)
        for avg, live in self._other:
            avg.copy_(live)

    def state(self) -> dict[str, torch.Tensor]:
        """The averaged tensors, keyed as method.checkpoint_state()."""
        return self.average

    @torch.no_grad()
    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the average (resume); keys as state()."""
        for k, v in self.average.items():
            v.copy_(state[k])
        self._refresh()

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped_in(self) -> Iterator[None]:
        """Within the block the method holds the averaged weights; its own come back after."""
        saved = {k: v.clone() for k, v in self.live.items()}
        for k, v in self.live.items():
            v.copy_(self.average[k])
        try:
            yield
        finally:
            for k, v in self.live.items():
                v.copy_(saved[k])
