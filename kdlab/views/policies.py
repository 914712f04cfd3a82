"""Policy views: AutoAugment (CIFAR10 / ImageNet / SVHN policies), RandAugment, TrivialAugment.

AutoAugment runs by default on kdlab's own batched ops (views/image_ops.py), on the 8-bit values as Pillow
does: every sample draws its sub-policy, gates and signs from the run's generator, and each of the two op slots
applies the drawn ops in four batched groups (geometric, lookup-table, color, sharpness); RandAugment and
TrivialAugment likewise. `views.params.impl=kornia` uses kornia's policies instead: kornia draws one
sub-policy per call, so kdlab draws one per sample and runs each drawn sub-policy once on the samples that drew
it; magnitudes and gates are per sample inside kornia. With `per_batch_compat` the whole batch shares one
draw of everything."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from kdlab.errors import ConfigError
from kdlab.typed_config import bounded
from kdlab.views import image_ops
from kdlab.views.autoaugment_policies import POLICIES
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
    fused: FusedPolicy | FusedRandom | None = None  # set by views that run on kdlab's own batched ops

    def _use(self, policy: nn.Module) -> None:
        self.kornia = policy
        if self.params.per_batch_compat:
            _same_on_batch(policy)

    def _branches(self) -> list[nn.Module]:
        return list(self.kornia.children())

    def _run_fused(self, u: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        """The policy on kdlab's ops, in place on uint8 u (B, C, H, W); returns u."""
        assert self.fused is not None
        return self.fused.run(u, g, self.params.per_batch_compat)

    def transform_u8(self, u: torch.Tensor, g: torch.Generator | None) -> ViewOutput | None:
        if self.fused is None:
            return None
        return ViewOutput(self._run_fused(u.clone(), g).to(torch.float32).div_(255))

    def transform(self, x: torch.Tensor, g: torch.Generator | None) -> ViewOutput:
        if self.fused is not None:
            out = self._run_fused(to_u8(x), g)
            return ViewOutput(out.to(x.dtype).div_(255))
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


def signed_values(op: torch.Tensor, value: torch.Tensor, sign_draw: torch.Tensor) -> torch.Tensor:
    """Per-sample op parameters: a random sign for signed ops (sign_draw < 0.5 → negative), 1 + v for the
    enhance factors. op ≥ 0 indexes image_ops.NAMES; entries with op < 0 are left as they are."""
    safe = op.clamp_min(0)
    signed, factor = (image_ops.on_device(t, safe.device) for t in (image_ops.SIGNED, image_ops.FACTOR))
    value = torch.where(signed[safe] & (sign_draw < 0.5), -value, value)
    return torch.where(factor[safe], 1 + value, value)


def to_u8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] as their nearest 8-bit values (uint8, same shape): what the policies work on."""
    return x.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def _entries(op: torch.Tensor, value: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Every (op, magnitude) pair (K,) with both signs: entry 2k + negative → (op, parameter) as NumPy arrays
    (2K,), the parameter as the op takes it (signed ops negated, enhance factors 1 + v)."""
    op2 = op.repeat_interleave(2)
    negative = torch.tensor([1.0, 0.0]).repeat(len(op))  # sign draw < 0.5 → negative
    return op2.numpy(), signed_values(op2, value.repeat_interleave(2), negative).numpy()


def _on_device(
    cache: dict[str, tuple[torch.Tensor, ...]], device: torch.device, *arrays: np.ndarray
) -> tuple[torch.Tensor, ...]:
    """`arrays` as tensors on `device`, made once per device and kept in `cache`."""
    key = str(device)
    if key not in cache:
        cache[key] = tuple(torch.from_numpy(a).to(device) for a in arrays)
    return cache[key]


