"""The Distiller interface every method implements, the frozen Teacher wrapper, and the method registry."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.errors import ConfigError
from kdlab.registry import Registry
from kdlab.typed_config import from_dict, to_dict
from kdlab.views.base import MixInfo, ScoreRequest
from kdlab.views.pipeline import TrainBatch


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-row entropy (nats) of softmax(logits) at T=1: (N, K) → (N,)."""
    logp = F.log_softmax(logits.float(), 1)
    return -(logp.exp() * logp).sum(1)


def mixed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, mix: MixInfo | None) -> torch.Tensor:
    """CE against mixed labels: mean of λ·CE(s, y[src]) + (1 − λ)·CE(s, y[partner]); plain CE when unmixed."""
    if mix is None:
        return F.cross_entropy(logits.float(), y)
    logp = F.log_softmax(logits.float(), 1)
    nll_src = -logp.gather(1, y[mix.src][:, None]).squeeze(1)
    nll_partner = -logp.gather(1, y[mix.partner][:, None]).squeeze(1)
    return (mix.lam * nll_src + (1 - mix.lam) * nll_partner).mean()


EnsembleMode = Literal["per_teacher", "mean_logits"]


@dataclass
class TeacherLogits:
    """Each teacher's logits on the standard view x (B, K) and, when asked for and present, on the strong view
    x' (B', K); `strong` is None otherwise."""

    x: list[torch.Tensor]
    strong: list[torch.Tensor] | None


def linear_warmup(epoch: float | torch.Tensor, epochs: float) -> float | torch.Tensor:
    """min(epoch / epochs, 1) for a fractional epoch (a 0-dim tensor in a captured step: the result is one too);
    1 when epochs ≤ 0. The loss weight ramp of DKD and ReviewKD."""
    if epochs <= 0:
        return 1.0
    if isinstance(epoch, torch.Tensor):
        return (epoch / epochs).clamp(max=1.0)
    return min(epoch / epochs, 1.0)


def over_views(fn: Callable[[torch.Tensor], Any], views: list[torch.Tensor]) -> list[Any]:
    """fn applied once to the concatenated views, its output (a tensor, or a tuple/list of tensors and lists of
    tensors, split along dim 0) returned per view. For models whose batch composition changes nothing (eval
    mode); a training student runs each view on its own, as its BatchNorm statistics differ."""
    if len(views) == 1:
        return [fn(views[0])]
    sizes = [v.shape[0] for v in views]

    def split(out: Any) -> list[Any]:
        if isinstance(out, torch.Tensor):
            return list(out.split(sizes))
        parts = [split(o) for o in out]  # [field][view]
        return [type(out)(p[i] for p in parts) for i in range(len(views))]

    return split(fn(torch.cat(views)))


def ensemble_loss(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    logits_s: torch.Tensor,
    teacher_logits: list[torch.Tensor],
    mode: EnsembleMode = "per_teacher",
) -> torch.Tensor:
    """A logit loss against several teachers: `per_teacher` = mean over teachers of loss(s, t_i) (Guo et al.,
    "Why does Knowledge Distillation work? Rethink its attention and fidelity mechanism", arXiv 2405.00739);
    `mean_logits` = loss(s, mean_i t_i), distilling the averaged ensemble. (B, K) logits → scalar.
    With one teacher both are loss(s, t)."""
    if mode == "mean_logits" or len(teacher_logits) == 1:
        return loss(logits_s, torch.stack(teacher_logits).mean(0) if len(teacher_logits) > 1 else teacher_logits[0])
    return torch.stack([loss(logits_s, t) for t in teacher_logits]).mean()


