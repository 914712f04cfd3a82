"""DOT: Zhao et al., "DOT: A Distillation-Oriented Trainer" (ICCV 2023): SGD that keeps separate momenta for the
gradients of the task loss (CE) and of the distillation loss, the distillation one larger (momentum + δ) and the
task one smaller (momentum − δ), as mdistiller's `engine/dot.py` does."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

TASK_TERMS = ("ce", "ce_strong")  # the loss terms DOT treats as the task loss; every other term is distillation


class DistillationOrientedSGD(torch.optim.Optimizer):
    """`backward_terms(terms)` computes the distillation terms' gradients (kept here) and the task terms' (left in
    `.grad`); `step()` then applies, per parameter p with task gradient g and distillation gradient h:

        b ← m_task·b + (g + wd·p)      (first step: b = g + wd·p);  p ← p − lr·b
        c ← m_kd·c + h                 (first step: c = h);         p ← p − lr·c

    A parameter with only one of the two gradients uses (m_task + m_kd)/2 for it, and its weight decay moves to the
    distillation update when it has no task gradient — the release's rules, step for step."""

    def __init__(self, params: Iterable[Any], lr: float, momentum: float, delta: float, weight_decay: float = 0.0):
        if not 0 <= delta <= momentum:
            raise ValueError(f"DOT needs 0 ≤ δ ≤ momentum, got δ={delta}, momentum={momentum}")
        defaults = {"lr": lr, "momentum": momentum - delta, "momentum_kd": momentum + delta,
                    "weight_decay": weight_decay}  # fmt: skip
        super().__init__(params, defaults)
        self._kd_grads: dict[torch.Tensor, torch.Tensor] = {}

    def backward_terms(self, terms: dict[str, torch.Tensor]) -> None:
        """Backward of the task terms into `.grad`, of the other terms into this optimiser's distillation gradients.
        Call after zero_grad."""
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        task = [v.float() for k, v in terms.items() if k in TASK_TERMS]
        distill = [v.float() for k, v in terms.items() if k not in TASK_TERMS]
        self._kd_grads = {}
        if distill:
            grads = torch.autograd.grad(torch.stack(distill).sum(), params, retain_graph=True, allow_unused=True)
            self._kd_grads = {p: g for p, g in zip(params, grads) if g is not None}
        if task:
            torch.stack(task).sum().backward()

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            m_task, m_kd = group["momentum"], group["momentum_kd"]
            m_mid = (m_task + m_kd) / 2
            for p in group["params"]:
                g, h = p.grad, self._kd_grads.get(p)
                state = self.state[p]
                if g is not None:
                    d = g.add(p, alpha=wd) if wd else g
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.clone()
                    else:
                        state["momentum_buffer"].mul_(m_task if h is not None else m_mid).add_(d)
                    p.add_(state["momentum_buffer"], alpha=-lr)
            for p in group["params"]:
                h = self._kd_grads.get(p)
                if h is None:
                    continue
                state = self.state[p]
                if "momentum_kd_buffer" not in state:
                    state["momentum_kd_buffer"] = h.clone()
                elif p.grad is not None:
                    state["momentum_kd_buffer"].mul_(m_kd).add_(h)
                else:
                    state["momentum_kd_buffer"].mul_(m_mid).add_(h.add(p, alpha=wd) if wd else h)
                p.add_(state["momentum_kd_buffer"], alpha=-lr)
        self._kd_grads = {}