class FusedPolicy:
    """A table of two-op sub-policies [(op name, probability, level 0…9 or None), …] applied per sample with
    kdlab's batched ops (views/image_ops.py)."""

    def __init__(self, table: list, image_size: int, semantics: image_ops.Semantics = image_ops.PILLOW):
        size = (image_size, image_size)
        self.semantics = semantics
        rows = [
            [(image_ops.NAMES.index(n), p, image_ops.magnitude(n, lv or 0, size)) for n, p, lv in sub] for sub in table
        ]
        op = torch.tensor([[r[0] for r in sub] for sub in rows])
        self.n_sub = len(op)
        # entry (sub-policy · 2 + slot) · 2 + negative: its op, parameter and gate probability
        self.entry_op, self.entry_value = _entries(
            op.view(-1), torch.tensor([[r[2] for r in sub] for sub in rows]).view(-1)
        )
        self.entry_prob = torch.tensor([[r[1] for r in sub] for sub in rows]).view(-1).repeat_interleave(2).numpy()
        self.pre: image_ops.PrecomputedOps | None = image_ops.PrecomputedOps(
            torch.from_numpy(self.entry_op), torch.from_numpy(self.entry_value), size, semantics
        )
        self._tables: dict[str, tuple[torch.Tensor, ...]] = {}  # the entry arrays on each device

    def run_on_device(self, u: torch.Tensor, g: torch.Generator | None, per_batch: bool) -> torch.Tensor:
        """run() without a host sync (accelerators): the same draws from `g`, the entries looked up on the
        device, the ops applied by image_ops.apply_masked. Returns u, written in place."""
        b, dev = u.shape[0], u.device
        n = 1 if per_batch else b
        entry_op, entry_value, entry_prob = _on_device(
            self._tables, dev, self.entry_op, self.entry_value, self.entry_prob
        )
        choice = torch.randint(0, self.n_sub, (n,), generator=g, device=dev).expand(b)
        draws = torch.rand(2, 2, n, generator=g, device=dev).expand(2, 2, b)
        for slot in range(2):
            entry = (choice * 2 + slot) * 2 + (draws[slot, 1] < 0.5)
            gated = torch.where(draws[slot, 0] < entry_prob[entry], entry_op[entry], -1)
            image_ops.apply_masked(u, gated, entry_value[entry], self.semantics)
        return u

    def run(self, u: torch.Tensor, g: torch.Generator | None, per_batch: bool) -> torch.Tensor:
        """Apply the policy to uint8 images u (B, C, H, W) in place; returns u. On an accelerator without a
        host sync (run_on_device); on the CPU grouped by op, which is faster there."""
        if u.device.type != "cpu":
            return self.run_on_device(u, g, per_batch)
        b, dev = u.shape[0], u.device
        n = 1 if per_batch else b
        choice = torch.randint(0, self.n_sub, (n,), generator=g, device=dev).expand(b).cpu().numpy()
        draws = torch.rand(2, 2, n, generator=g, device=dev).expand(2, 2, b).cpu().numpy()  # (slot, gate|sign, sample)
        for slot in range(2):
            entry = (choice * 2 + slot) * 2 + (draws[slot, 1] < 0.5)
            gated = np.where(draws[slot, 0] < self.entry_prob[entry], self.entry_op[entry], -1)
            pre = None if self.pre is None else (self.pre, torch.from_numpy(entry))
            value = torch.from_numpy(self.entry_value[entry])
            image_ops.apply_grouped(u, torch.from_numpy(gated), value, pre, self.semantics)
        return u