def model_class_map(model: nn.Module, taps: dict[str, str], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, K), class-summed map (B, h, w)) of a model with `feature` and `classifier` taps."""
    from kdlab.metrics.attention import class_summed_map
    from kdlab.models.features import FeatureExtractor, get_module

    missing = [r for r in ("feature", "classifier") if r not in taps]
    if missing:
        raise ConfigError(f"attention needs the model's taps {missing}: set *.taps.feature / *.taps.classifier")
    head = get_module(model, taps["classifier"])
    if not isinstance(head, nn.Linear):
        raise ConfigError(f"the classifier tap {taps['classifier']!r} is not a Linear layer")
    with FeatureExtractor(model, [taps["feature"]]) as fx:
        logits, feats = fx(x)
    return logits, class_summed_map(feats[taps["feature"]], head.weight)


@contextlib.contextmanager
def kept_modes(*modules: nn.Module) -> Iterator[None]:
    """Whatever the body does to train/eval modes, every submodule of `modules` gets its own mode back after."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def candidate_scores(
    teacher_logits: list[torch.Tensor] | None, student_logits: torch.Tensor | None, request: ScoreRequest
) -> torch.Tensor:
    """Per-candidate scores (P,) from each teacher's logits (P, K) and the student's (P, K): `kld` =
    KL(softmax(t̄/τ) ‖ softmax(s/τ)) with t̄ the teachers' mean logits, no τ²; `teacher_entropy` /
    `student_entropy` = entropy of softmax(t̄) / softmax(s) at T = 1 (nats)."""
    t = torch.stack(teacher_logits).mean(0).float() if teacher_logits else None
    if request.kind == "teacher_entropy":
        assert t is not None, "teacher_entropy needs a teacher"
        return entropy(t)
    assert student_logits is not None, f"{request.kind} needs the student's logits"
    if request.kind == "student_entropy":
        return entropy(student_logits)
    assert t is not None, "kld needs a teacher"
    log_pt = F.log_softmax(t / request.temperature, 1)
    log_ps = F.log_softmax(student_logits.float() / request.temperature, 1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(1)


class Teacher(nn.Module):
    """A pretrained model. Frozen by default: eval mode and no gradients whatever `train()` is called with.
    `make_adaptive()` (ATSC) lets it train with the student."""

    def __init__(self, model: nn.Module, taps: dict[str, str], name: str = "teacher"):
        super().__init__()
        self.model = model
        self.taps = dict(taps)
        self.label = name
        self.adaptive = False
        self.amp: torch.dtype | None = None  # set_inference_precision: a frozen teacher's forward in bf16
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def make_adaptive(self) -> None:
        self.adaptive = True
        for p in self.model.parameters():
            p.requires_grad_(True)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(mode and self.adaptive)

    def set_inference_precision(self, dtype: torch.dtype | None) -> None:
        """Run the frozen teacher's logit forward under autocast to `dtype` (e.g. torch.bfloat16) in
        channels_last memory format; logits come back in float32. None: the run's own precision."""
        self.amp = dtype
        if dtype is not None:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.amp is None or self.adaptive:
            return self.model(x)
        with torch.autocast(device_type=x.device.type, dtype=self.amp):
            return self.model(x.contiguous(memory_format=torch.channels_last)).float()


class Distiller(nn.Module):
    """A training method. Holds the student and its teachers.

    `forward_train(batch)` takes a TrainBatch (normalised standard view x (B, C, H, W), labels y (B,), sample
    ids (B,), and optionally a strong view x' with its mixing info) and returns the student logits on x
    (B, K) and a dict of named, already-weighted scalar loss terms whose sum is minimised. `predict(x)` is
    the inference path (the student, unless a method says otherwise)."""

    Params: ClassVar[type] = object
    needs_teacher: ClassVar[bool] = True
    needs_train_labels: ClassVar[bool] = False  # e.g. CRD: memory banks over the training split
    predicts_with_student_head: ClassVar[bool] = True  # False: `predict` uses a shared head (SimKD, ATSC)
    needs_strong_view: ClassVar[bool] = False  # True: the loss is defined on x and x' together (MLKD)
    student_requirement: ClassVar[str | None] = None  # what the student must have, when not any classifier

    def attach_train_labels(self, labels: torch.Tensor, generator: torch.Generator | None) -> None:
        """Called by the Trainer before training for methods with `needs_train_labels`."""

    def __init__(
        self,
        student: nn.Module,
        teachers: list[Teacher],
        params: Any,
        student_taps: dict[str, str] | None = None,
        image_shape: tuple[int, int, int] = (3, 32, 32),
    ):
        super().__init__()
        self.student = student
        self.teachers = nn.ModuleList(teachers)
        self.params = params
        self.student_taps = dict(student_taps or {})
        self.image_shape = image_shape
        self.setup()

    def setup(self) -> None:
        """Build method-specific parts once student, teachers, params, taps and image shape are set
        (extra modules sized by probing the models). Default: nothing."""

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def post_step(self, batch: TrainBatch, optimizer: torch.optim.Optimizer) -> None:
        """Called after each optimiser step (ATSC's bias-only step). Default: nothing."""

    def epoch_report(self) -> dict[str, float]:
        """Method-specific per-epoch numbers for metrics.jsonl (e.g. how far adaptive teachers moved)."""
        return {}

    @property
    def adaptive_teachers(self) -> bool:
        return any(self.teacher(i).adaptive for i in range(len(self.teachers)))

    def teacher(self, i: int = 0) -> Teacher:
        """The i-th teacher, typed."""
        t = self.teachers[i]
        assert isinstance(t, Teacher)
        return t

    @torch.no_grad()
    def teacher_views(self, batch: TrainBatch, strong: bool = True) -> TeacherLogits:
        """Each teacher's logits on x and (when `strong` and the batch has x') on x'. Logits the strong view
        already computed (CutMixPick's scoring) are reused; otherwise one forward per teacher runs over x and
        x' together (frozen teachers are in eval mode, so concatenating changes nothing)."""
        if not strong or batch.x_strong is None:
            return TeacherLogits([t(batch.x) for t in self.teachers], None)
        if batch.teacher_strong is not None:
            return TeacherLogits([t(batch.x) for t in self.teachers], batch.teacher_strong)
        per_teacher = [over_views(t, [batch.x, batch.x_strong]) for t in self.teachers]
        return TeacherLogits([v[0] for v in per_teacher], [v[1] for v in per_teacher])

    @contextlib.contextmanager
    def scoring_mode(self, bn_update: bool) -> Iterator[None]:
        """While scoring candidates: the student and the extra modules in train mode only when `bn_update`, every
        teacher in eval mode (an adaptive teacher's BatchNorm statistics stay as they are); modes restored after."""
        with kept_modes(self):
            self.train(bn_update)
            for t in self.teachers:
                t.eval()
            yield

    @torch.no_grad()
    def score_candidates(
        self, x: torch.Tensor, request: ScoreRequest
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Scores of candidates x (P, C, H, W), normalised → (scores (P,), teacher logits per teacher or None),
        as `request` asks (see ScoreRequest). The student side is the method's prediction path (`predict`: for
        SimKD / ATSC projector + shared classifier), in eval mode unless `request.bn_update` (the released
        code's train-mode scoring, which updates BN statistics)."""
        with self.scoring_mode(request.bn_update):
            t_logits = [t(x) for t in self.teachers] if self.teachers else None
            s = None if request.kind == "teacher_entropy" else self.predict(x).float()
        return candidate_scores(t_logits, s, request), t_logits

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) of the model being trained, for evaluation and export."""
        return self.student(x)

    def inference_model(self) -> nn.Module:
        """The modules `predict` uses and nothing else, as one module: images (B, C, H, W) → logits (B, K), with
        predict's result (what `kdlab export` writes). Default: the student."""
        return self.student

    def predict_with_class_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, K), class-summed map (B, h, w)) of the prediction path, for class-agnostic CAM:
        the final linear layer applied as a 1×1 convolution to the last map before pooling, summed over
        classes. Default: the student's `feature` tap and `classifier` tap."""
        return model_class_map(self.student, self.student_taps, x)

    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules beyond the student (projectors, embedders), by name."""
        return {}

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups over the trainable modules. A group may carry `lr_scale` (its learning
        rate is lr_scale × the scheduled rate). Default: one group of every parameter that requires grad."""
        params = [p for m in self.trainable_modules().values() for p in m.parameters() if p.requires_grad]
        return [{"params": params}]

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Everything the optimiser updates and a checkpoint must hold, by name."""
        return {"student": self.student, **self.extra_modules()}

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Tensors of the trainable modules (parameters and buffers) as `name.param` keys."""
        return {
            f"{name}.{k}": v
            for name, module in self.trainable_modules().items()
            for k, v in module.state_dict().items()
        }

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.trainable_modules().items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})

    def params_dict(self) -> dict[str, Any]:
        return to_dict(self.params)


