"""Strong views x' (applied on top of the standard view x): the interface, registry and shared helpers.

A strong view maps a float batch in [0, 1] (B, C, H, W) to a ViewOutput: the new images and, for mixing
views, which two source images each output came from and with what weight (for mixed-label baselines).
Randomness is drawn per sample from the given torch.Generator unless `per_batch_compat` is set, which
reproduces the one-transform-per-batch behaviour of the code released with Wang et al., "Knowledge
Distillation Thrives on Data Augmentation" (arXiv 2012.02909).

Views that pick among candidates by a score of the models being trained (CutMixPick) say so with
`needs_scores`; the pipeline then hands them a `Scorer`, and nothing outside `views/` names them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from kdlab.errors import ConfigError
from kdlab.registry import Registry
from kdlab.typed_config import from_dict


@dataclass
class MixInfo:
    """For output i: source image `src[i]` with weight `lam[i]` and partner `partner[i]` with 1 − lam[i].

    All (B',) tensors; `src`/`partner` index the input batch, `lam` is float in [0, 1]."""

    src: torch.Tensor
    partner: torch.Tensor
    lam: torch.Tensor

    def select(self, keep: torch.Tensor) -> MixInfo:
        return MixInfo(self.src[keep], self.partner[keep], self.lam[keep])


@dataclass
class ViewOutput:
    """images: float (B', C, H, W) in [0, 1]; mix: MixInfo for mixing views, else None (output i ↔ input i).
    teacher_logits: per teacher (B', K), when the view already ran the teachers on these images (scoring);
    stats: per-step scalar tensors the pipeline averages over an epoch (e.g. `pick_ratio`)."""

    images: torch.Tensor
    mix: MixInfo | None = None
    teacher_logits: list[torch.Tensor] | None = None
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


ScoreKind = Literal["kld", "teacher_entropy", "student_entropy"]


@dataclass(frozen=True)
class ScoreRequest:
    """What a scoring view asks of the method: `kld` = per-sample KL(softmax(t/τ) ‖ softmax(s/τ)) with the
    teachers' mean logits, no τ²; `teacher_entropy` / `student_entropy` = entropy of softmax at T = 1.
    `bn_update`: score with the student in train mode (updates its BatchNorm statistics)."""

    kind: ScoreKind = "kld"
    temperature: float = 4.0
    bn_update: bool = False


# scorer(candidates, request) → (scores (P,), teacher logits on the candidates per teacher, or None).
# The candidates are float [0, 1] images (P, C, H, W); the pipeline normalises them before the models see them.
Scorer = Callable[[torch.Tensor, ScoreRequest], tuple[torch.Tensor, list[torch.Tensor] | None]]


@dataclass
class ViewParams:
    """Parameters every strong view has. `strength` is the probability that a sample gets the view
    (others keep x): one axis for sweeps over augmentation strength."""

    strength: float = 1.0
    per_batch_compat: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ConfigError(f"views.strength must be in [0, 1], got {self.strength}")


class StrongView(nn.Module):
    """Base class: subclasses implement `transform(x, g) -> ViewOutput` for every sample of x.

    A view that ranks candidates with the models being trained sets `needs_scores` and overrides `forward`,
    which then receives a `scorer`; `unscored_stand_in` names the view to use where no student is training
    (analysis, T. stddev). `check` validates the view against the run (batch size, teachers)."""

    Params: ClassVar[type] = ViewParams
    summary: ClassVar[str] = ""
    needs_scores: ClassVar[bool] = False
    unscored_stand_in: ClassVar[str | None] = None

    def __init__(self, params: Any, image_size: int):
        super().__init__()
        self.params = params
        self.image_size = image_size
        # the dataset's per-channel mean in [0, 1] units, where known (the pipeline sets it): what
        # "zero after normalisation" is in pixels, e.g. the released cutout's hole
        self.dataset_mean: tuple[float, ...] | None = None

    def check(self, batch_size: int, n_teachers: int) -> None:
        """Raise ConfigError if the view cannot run with this batch size and number of teachers."""

    def transform(self, x: torch.Tensor, g: torch.Generator | None) -> ViewOutput:
        raise NotImplementedError

    def transform_u8(self, u: torch.Tensor, g: torch.Generator | None) -> ViewOutput | None:
        """The view from the same images as uint8 (x = u / 255), for views that work on the 8-bit values
        (saves a conversion); None where the view has no such path. Must not modify u."""
        return None

    def forward(
        self,
        x: torch.Tensor,
        g: torch.Generator | None = None,
        x_u8: torch.Tensor | None = None,
        scorer: Scorer | None = None,
    ) -> ViewOutput:
        """x: float (B, C, H, W) in [0, 1] → ViewOutput; samples outside `strength` keep x unchanged.
        x_u8: optionally the same images as uint8, used by views with a `transform_u8` path; `scorer`: given
        to views with `needs_scores`, ignored by the others."""
        out = self.transform_u8(x_u8, g) if x_u8 is not None else None
        if out is None:
            out = self.transform(x, g)
        s = self.params.strength
        if s >= 1.0 or out.images.shape[0] != x.shape[0]:
            return out
        keep_x = ~bernoulli_mask(x.shape[0], s, g, x.device, self.params.per_batch_compat)
        images = torch.where(keep_x[:, None, None, None], x, out.images)
        mix = out.mix
        if mix is not None:
            ar = torch.arange(x.shape[0], device=x.device)
            mix = MixInfo(
                torch.where(keep_x, ar, mix.src),
                torch.where(keep_x, ar, mix.partner),
                torch.where(keep_x, torch.ones_like(mix.lam), mix.lam),
            )
        return ViewOutput(images, mix)


VIEWS: Registry[type[StrongView]] = Registry("view", ConfigError)


def register_view(name: str) -> Callable[[type[StrongView]], type[StrongView]]:
    def decorate(cls: type[StrongView]) -> type[StrongView]:
        VIEWS.add(name, cls)
        return cls

    return decorate


def build_view(name: str, params: dict[str, Any], image_size: int, mean: Sequence[float] | None = None) -> StrongView:
    """Strong view `name` with its parameters validated (unknown keys fail with suggestions, named as the
    config spells them: `views.params.KEY`), for square images of `image_size` px of a dataset whose
    per-channel mean ([0, 1] units) is `mean`, where known."""
    cls = VIEWS.get(name)
    view = cls(from_dict(cls.Params, params, "views.params"), image_size)
    view.dataset_mean = tuple(mean) if mean is not None else None
    return view


# ------------------------------------------------------------------------------------------ random helpers


def uniform(n: int, g: torch.Generator | None, device: torch.device, per_batch: bool = False) -> torch.Tensor:
    """(n,) uniform [0, 1) draws; one value repeated when `per_batch`."""
    u = torch.rand(1 if per_batch else n, generator=g, device=device)
    return u.expand(n) if per_batch else u


def bernoulli_mask(
    n: int, p: float, g: torch.Generator | None, device: torch.device, per_batch: bool = False
) -> torch.Tensor:
    """(n,) bool, each True with probability p (all equal when `per_batch`)."""
    return uniform(n, g, device, per_batch) < p


def beta(
    n: int, alpha: float, g: torch.Generator | None, device: torch.device, per_batch: bool = False
) -> torch.Tensor:
    """(n,) Beta(α, α) draws. α = 1 (uniform) uses the generator; other α use torch's global RNG (seeded by the
    run and saved in checkpoints), since torch's Beta sampler takes no generator."""
    m = 1 if per_batch else n
    if alpha == 1.0:
        lam = torch.rand(m, generator=g, device=device)
    else:
        a = torch.full((), alpha, device=device)  # made on the device: no copy from the host in a step
        lam = torch.distributions.Beta(a, a, validate_args=False).sample((m,))  # validation reads a on the host
    return lam.expand(n) if per_batch else lam


def derangement(n: int, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """A random permutation of range(n) without fixed points (n ≥ 2): no image is mixed with itself.

    Image order[j] is paired with order[j + s], s uniform in 1…n−1, for a uniformly random order: each
    image's partner is uniform over the others. No host sync."""
    if n < 2:
        raise ValueError("mixing needs at least two images in a batch")
    order = torch.randperm(n, generator=g, device=device)
    shift = torch.randint(1, n, (1,), generator=g, device=device)
    perm = torch.empty_like(order)
    perm[order] = order[(torch.arange(n, device=device) + shift) % n]
    return perm