class FusedRandom:
    """RandAugment (`n` ops per sample, uniform over the 14-op space with identity, magnitude bin `m`) or
    TrivialAugmentWide (`n` = 1, magnitude bin uniform per sample, wide ranges), torchvision's op spaces with
    31 magnitude bins, on kdlab's batched ops."""

    def __init__(
        self, space: str, image_size: int, n: int, m: int | None, semantics: image_ops.Semantics = image_ops.PILLOW
    ):
        names = image_ops.RANDOM_SPACE  # identity is index −1 below
        self.semantics = semantics
        self.n_ops = len(names)
        self.n, self.m = n, m
        self.bins = [m] if m is not None else list(range(31))
        table = torch.tensor(
            [[image_ops.bin_magnitude(name, b, space, image_size) for b in self.bins] for name in names]
        )
        op_index = torch.tensor([image_ops.NAMES.index(name) for name in names])
        # entry (op · B + bin) · 2 + negative, B the bins in use (one when m is fixed)
        self.entry_op, self.entry_value = _entries(op_index.repeat_interleave(len(self.bins)), table.view(-1))
        self.pre: image_ops.PrecomputedOps | None = image_ops.PrecomputedOps(
            torch.from_numpy(self.entry_op), torch.from_numpy(self.entry_value), (image_size, image_size), semantics
        )
        self._tables: dict[str, tuple[torch.Tensor, ...]] = {}  # the entry arrays on each device

    def run_on_device(self, u: torch.Tensor, g: torch.Generator | None, per_batch: bool) -> torch.Tensor:
        """run() without a host sync (accelerators), the same draws; image_ops.apply_masked. Returns u."""
        b, dev = u.shape[0], u.device
        k = 1 if per_batch else b
        entry_op, entry_value = _on_device(self._tables, dev, self.entry_op, self.entry_value)
        for _ in range(self.n):
            pick = torch.randint(0, self.n_ops + 1, (k,), generator=g, device=dev).expand(b) - 1
            bins = torch.randint(0, 31, (k,), generator=g, device=dev).expand(b)
            sign = torch.rand(k, generator=g, device=dev).expand(b)
            slot = bins if self.m is None else 0
            entry = (pick.clamp_min(0) * len(self.bins) + slot) * 2 + (sign < 0.5)
            op = torch.where(pick >= 0, entry_op[entry], -1)
            image_ops.apply_masked(u, op, entry_value[entry], self.semantics)
        return u

    def run(self, u: torch.Tensor, g: torch.Generator | None, per_batch: bool) -> torch.Tensor:
        """Apply the policy to uint8 images u (B, C, H, W) in place; returns u. On an accelerator without a
        host sync (run_on_device); on the CPU grouped by op."""
        if u.device.type != "cpu":
            return self.run_on_device(u, g, per_batch)
        b, dev = u.shape[0], u.device
        k = 1 if per_batch else b
        for _ in range(self.n):
            pick = torch.randint(0, self.n_ops + 1, (k,), generator=g, device=dev).expand(b).cpu().numpy() - 1
            bins = torch.randint(0, 31, (k,), generator=g, device=dev).expand(b).cpu().numpy()
            sign = torch.rand(k, generator=g, device=dev).expand(b).cpu().numpy()
            slot = bins if self.m is None else 0
            entry = (np.maximum(pick, 0) * len(self.bins) + slot) * 2 + (sign < 0.5)
            op = np.where(pick >= 0, self.entry_op[entry], -1)
            pre = None if self.pre is None else (self.pre, torch.from_numpy(entry))
            value = torch.from_numpy(self.entry_value[entry])
            image_ops.apply_grouped(u, torch.from_numpy(op), value, pre, self.semantics)
        return u


# timm's RandAugment (`rand-n…-m…-mstd…`, the op set of its rand_augment_transform): 15 ops, each drawn uniformly
# with replacement and applied with probability ½, its level (0…10) mapped to the op's argument as below.
TIMM_SPACE = (
    "auto_contrast", "equalize", "invert", "rotate", "posterize", "solarize", "solarize_add", "color", "contrast",
    "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y",
)  # fmt: skip
TIMM_MAX_LEVEL = 10.0


