"""Typed run configuration: dataclasses loaded from YAML plus `a.b=c` command-line overrides.

Unknown keys are an error naming the key and the closest valid one; values are coerced to the declared type
or rejected with the expected type. The method section is open (`method.name` plus that method's own
parameters) and is validated by the method registry when the run is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kdlab.errors import ConfigError, suggest


@dataclass
class DataConfig:
    """Dataset and loader. `dataset` is a spec string: `digits`, `cifar100:PATH`, `imagefolder:PATH`, …"""

    dataset: str = "digits"
    cache_dir: str | None = None  # where decoded .npy caches go; default $KDLAB_CACHE or ~/.cache/kdlab
    train_per_class: int | None = None  # keep the first k training images of each class (small CPU runs)
    test_per_class: int | None = None
    batch_size: int = 64
    eval_batch_size: int = 500
    crop_padding: int = 4  # standard view: random crop with this zero padding; 0 disables the crop
    flip: bool = True  # standard view: random horizontal flip
    drop_last: bool = False
    # Streaming from disk for image folders too large for memory (ImageNet): `auto` streams when the decoded
    # images would exceed memory_budget_gb; `on` always (a folder, not an archive); `off` never.
    stream: Literal["auto", "on", "off"] = "auto"
    memory_budget_gb: float = 16.0
    image_size: int | None = None  # streamed images are brought to this size (default: the first image's)
    workers: int | None = None  # decoding processes when streaming (default: cores − 1, at most 8)


@dataclass
class ViewsConfig:
    """Augmentation views. `standard` makes x (crop_flip uses data.crop_padding / data.flip); `strong` names the
    view x' applied on top of x (`kdlab views` lists them), with `strength` = probability per sample and the
    view's own parameters in `params`."""

    standard: Literal["crop_flip", "weak", "strong", "none"] = "crop_flip"
    strong: str | None = None
    strength: float = 1.0
    per_batch_compat: bool = False  # released-code behaviour: one transform per batch
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """A model from the zoo (`name`) or from a user function (`factory: path/to/file.py:build`)."""

    name: str = "resnet8"
    factory: str | None = None
    checkpoint: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    taps: dict[str, str] = field(default_factory=dict)  # role → module path, e.g. {feature: layer4}


@dataclass
class OptimConfig:
    """SGD. The CRD CIFAR-100 protocol: lr 0.05, momentum 0.9, weight decay 5e-4."""

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    # If set, `lr` is the rate for a global batch of lr_ref_batch images and is scaled linearly to
    # data.batch_size (the global batch, whatever the number of processes).
    lr_ref_batch: int | None = None


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, in epochs. `epoch_factor` k scales epochs, milestones and warm-up
    ("longer training": k=4 turns 240 epochs with decay at 150/180/210 into 960 with 600/720/840)."""

    epochs: int = 240
    kind: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    epoch_factor: float = 1.0


@dataclass
class EngineConfig:
    """How the loop runs: device, precision, memory layout, logging cadence."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["none", "bf16"] = "none"  # autocast dtype for forward passes
    channels_last: bool = False
    compile: bool = False
    log_interval: int = 50  # steps between host syncs of the running metrics
    eval_every: int = 1  # epochs between test evaluations (the last epoch is always evaluated)
    progress: bool = True
    threads: int | None = None  # torch intra-op threads; None leaves PyTorch's default
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


@dataclass
class RunConfig:
    """Everything a run needs. `kdlab train/distill --config FILE key=value …` builds one of these."""

    name: str | None = None
    output_dir: str = "runs"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    teacher: ModelConfig | None = None
    teachers: list[ModelConfig] = field(default_factory=list)  # more teachers (ensembles, multi-teacher ATSC)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "ce"})
    views: ViewsConfig = field(default_factory=ViewsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)


# ----------------------------------------------------------------------------------------------- building


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert a YAML value to the declared type `tp`, or raise ConfigError naming `path`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{path}: bad value {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no as booleans
            spelled = [w for w in (("on", "true", "yes") if value else ("off", "false", "no")) if w in allowed]
            value = spelled[0] if spelled else value
        if value not in allowed:
            raise ConfigError(
                f"{path} must be one of {', '.join(map(str, allowed))}; got {value!r}"
                f"{suggest(str(value), map(str, allowed))}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping of keys, got {value!r}")
        return from_dict(tp, value, path)  # type: ignore[arg-type]
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return {str(k): _coerce(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{path} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"{path} must be an integer, got {value!r}") from None
        if not math.isfinite(as_float) or as_float != int(as_float):  # int() of inf / nan raises
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path} must be a number, got {value!r}") from None
        if not math.isfinite(number):  # no setting means anything at inf / nan; it would only poison a run later
            raise ConfigError(f"{path} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, dict | list) or value is None:
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{path}: unsupported type {_type_name(tp)}")


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys fail with the closest valid key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=2, cutoff=0.6)
            hint = f" (did you mean: {', '.join(f'{path}.{c}' if path else c for c in close)}?)" if close else ""
            raise ConfigError(f"unknown config key {full!r}{hint}; valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def to_dict(cfg: Any) -> Any:
    """A dataclass config as plain nested dicts/lists (for YAML/JSON)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=c` → (['a', 'b'], c) with c parsed as YAML (so numbers, lists and booleans work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` overrides to a nested dict in place (missing intermediate sections are created)."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """RunConfig from an optional YAML file plus overrides, validated."""
    data = read_yaml(path) if path is not None else {}
    apply_overrides(data, list(overrides or []))
    cfg: RunConfig = from_dict(RunConfig, data)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Range checks that types alone cannot express; raises ConfigError naming the key."""
    checks = [
        (cfg.optim.lr > 0, "optim.lr must be > 0"),
        (cfg.optim.lr_ref_batch is None or cfg.optim.lr_ref_batch >= 1, "optim.lr_ref_batch must be >= 1"),
        (cfg.optim.momentum >= 0, "optim.momentum must be >= 0"),
        (cfg.optim.weight_decay >= 0, "optim.weight_decay must be >= 0"),
        (cfg.schedule.epochs >= 1, "schedule.epochs must be >= 1"),
        (cfg.schedule.epoch_factor > 0, "schedule.epoch_factor must be > 0"),
        (0 < cfg.schedule.gamma <= 1, "schedule.gamma must be in (0, 1]"),
        (cfg.schedule.warmup_epochs >= 0, "schedule.warmup_epochs must be >= 0"),
        (cfg.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (cfg.data.eval_batch_size >= 1, "data.eval_batch_size must be >= 1"),
        (cfg.data.crop_padding >= 0, "data.crop_padding must be >= 0"),
        (cfg.engine.log_interval >= 1, "engine.log_interval must be >= 1"),
        (cfg.engine.eval_every >= 1, "engine.eval_every must be >= 1"),
        (
            cfg.data.train_per_class is None or cfg.data.train_per_class >= 1,
            "data.train_per_class must be >= 1",
        ),
        (cfg.data.test_per_class is None or cfg.data.test_per_class >= 1, "data.test_per_class must be >= 1"),
        (isinstance(cfg.method.get("name"), str), "method.name must be set (e.g. method.name=kd)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if sorted(cfg.schedule.milestones) != list(cfg.schedule.milestones):
        raise ConfigError("schedule.milestones must be increasing")
    if cfg.method.get("strong_target") == "labels" and not cfg.views.strong:
        raise ConfigError("method.strong_target=labels labels a strong view x', but views.strong is not set")


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
