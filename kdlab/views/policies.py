"""Policy views: AutoAugment (CIFAR10 / ImageNet / SVHN policies), RandAugment, TrivialAugment.

AutoAugment runs by default on kdlab's own batched ops (views/image_ops.py): every sample draws its
sub-policy, gates and signs from the run's generator, and each of the two op slots applies each drawn op once
to the samples that drew it (≤ 14 batched calls per slot). `views.params.impl=kornia` uses kornia's
AutoAugment instead, as do RandAugment and TrivialAugment: kornia draws one sub-policy per call, so kdlab
draws one per sample and runs each drawn sub-policy once on the samples that drew it; magnitudes and gates
are per sample inside kornia. With `per_batch_compat` the whole batch shares one draw of everything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from kdlab.errors import ConfigError
from kdlab.views.base import StrongView, ViewOutput, ViewParams, register_view


def _same_on_batch(module: nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "same_on_batch"):
            setattr(m, "same_on_batch", True)  # noqa: B010  (kornia declares it as a plain attribute)


def apply_per_sample(x: torch.Tensor, choice: torch.Tensor, branches: list[nn.Module]) -> torch.Tensor:
    """out[i] = branches[choice[i]](x[i:i+1]), computed as one batched call per branch that was drawn."""
    out = x.clone()
    for j in torch.unique(choice).tolist():
        sel = choice == j
        out[sel] = branches[j](x[sel]).to(x.dtype)
    return out


class _PolicyView(StrongView):
    """Shared machinery: a kornia policy whose children are the sub-policies drawn per sample, `n_layers`
    draws per sample."""

    n_layers = 1

    def _use(self, policy: nn.Module) -> None:
        self.kornia = policy
        if self.params.per_batch_compat:
            _same_on_batch(policy)

    def _branches(self) -> list[nn.Module]:
        return list(self.kornia.children())

    def transform(self, x: torch.Tensor, g: torch.Generator | None) -> ViewOutput:
        branches = self._branches()
        b, c = x.shape[:2]
        # kornia's colour ops need RGB: grey images go through as three equal channels and come back as
        # their mean (the ops treat channels alike, so nothing is lost).
        out = (x if c == 3 else x.expand(b, 3, *x.shape[2:])).clamp(0, 1)
        for _ in range(self.n_layers):
            n = 1 if self.params.per_batch_compat else b
            choice = torch.randint(0, len(branches), (n,), generator=g, device=x.device).expand(b)
            out = apply_per_sample(out, choice, branches)
        if c == 1:
            out = out.mean(1, keepdim=True)
        return ViewOutput(out.clamp(0, 1))


class FusedPolicy:
    """A table of two-op sub-policies [(op name, probability, level 0…9 or None), …] applied per sample with
    kdlab's batched ops (views/image_ops.py)."""

    def __init__(self, table: list, image_size: int):
        from kdlab.views import image_ops

        self.names = list(image_ops.OPS)
        size = (image_size, image_size)
        rows = [[(self.names.index(n), p, image_ops.magnitude(n, lv or 0, size)) for n, p, lv in sub] for sub in table]
        self.op = torch.tensor([[r[0] for r in sub] for sub in rows])
        self.prob = torch.tensor([[r[1] for r in sub] for sub in rows])
        self.value = torch.tensor([[r[2] for r in sub] for sub in rows])
        self.signed = torch.tensor([image_ops.OPS[n][2] for n in self.names])
        self.factor = torch.tensor([n in image_ops.FACTOR_OPS for n in self.names])

    def __call__(self, x: torch.Tensor, g: torch.Generator | None, per_batch: bool) -> torch.Tensor:
        from kdlab.views import image_ops

        b, dev = x.shape[0], x.device
        n = 1 if per_batch else b
        choice = torch.randint(0, len(self.op), (n,), generator=g, device=dev).expand(b).cpu()
        draws = torch.rand(2, 2, n, generator=g, device=dev).expand(2, 2, b).cpu()  # (slot, gate|sign, sample)
        out = x.clone()
        for slot in range(2):
            op = self.op[choice, slot]
            value = self.value[choice, slot]
            value = torch.where(self.signed[op] & (draws[slot, 1] < 0.5), -value, value)
            value = torch.where(self.factor[op], 1 + value, value)
            op = torch.where(draws[slot, 0] < self.prob[choice, slot], op, -1)
            # Samples sorted by drawn op: one gather, each op on a contiguous slice, one scatter back.
            order = torch.argsort(op, stable=True)
            counts = torch.bincount(op + 1, minlength=len(self.names) + 1).tolist()
            if counts[0] == b:
                continue
            moved = order[counts[0] :]  # the samples whose gate opened
            xs, vs = out[moved.to(dev)], value[moved].to(dev, x.dtype)
            start = 0
            for k, n_k in enumerate(counts[1:]):
                if n_k:
                    fn = image_ops.OPS[self.names[k]][0]
                    xs[start : start + n_k] = fn(xs[start : start + n_k], vs[start : start + n_k]).to(x.dtype)
                    start += n_k
            out[moved.to(dev)] = xs
        return out