def timm_argument(name: str, level: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """timm's unsigned argument of op `name` at levels (N,) in 0…10 for images of size (H, W): rotate 30°·l/10,
    posterize int(4·l/10) bits (its "tpu" variant), solarize threshold int(256·l/10), solarize_add int(110·l/10),
    enhance factors 0.1 + 1.8·l/10, shear 0.3·l/10, translate 0.45·l/10 of the image side; 0 for the rest."""
    frac = level / TIMM_MAX_LEVEL
    if name == "rotate":
        return frac * 30.0
    if name == "posterize":
        return torch.trunc(frac * 4)
    if name == "solarize":
        return torch.trunc(frac * 256)
    if name == "solarize_add":
        return torch.trunc(frac * 110)
    if name in image_ops.FACTOR_OPS:
        return frac * 1.8 + 0.1
    if name in ("shear_x", "shear_y"):
        return frac * 0.3
    if name == "translate_x":
        return frac * 0.45 * size[1]
    if name == "translate_y":
        return frac * 0.45 * size[0]
    return torch.zeros_like(level)


class FusedTimmRandom:
    """timm's RandAugment on kdlab's batched ops: per sample and layer, one of TIMM_SPACE uniformly, applied with
    probability ½ at level N(m, mstd) clipped to 0…10 (m exactly when mstd = 0), rotate/shear/translate negated
    with probability ½. Geometric ops resample nearest-neighbour (timm draws bilinear or bicubic per op). The
    draws stay on the images' device; an accelerator applies the ops without a host sync (apply_masked)."""

    def __init__(self, image_size: int, n: int, m: float, mstd: float, semantics: image_ops.Semantics):
        self.size = (image_size, image_size)
        self.n, self.m, self.mstd = n, m, mstd
        self.semantics = semantics
        self.op_index = torch.tensor([image_ops.NAMES.index(name) for name in TIMM_SPACE])

    def arguments(self, pick: torch.Tensor, level: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """The signed arguments (N,) float64 of ops TIMM_SPACE[pick] (N,) at `level` (N,), negated where
        `negative` (N,) bool and the op is geometric (timm negates only those)."""
        level = level.to(torch.float64)
        value = torch.zeros_like(level)
        for j, name in enumerate(TIMM_SPACE):
            value = torch.where(pick == j, timm_argument(name, level, self.size), value)
        op = image_ops.on_device(self.op_index, pick.device)[pick]
        signed = (op >= image_ops.GEOMETRIC.start) & (op < image_ops.GEOMETRIC.stop)
        return torch.where(signed & negative, -value, value)

    def run(
        self, u: torch.Tensor, g: torch.Generator | None, per_batch: bool, fill: image_ops.Fill | None = None
    ) -> torch.Tensor:
        """Apply the policy to uint8 images u (B, C, H, W) in place; returns u. fill: the geometric ops' fill
        (default the semantics')."""
        b, dev = u.shape[0], u.device
        k = 1 if per_batch else b
        semantics = self.semantics if fill is None else dataclasses.replace(self.semantics, fill=fill)
        op_index = image_ops.on_device(self.op_index, dev)
        for _ in range(self.n):
            draws = torch.rand(4, k, generator=g, device=dev).expand(4, b).double()
            noise = torch.randn(k, generator=g, device=dev).expand(b).double()
            pick = (draws[0] * len(TIMM_SPACE)).long().clamp_max(len(TIMM_SPACE) - 1)
            if self.mstd > 0:
                level = (self.m + self.mstd * noise).clamp(0.0, TIMM_MAX_LEVEL)
            else:
                level = torch.full((b,), self.m, dtype=torch.float64, device=dev)
            op = torch.where(draws[1] < 0.5, op_index[pick], -1)  # applied with probability ½
            image_ops.apply(u, op, self.arguments(pick, level, draws[2] < 0.5), None, semantics)
        return u


# `ops`: how the geometric ops fill, translate and shear (image_ops.Semantics). `release`: as the code released
# with Wang et al. (arXiv 2012.02909) ran torchvision's AutoAugment — black fill, whole-pixel translations,
# shears about the centre; `pillow`: as the TensorFlow/PIL AutoAugment and timm — grey (128) fill, fractional
# translations, shears about the corner. The photometric ops follow Pillow's arithmetic in both.
Ops = Literal["release", "pillow"]


@dataclass
class AutoAugmentParams(ViewParams):
    policy: str = "auto"  # auto: cifar10 for images ≤ 32 px, imagenet otherwise; or cifar10 | imagenet | svhn
    impl: Literal["fused", "kornia"] = "fused"  # kdlab's batched per-sample ops, or kornia's AutoAugment
    ops: Ops = "release"  # the released code's torchvision semantics (reproduces its AutoAugment)


@register_view("autoaugment")
class AutoAugmentView(_PolicyView):
    """AutoAugment (Cubuk et al. 2019): one of 25 learned two-op sub-policies per sample."""

    Params = AutoAugmentParams
    summary = "AutoAugment, CIFAR10 policy (≤32 px) or ImageNet policy"

    def __init__(self, params: AutoAugmentParams, image_size: int):
        super().__init__(params, image_size)
        policy = params.policy if params.policy != "auto" else ("cifar10" if image_size <= 32 else "imagenet")
        if policy not in POLICIES:
            raise ConfigError(f"views.policy must be auto, cifar10, imagenet or svhn; got {policy!r}")
        self.policy_name = policy
        self.fused = None
        if params.impl == "fused":  # kdlab's ops and tables: no kornia needed
            self.fused = FusedPolicy(POLICIES[policy], image_size, image_ops.SEMANTICS[params.ops])
        else:
            from kornia.augmentation.auto import AutoAugment

            self._use(AutoAugment(policy))


@dataclass
class RandAugmentParams(ViewParams):
    n: int = 2
    m: int = 10  # magnitude on `scale`; with impl=kornia, kornia's m (1…29)
    # torchvision: torchvision's RandAugment, m a bin 0…30 of its 31-bin space (m = 10 is a third of the range);
    # timm: timm's RandAugment (its 15-op set, each op applied with probability ½, m 0…10 where 10 is the full
    # range, level noise `mstd`, geometric fill the dataset mean), as `rand-n{n}-m{m}-mstd{mstd}`
    scale: Literal["torchvision", "timm"] = "torchvision"
    mstd: float = bounded(0.0, ge=0)  # timm: std of the Gaussian noise on the level, per op (0: exactly m)
    impl: Literal["fused", "kornia"] = "fused"
    ops: Ops = "pillow"  # timm's (and kdlab's earlier) semantics

    def __post_init__(self) -> None:
        super().__post_init__()
        top = 29 if self.impl == "kornia" else (10 if self.scale == "timm" else 30)
        if not 0 <= self.m <= top or self.n < 1:
            raise ConfigError(f"randaugment needs n ≥ 1 and 0 ≤ m ≤ {top}; got n={self.n}, m={self.m}")
        if self.mstd > 0 and (self.scale != "timm" or self.impl != "fused"):
            raise ConfigError("randaugment's mstd (level noise) is timm's: set views.params.scale=timm")
        if self.scale == "timm" and self.impl != "fused":
            raise ConfigError("randaugment with scale=timm runs on kdlab's ops: leave views.params.impl=fused")


@register_view("randaugment")
class RandAugmentView(_PolicyView):
    """RandAugment (Cubuk et al. 2020): n ops per sample. `scale=torchvision`: torchvision's (each op drawn
    uniformly, identity included, at magnitude bin m of its 31-bin space); `scale=timm`: timm's (FusedTimmRandom)."""

    Params = RandAugmentParams
    summary = "RandAugment: n random ops at magnitude m (torchvision's or timm's)"
    fused: FusedPolicy | FusedRandom | FusedTimmRandom | None  # type: ignore[assignment]

    def __init__(self, params: RandAugmentParams, image_size: int):
        super().__init__(params, image_size)
        semantics = image_ops.SEMANTICS[params.ops]
        fused = params.impl == "fused"
        if params.scale == "timm":
            self.fused = FusedTimmRandom(image_size, params.n, float(params.m), params.mstd, semantics)
        else:
            self.fused = FusedRandom("standard", image_size, params.n, params.m, semantics) if fused else None
        if self.fused is None:
            from kornia.augmentation.auto import RandAugment

            self._use(RandAugment(n=1, m=params.m))
            self.n_layers = params.n

    def _run_fused(self, u: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        if isinstance(self.fused, FusedTimmRandom) and self.params.ops == "pillow":
            # timm's transform factory (and Guo et al.'s release) fill with the dataset mean, not grey
            return self.fused.run(u, g, self.params.per_batch_compat, mean_fill(self.dataset_mean))
        return super()._run_fused(u, g)


def mean_fill(mean: Sequence[float] | None) -> tuple[int, ...] | None:
    """A dataset mean in [0, 1] units as timm's 8-bit fill, min(255, round(255·m)) per channel; None if unknown."""
    return None if mean is None else tuple(min(255, round(255 * m)) for m in mean)


@dataclass
class TrivialAugmentParams(ViewParams):
    impl: Literal["fused", "kornia"] = "fused"
    ops: Ops = "pillow"


@register_view("trivialaugment")
class TrivialAugmentView(_PolicyView):
    """TrivialAugment (Müller & Hutter 2021), the "wide" variant: one op per sample at a uniformly random
    magnitude bin."""

    Params = TrivialAugmentParams
    summary = "TrivialAugment: one random op, random magnitude"

    def __init__(self, params: TrivialAugmentParams, image_size: int):
        super().__init__(params, image_size)
        semantics = image_ops.SEMANTICS[params.ops]
        self.fused = FusedRandom("wide", image_size, 1, None, semantics) if params.impl == "fused" else None
        if self.fused is None:
            from kornia.augmentation.auto import TrivialAugment

            self._use(TrivialAugment())
