"""The run configuration: the sections of a run as typed dataclasses, loaded from YAML (which may extend other
files with `base:`) plus `a.b=c` command-line overrides (the machinery is `kdlab.typed_config`).

Each parameter is checked by the dataclass that owns it: ranges are declared on the field (`bounded`), rules
that tie fields together in `__post_init__`. The method section is open (`method.name` plus that method's own
parameters) and is checked by the method's own parameter dataclass when the run is built; a strong view's
`views.params` likewise by the view's.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kdlab.errors import ConfigError
from kdlab.typed_config import (
    apply_method_override,
    apply_overrides,
    bounded,
    from_dict,
    parse_override,
    read_config_file,
    set_path,
    to_dict,
)


@dataclass
class DataConfig:
    """Dataset and loader. `dataset` is a spec string: `digits`, `cifar100:PATH`, `imagefolder:PATH`, …"""

    # digits | cifar10:PATH | cifar100:PATH | tinyimagenet:PATH | imagefolder:PATH | mnist:PATH (`kdlab data check`)
    dataset: str = "digits"
    cache_dir: str | None = None  # where decoded .npy caches go; default $KDLAB_CACHE or ~/.cache/kdlab
    train_per_class: int | None = bounded(None, ge=1)  # keep the first k training images of each class (small CPU runs)
    test_per_class: int | None = bounded(None, ge=1)  # keep the first k test images of each class
    batch_size: int = bounded(64, ge=1)  # the global training batch (split over processes)
    eval_batch_size: int = bounded(500, ge=1)  # batch for evaluation and analysis
    crop_padding: int = bounded(4, ge=0)  # standard view: random crop with this zero padding; 0 disables the crop
    flip: bool = True  # standard view: random horizontal flip
    drop_last: bool = False  # drop the last partial training batch
    # Streaming from disk for image folders too large for memory (ImageNet): `auto` streams when the decoded
    # images would exceed memory_budget_gb; `on` always (a folder, not an archive); `off` never.
    stream: Literal["auto", "on", "off"] = "auto"
    memory_budget_gb: float = bounded(16.0, gt=0)  # decoded images above this stream from disk (data.stream=auto)
    image_size: int | None = None  # streamed images are brought to this size (default: the first image's)
    workers: int | None = None  # decoding processes when streaming (default: cores − 1, shared by the node's ranks)
    # JPEG decoder of streamed files (data/decode.py): auto = simplejpeg (libjpeg-turbo into NumPy) when
    # installed (pip install 'kdlab[turbo]'), else Pillow; both decode at a reduced DCT scale for large photos.
    # gpu = batched on the CUDA device (torchvision.io.decode_jpeg; data/device_decode.py), workers read bytes only
    decoder: Literal["auto", "pillow", "simplejpeg", "gpu"] = "auto"


@dataclass
class ViewsConfig:
    """Augmentation views. `standard` makes x (crop_flip uses data.crop_padding / data.flip); `strong` names the
    view x' applied on top of x (`kdlab views` lists them), with `strength` = probability per sample and the
    view's own parameters in `params`."""

    # x's augmentation: crop_flip (CRD protocol), weak/strong (Guo et al.'s presets), none
    standard: Literal["crop_flip", "weak", "strong", "none"] = "crop_flip"
    # which release transforms `weak`/`strong` follow (Guo et al., arXiv 2405.00739): its CIFAR or its ImageNet
    # ones; auto: cifar for images ≤ 32 px, else imagenet
    preset_family: Literal["auto", "cifar", "imagenet"] = "auto"
    strong: str | None = None  # the strong view x' on top of x, e.g. cutmix, cutmix_pick, autoaugment (`kdlab views`)
    strength: float = 1.0  # checked by the view's parameters, which own it
    per_batch_compat: bool = False  # released-code behaviour: one transform per batch
    # the strong view's own parameters, e.g. {beta: 1.0} (`kdlab views` lists them)
    params: dict[str, Any] = field(default_factory=dict)


IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@dataclass(frozen=True)
class InputNorm:
    """Per-channel mean and std in [0, 1] pixel units."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def parse_normalize(value: Any, what: str, channels: int | None) -> InputNorm | None:
    """A `normalize` setting → InputNorm, or None for the dataset's statistics. Accepted: `dataset` (default),
    `none` ([0, 1] input: mean 0, std 1), `imagenet`, or a mapping {mean: [...], std: [...]} of `channels`
    values each (or one value for all), every std > 0. channels None (not known yet): lengths unchecked, and
    `none` gets one value."""
    if value is None or value == "dataset":
        return None
    if value == "none":
        return InputNorm((0.0,) * (channels or 1), (1.0,) * (channels or 1))
    if value == "imagenet":
        value = IMAGENET
    if not isinstance(value, dict) or set(value) != {"mean", "std"}:
        raise ConfigError(
            f"{what}.normalize must be dataset, none, imagenet or {{mean: [...], std: [...]}}; got {value!r}"
        )
    parts = []
    for key in ("mean", "std"):
        v = value[key]
        v = [v] if isinstance(v, int | float) else v
        if not isinstance(v, list | tuple) or not all(isinstance(x, int | float) for x in v):
            raise ConfigError(f"{what}.normalize.{key} must be a list of numbers; got {value[key]!r}")
        if len(v) == 1 and channels is not None:
            v = list(v) * channels
        if channels is not None and len(v) != channels:
            raise ConfigError(f"{what}.normalize.{key} has {len(v)} values but the images have {channels} channels")
        parts.append(tuple(float(x) for x in v))
    if any(s <= 0 for s in parts[1]):
        raise ConfigError(f"{what}.normalize.std must be > 0; got {list(parts[1])}")
    return InputNorm(parts[0], parts[1])


@dataclass
class ModelConfig:
    """A model from the zoo (`name`) or from a user function (`factory: path/to/file.py:build`)."""

    name: str = "resnet8"  # zoo model (`kdlab models`), or timm:NAME / torchvision:NAME (optional vision extra)
    factory: str | None = None  # or the user's builder, path/to/file.py:function (called with num_classes and kwargs)
    checkpoint: str | None = None  # weights: a run folder, a kdlab .safetensors, or a .pth/.pt/.th file as it exists
    # timm:/torchvision: models' pretrained weights, loaded by the library (models/pretrained.py): true = its
    # cache (never downloaded), or PATH = a weights file for this architecture; they bring the model's own
    # normalisation, input size, crop and interpolation (those left null below). `checkpoint` loads over them.
    pretrained: bool | str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the builder
    taps: dict[str, str] = field(default_factory=dict)  # role → module path, e.g. {feature: layer4}
    # the input normalisation the model was trained with: dataset (the data's own statistics, kdlab's models),
    # none ([0, 1] input), imagenet, or {mean: [...], std: [...]} in [0, 1] units (models/normalization.py);
    # null: a pretrained model's own, else dataset
    normalize: Any = None
    # the model's own input size (an int for a square, or [H, W]): each batch, drawn once at the data's size, is
    # resized on the device for this model, antialiased (models/input_size.py); null: a pretrained model's own,
    # else the data's size
    input_size: int | list[int] | None = None
    # how input_size resizes; null: a pretrained model's own interpolation, else bilinear
    input_resize: Literal["bilinear", "bicubic"] | None = None
    # the center-crop fraction of input_size (resize to input_size / crop_pct, then crop: timm's eval rule);
    # null: a pretrained model's own at its own size, else 1 (the whole image, resized)
    input_crop_pct: float | None = None

    def __post_init__(self) -> None:
        parse_normalize(self.normalize, "model", None)
        size = self.input_size
        if size is not None and ((isinstance(size, list) and len(size) != 2) or min(self.own_size or (1,)) < 1):
            raise ConfigError(f"input_size must be one size ≥ 1 (a square) or [height, width], got {self.input_size}")
        if self.input_crop_pct is not None and not 0 < self.input_crop_pct <= 1:
            raise ConfigError(f"input_crop_pct must be in (0, 1], got {self.input_crop_pct}")
        if isinstance(self.pretrained, str) and not self.pretrained.strip():
            raise ConfigError("pretrained must be true, false or a weights file's path")

    @property
    def own_size(self) -> tuple[int, int] | None:
        """`input_size` as (H, W) (an int is a square), or None: the data's own size."""
        if self.input_size is None:
            return None
        h, w = (self.input_size, self.input_size) if isinstance(self.input_size, int) else self.input_size
        return (int(h), int(w))

    @property
    def label(self) -> str:
        """The model actually used, for names and tables: `file.py:function` for a factory, else the zoo name."""
        if self.factory:
            file, _, func = self.factory.rpartition(":")
            return f"{Path(file).name}:{func}"
        return self.name