@dataclass(frozen=True)
class MethodEntry:
    cls: type[Distiller]
    summary: str


METHODS: Registry[MethodEntry] = Registry("method", ConfigError)


def register_method(name: str, summary: str):
    """Class decorator: register a Distiller subclass under `name`."""

    def decorate(cls: type[Distiller]) -> type[Distiller]:
        METHODS.add(name, MethodEntry(cls, summary))
        return cls

    return decorate


def resolve_method_params(method_cfg: dict[str, Any]) -> tuple[str, Any]:
    """`{'name': 'kd', 'temperature': 4, …}` → ('kd', KDParams(...)); unknown keys fail with suggestions."""
    cfg = dict(method_cfg)
    name = cfg.pop("name", None)
    if "strong_kd_weight" in cfg:  # the x' weight's name in run folders written before 2026-12-04
        cfg.setdefault("strong_weight", cfg.pop("strong_kd_weight"))
    if not isinstance(name, str):
        raise ConfigError("method.name must be set (e.g. method.name=kd)")
    entry = METHODS.get(name)
    return name, from_dict(entry.cls.Params, cfg, "method")


def build_method(
    method_cfg: dict[str, Any],
    student: nn.Module,
    teachers: list[Teacher],
    student_taps: dict[str, str] | None = None,
    image_shape: tuple[int, int, int] = (3, 32, 32),
) -> Distiller:
    """Instantiate the configured method; a method that needs a teacher fails clearly without one.

    `student_taps` (role → module path) and `image_shape` (C, H, W) let feature methods size their extra
    modules (regressors, projectors) by probing the models once."""
    name, params = resolve_method_params(method_cfg)
    cls = METHODS.get(name).cls
    if cls.needs_teacher and not teachers:
        raise ConfigError(f"method {name!r} needs a teacher: set teacher.name and teacher.checkpoint")
    return cls(student, teachers, params, student_taps, image_shape)