@dataclass
class AutoAugmentParams(ViewParams):
    policy: str = "auto"  # auto: cifar10 for images ≤ 32 px, imagenet otherwise; or cifar10 | imagenet | svhn
    impl: Literal["fused", "kornia"] = "fused"  # kdlab's batched per-sample ops, or kornia's AutoAugment


@register_view("autoaugment")
class AutoAugmentView(_PolicyView):
    """AutoAugment (Cubuk et al. 2019): one of 25 learned two-op sub-policies per sample."""

    Params = AutoAugmentParams
    summary = "AutoAugment, CIFAR10 policy (≤32 px) or ImageNet policy"

    def __init__(self, params: AutoAugmentParams, image_size: int):
        super().__init__(params, image_size)
        from kornia.augmentation.auto import AutoAugment
        from kornia.augmentation.auto.autoaugment import autoaugment as tables

        policy = params.policy if params.policy != "auto" else ("cifar10" if image_size <= 32 else "imagenet")
        if policy not in ("cifar10", "imagenet", "svhn"):
            raise ConfigError(f"views.policy must be auto, cifar10, imagenet or svhn; got {policy!r}")
        self.policy_name = policy
        self.fused = None
        if params.impl == "fused":
            self.fused = FusedPolicy(getattr(tables, f"{policy}_policy"), image_size)
        else:
            self._use(AutoAugment(policy))

    def transform(self, x: torch.Tensor, g: torch.Generator | None) -> ViewOutput:
        if self.fused is None:
            return super().transform(x, g)
        return ViewOutput(self.fused(x.clamp(0, 1), g, self.params.per_batch_compat).clamp_(0, 1))


@dataclass
class RandAugmentParams(ViewParams):
    n: int = 2
    m: int = 10  # kornia's magnitude scale, 1…29

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.m <= 29 or self.n < 1:
            raise ConfigError(f"randaugment needs n ≥ 1 and 1 ≤ m ≤ 29; got n={self.n}, m={self.m}")


@register_view("randaugment")
class RandAugmentView(_PolicyView):
    """RandAugment (Cubuk et al. 2020): n ops per sample, each drawn uniformly, at magnitude m."""

    Params = RandAugmentParams
    summary = "RandAugment: n random ops at magnitude m"

    def __init__(self, params: RandAugmentParams, image_size: int):
        super().__init__(params, image_size)
        from kornia.augmentation.auto import RandAugment

        self._use(RandAugment(n=1, m=params.m))
        self.n_layers = params.n


@register_view("trivialaugment")
class TrivialAugmentView(_PolicyView):
    """TrivialAugment (Müller & Hutter 2021): one op per sample at a uniformly random magnitude."""

    summary = "TrivialAugment: one random op, random magnitude"

    def __init__(self, params: ViewParams, image_size: int):
        super().__init__(params, image_size)
        from kornia.augmentation.auto import TrivialAugment

        self._use(TrivialAugment())