@dataclass
class OptimConfig:
    """The optimiser (engine/optimizers.py). The CRD CIFAR-100 protocol: SGD, lr 0.05, momentum 0.9, weight decay
    5e-4 on every parameter. ViTs and DeiT: AdamW, weight decay off norms, biases and tokens, layer-wise lr decay,
    gradient clipping (timm's conventions)."""

    # sgd | adamw | dot: SGD with separate momenta for the task (CE) and distillation gradients, momentum ∓
    # dot_delta (Zhao et al., "DOT: A Distillation-Oriented Trainer", ICCV 2023; mdistiller engine/dot.py)
    name: Literal["sgd", "adamw", "dot"] = "sgd"
    dot_delta: float = bounded(0.075, ge=0)  # DOT's δ (the release's 0.075 on every CIFAR-100 pair it published)
    lr: float = bounded(0.05, gt=0)  # learning rate (the CRD protocol: 0.05)
    momentum: float = bounded(0.9, ge=0)  # SGD / DOT momentum
    weight_decay: float = bounded(5e-4, ge=0)  # decoupled for adamw, L2 for sgd / dot
    nesterov: bool = False  # SGD's Nesterov momentum
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW's (β1, β2)
    eps: float = bounded(1e-8, gt=0)  # AdamW's ε
    # no weight decay on 1-D parameters (norms, biases), `.bias` and the model's no_weight_decay() names
    # (position, class and distillation tokens) — timm's param_groups_weight_decay. null: on for adamw, off for
    # sgd / dot (the CRD protocol decays every parameter)
    decay_filter: bool | None = None
    # layer-wise lr decay (BEiT; timm's param_groups_layer_decay): the student's layer i of n learns at
    # layer_decay^(n-1-i) × lr, by the model's own group_matcher (timm models); null: off
    layer_decay: float | None = bounded(None, gt=0, le=1)
    clip_grad: float | None = bounded(None, gt=0)  # clip the gradients before each step (null: no clipping)
    clip_mode: Literal["norm", "value"] = "norm"  # norm: total 2-norm ≤ clip_grad; value: each entry in ±clip_grad
    # If set, `lr` is the rate for a global batch of lr_ref_batch images and is scaled linearly to
    # data.batch_size (the global batch, whatever the number of processes).
    lr_ref_batch: int | None = bounded(None, ge=1)

    def __post_init__(self) -> None:
        if self.name == "dot" and self.dot_delta > self.momentum:
            raise ConfigError(f"optim.dot_delta={self.dot_delta} must not exceed optim.momentum={self.momentum}")
        if self.name != "sgd" and self.nesterov:
            raise ConfigError(f"optim.name={self.name} has no Nesterov variant: set optim.nesterov=false")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if self.name == "dot" and self.clip_grad is not None:
            raise ConfigError("optim.clip_grad with optim.name=dot: DOT steps two gradients; its release clips neither")

    @property
    def filters_decay(self) -> bool:
        """Whether norms, biases and tokens are kept out of weight decay (decay_filter, or the optimiser's default)."""
        return self.decay_filter if self.decay_filter is not None else self.name == "adamw"


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, in epochs. `epoch_factor` k scales epochs, milestones and warm-up
    ("longer training": k=4 turns 240 epochs with decay at 150/180/210 into 960 with 600/720/840)."""

    epochs: int = bounded(240, ge=1)  # training epochs (the CRD protocol: 240)
    kind: Literal["multistep", "cosine", "constant"] = "multistep"  # learning-rate schedule
    # multistep: epochs where lr is multiplied by gamma
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = bounded(0.1, gt=0, le=1)  # multistep: the factor at each milestone
    warmup_epochs: float = bounded(0.0, ge=0)  # linear warm-up from 0 over this many epochs
    min_lr: float = bounded(0.0, ge=0)  # cosine: the final learning rate
    epoch_factor: float = bounded(1.0, gt=0)  # scale epochs and milestones (longer training: 4 = 4x)

    def __post_init__(self) -> None:
        if sorted(self.milestones) != list(self.milestones):
            raise ConfigError("schedule.milestones must be increasing")


@dataclass
class EngineConfig:
    """How the loop runs: device, precision, memory layout, logging cadence."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # bf16 autocast of every forward pass (teachers and student) and the loss: auto = bf16 where the hardware
    # computes bf16 natively (CUDA compute capability >= 8.0; CPUs with AMX or avx512_bf16), fp32 elsewhere
    # (engine/precision.py); none = fp32 always (a recipe that must reproduce an fp32 run: README, Scaling out)
    amp: Literal["auto", "none", "bf16"] = "auto"
    # channels_last memory format for student, teachers and inputs: auto = on where bf16 runs natively on CUDA and
    # on CPUs with oneDNN (its convolutions are NHWC); the run's log line `precision: …` says what was chosen
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool = False  # torch.compile the training step
    # torch.compile's mode: reduce-overhead replays the step as CUDA graphs (launch-bound small models on a GPU)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    # CUDA only: capture the whole training step (views, forward, backward, SGD) once as a CUDA graph and replay
    # it every step (engine/graphed_step.py); a batch of another size (an epoch's last) runs uncaptured
    cuda_graphs: bool = False
    log_interval: int = bounded(50, ge=1)  # steps between host syncs of the running metrics
    eval_every: int = bounded(1, ge=1)  # epochs between test evaluations (the last epoch is always evaluated)
    progress: bool = True  # a progress bar per epoch (`--no-progress` turns it off)
    threads: int | None = bounded(None, ge=1)  # torch intra-op threads; None leaves PyTorch's default
    # glibc malloc keeps freed memory mapped instead of re-faulting fresh pages every step (engine/memory.py;
    # AutoAugment pipeline 46k → 59k img/s in docs/benchmarks.md); the resident size stays at its peak
    retain_memory: bool = True
    # A non-finite loss: `stop` (default; checked once per log interval, no per-step sync) names the step and
    # term and stops with the last good checkpoint kept; `skip` drops that step's update and goes on (one host
    # sync per step), logging skipped_steps per epoch and stopping if a whole epoch is non-finite.
    nonfinite: Literal["stop", "skip"] = "stop"
    sync_bn: bool = False  # multi-GPU: SyncBatchNorm in the student (CUDA only)
    # Frozen teachers' logit forward only: bf16 autocast + channels_last (measured in docs/benchmarks.md: the
    # teacher is most of a KD step; top-1 agreement with its fp32 logits is reported there).
    teacher_amp: Literal["none", "bf16"] = "none"
    report: bool = True  # write report.html (summary, curves, config) into the run folder when training ends
    # also write every epoch's metrics as TensorBoard events into the run folder (pip install 'kdlab[tensorboard]')
    tensorboard: bool = False
    # an exponential moving average of the trained weights (e.g. 0.999): evaluated, kept as best, exported
    ema_decay: float | None = bounded(None, gt=0, lt=1)

    def __post_init__(self) -> None:
        if self.cuda_graphs and self.compile:
            raise ConfigError(
                "engine.cuda_graphs and engine.compile both replace the step: choose one "
                "(engine.compile_mode=reduce-overhead is torch.compile's own CUDA graphs)"
            )
        if self.cuda_graphs and self.nonfinite == "skip":
            raise ConfigError(
                "engine.nonfinite=skip reads the loss on the host every step, which a captured step cannot: "
                "use engine.nonfinite=stop with engine.cuda_graphs"
            )


@dataclass
class RunConfig:
    """Everything a run needs. `kdlab train/distill --config FILE key=value …` builds one of these."""

    name: str | None = None  # run folder name under output_dir (default: method-student-from-teacher-data-seed)
    output_dir: str = "runs"  # where run folders go
    seed: int = 0  # seeds models, data order and every view's randomness
    data: DataConfig = field(default_factory=DataConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    teacher: ModelConfig | None = None
    teachers: list[ModelConfig] = field(default_factory=list)  # more teachers (ensembles, multi-teacher ATSC)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "ce"})
    views: ViewsConfig = field(default_factory=ViewsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    # Per-method defaults for this teacher → student pair (on the CIFAR-100 pairs: what each method's release published
    # for it): method name (or NAME/logit_standardize for its logit-standardised variant) → {parameter: value,
    # optim.lr: value, source: where the values come from}. Used when method.name names one, under every key set
    # explicitly (apply_method_defaults).
    method_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:  # rules across sections
        if not isinstance(self.method.get("name"), str):
            raise ConfigError("method.name must be set (e.g. method.name=kd)")
        if self.method.get("strong_target") == "labels" and not self.views.strong:
            raise ConfigError("method.strong_target=labels labels a strong view x', but views.strong is not set")


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, notice: Callable[[str], None] | None = None
) -> RunConfig:
    """RunConfig from an optional YAML file (with its `base:` files) plus `a.b=c` overrides, checked.
    `notice` receives what the loader changed on its own (a switched method's dropped keys)."""
    data = read_config_file(resolve_config_path(path)) if path is not None else {}
    overrides = list(overrides or [])
    apply_method_override(data, overrides, notice or (lambda _: None))
    apply_method_defaults(data, overrides, notice or (lambda _: None))
    apply_overrides(data, overrides)
    cfg: RunConfig = from_dict(RunConfig, data)
    return cfg


def method_defaults_key(method: dict[str, Any]) -> str:
    """The `method_defaults` entry a method section uses: its name, or NAME/logit_standardize when it z-scores
    logits."""
    standardized = method.get("logit_standardize") in (True, "true", "True", 1)
    return f"{method['name']}/logit_standardize" if standardized else str(method["name"])


def apply_method_defaults(data: dict[str, Any], overrides: list[str], notice: Callable[[str], None]) -> None:
    """Fill in the pair's defaults for the method being run (`method_defaults.<key>`, see RunConfig.method_defaults):
    a method key only where neither the file's method section nor the command line sets it, a dotted key
    (`optim.lr`) only where the command line does not set it. Tells `notice` what it set and from where."""
    table = data.get("method_defaults") or {}
    if not isinstance(table, dict) or not table:
        return
    method = dict(data.get("method") or {})
    given = {tuple(k): v for k, v in map(parse_override, overrides)}
    method.update({k[1]: v for k, v in given.items() if len(k) == 2 and k[0] == "method"})
    if not isinstance(method.get("name"), str):
        return
    key = method_defaults_key(method)
    recipe = table.get(key)
    if recipe is None:
        return
    if not isinstance(recipe, dict):
        raise ConfigError(f"method_defaults.{key} must be a mapping of parameter → value")
    applied = []
    for name, value in recipe.items():
        if name == "source":
            continue
        path = name.split(".")
        explicit = name in method if len(path) == 1 else tuple(path) in given
        if explicit:
            continue
        set_path(data, ["method", name] if len(path) == 1 else path, value)
        applied.append(f"{name}={value}")
    if applied:
        source = recipe.get("source", "the config's method_defaults")
        notice(f"method {key}: {', '.join(applied)} from this pair's method_defaults ({source})")


PACKAGED_CONFIGS = Path(__file__).parent / "configs"  # the recipes, shipped inside the package


def resolve_config_path(path: str | Path) -> Path:
    """`path` as given when it exists; else a recipe shipped with kdlab (`configs/cifar100/…` or
    `cifar100/…`), so README's commands run from any folder after a wheel install; else a ConfigError with the
    nearest recipe names."""
    p = Path(path)
    if p.is_file():
        return p
    rel = Path(*p.parts[1:]) if p.parts and p.parts[0] == "configs" else p
    packaged = PACKAGED_CONFIGS / rel
    if not p.is_absolute() and packaged.is_file():
        return packaged
    from kdlab.errors import suggest

    known = [f"configs/{q.relative_to(PACKAGED_CONFIGS)}" for q in PACKAGED_CONFIGS.rglob("*.yaml")]
    hint = suggest(str(p), known)
    raise ConfigError(f"config file {str(p)!r} not found{hint}; `kdlab config --list` lists the recipes")


def teacher_configs(cfg: RunConfig) -> list[ModelConfig]:
    """All teachers of a run: `teacher` (if set) followed by `teachers`."""
    return ([cfg.teacher] if cfg.teacher is not None else []) + list(cfg.teachers)


def save_config(cfg: RunConfig, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from kdlab.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def portable_paths(cfg: RunConfig) -> RunConfig:
    """The config with every absolute file path (output_dir, data.dataset's path, data.cache_dir, model
    checkpoints) rewritten relative to the working directory, so run folders, checkpoints and exports carry
    no absolute paths of this machine. Relative paths are resolved from the working directory, as on the
    command line, so a run is resumed from the folder it was started in."""

    def rel(p: str | None) -> str | None:
        return os.path.relpath(p) if p and os.path.isabs(p) else p

    def rel_spec(spec: str) -> str:
        kind, sep, path = spec.partition(":")
        return f"{kind}:{rel(path)}" if sep and os.path.isabs(path) else spec

    def model(m: ModelConfig | None) -> ModelConfig | None:
        return None if m is None else dataclasses.replace(m, checkpoint=rel(m.checkpoint))

    data = dataclasses.replace(cfg.data, dataset=rel_spec(cfg.data.dataset), cache_dir=rel(cfg.data.cache_dir))
    student = model(cfg.student)
    assert student is not None
    return dataclasses.replace(
        cfg,
        output_dir=rel(cfg.output_dir) or cfg.output_dir,
        data=data,
        student=student,
        teacher=model(cfg.teacher),
        teachers=[t for t in (model(t) for t in cfg.teachers) if t is not None],
    )
