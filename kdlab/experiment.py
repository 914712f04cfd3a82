"""A run: config → (data, models, method, trainer) → a run folder with everything to resume and report.

Run folder layout:
    config.yaml            the resolved config
    metrics.jsonl          one line per epoch
    summary.json           last- and best-epoch test accuracy, teacher accuracy, timing
    checkpoints/last.safetensors   full training state (every epoch)
    checkpoints/best.safetensors   weights at the best test accuracy
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdlab.assembly import build_trainer
from kdlab.config import (
    ModelConfig,
    RunConfig,
    load_config,
    portable_paths,
    save_config,
    teacher_configs,
)
from kdlab.data import ImageDataset, load_dataset
from kdlab.engine.distributed import check_distributed_config, init_distributed
from kdlab.engine.memory import retain_freed_memory
from kdlab.errors import CheckpointError, ConfigError, KdlabError
from kdlab.io import atomic_write_json
from kdlab.methods import Distiller, Teacher, build_method
from kdlab.methods.base import resolve_method_params
from kdlab.models.build import BuiltModel, build_configured_model, resolve_model_config
from kdlab.typed_config import from_dict


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda if available else cpu; an unavailable cuda is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"engine.device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"engine.device={name} but no CUDA device is available; use engine.device=cpu")
    return dev


def share_device_memory(device: torch.device) -> None:
    """With KDLAB_GPU_MEMORY_FRACTION set (by `kdlab sweep --jobs N`: 0.95 / N), cap this process's share of the
    CUDA device's memory, so N runs share one GPU; nothing elsewhere."""
    fraction = os.environ.get("KDLAB_GPU_MEMORY_FRACTION")
    if fraction and device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(float(fraction), device)


Stats = tuple[Sequence[float], Sequence[float]]  # per-channel (mean, std) in [0, 1] units


def build_teacher(mcfg: ModelConfig, data: ImageDataset, label: str, normalized_with: Stats | None = None) -> Teacher:
    """A frozen teacher with its weights loaded (its checkpoint, else pretrained weights with their own head; a
    teacher with neither is an error), for inputs normalised with `normalized_with` = (mean, std) (default:
    `data`'s statistics)."""
    if not mcfg.checkpoint and not mcfg.pretrained:
        raise ConfigError(
            f"{label}.checkpoint is not set: train a teacher first (kdlab train …) and pass "
            f"{label}.checkpoint=RUN_DIR or a .pth/.safetensors file ({label}.pretrained for a timm/torchvision model)"
        )
    mean, std = normalized_with or (data.mean, data.std)
    built = build_configured_model(mcfg, data.num_classes, data.image_shape, mean, std, label)
    if built.fresh_head:
        raise ConfigError(
            f"{label}.pretrained: the weights' head is for another number of classes than the data's "
            f"{data.num_classes}, so {label} would teach from a random head; fine-tune it first (kdlab train with "
            f"student.name={mcfg.name} student.pretrained=…) and pass {label}.checkpoint=RUN_DIR"
        )
    return Teacher(built.model, built.taps, label)


def build_student(mcfg: ModelConfig, data: ImageDataset) -> BuiltModel:
    """The student with its pretrained weights and checkpoint loaded, if any (a pretrained head for another number
    of classes starts fresh: fine-tuning; BuiltModel.fresh_head names it)."""
    return build_configured_model(mcfg, data.num_classes, data.image_shape, data.mean, data.std, "student")


@dataclass
class Run:
    cfg: RunConfig
    data: ImageDataset
    method: Distiller
    device: torch.device
    notes: list[str] = dataclasses.field(default_factory=list)  # what building did that a user should hear


def resolve_models(cfg: RunConfig) -> RunConfig:
    """`cfg` with each pretrained model's preprocessing written out (models/build.resolve_model_config)."""
    return dataclasses.replace(
        cfg,
        student=resolve_model_config(cfg.student, "student"),
        teacher=resolve_model_config(cfg.teacher, "teacher") if cfg.teacher is not None else None,
        teachers=[resolve_model_config(t, f"teachers[{i}]") for i, t in enumerate(cfg.teachers)],
    )


def build_run(cfg: RunConfig) -> Run:
    """Load data and build student, teacher(s) and method from a validated config (seeded); `Run.cfg` has the
    pretrained models' preprocessing written out (resolve_models)."""
    resolve_method_params(cfg.method)  # unknown method keys fail before any data is read
    cfg = resolve_models(cfg)
    if cfg.engine.threads:
        torch.set_num_threads(cfg.engine.threads)
    if cfg.engine.retain_memory:
        retain_freed_memory()
    device = resolve_device(cfg.engine.device)
    share_device_memory(device)
    d = cfg.data
    data = load_dataset(
        d.dataset, d.cache_dir, d.train_per_class, d.test_per_class, d.stream, d.memory_budget_gb, d.image_size
    )
    torch.manual_seed(cfg.seed)
    built = build_student(cfg.student, data)
    student, student_taps = built.model, built.taps
    notes = []
    if built.fresh_head:
        notes.append(
            f"student: pretrained weights loaded; its head ({', '.join(built.fresh_head)}) starts fresh for the "
            f"data's {data.num_classes} classes"
        )
    teachers = [
        build_teacher(t, data, "teacher" if t is cfg.teacher else f"teachers[{i}]")
        for i, t in enumerate(teacher_configs(cfg))
    ]
    method = build_method(cfg.method, student, teachers, student_taps, data.image_shape)
    return Run(cfg, data, method, device, notes)


def default_run_name(cfg: RunConfig) -> str:
    parts = [str(cfg.method["name"]), _name_part(cfg.student.label)]
    if teacher_configs(cfg):
        parts.append("from-" + "+".join(_name_part(t.label) for t in teacher_configs(cfg)))
    dataset = re.sub(r"[^A-Za-z0-9]+", "-", Path(cfg.data.dataset.split(":")[-1]).name).strip("-")
    parts += [dataset.split("-tar")[0] or "data", f"s{cfg.seed}"]
    return "-".join(parts)


def _name_part(label: str) -> str:
    """A model label as a folder-name part: `my_models.py:build` → `my_models-build`."""
    return re.sub(r"[^A-Za-z0-9_]+", "-", label.replace(".py:", ":")).strip("-")


def model_labels(cfg: RunConfig) -> dict[str, Any]:
    """The models a run actually uses, by label (ModelConfig.label)."""
    return {"student": cfg.student.label, "teachers": [t.label for t in teacher_configs(cfg)]}


def new_run_dir(cfg: RunConfig) -> Path:
    """output_dir/name, with -2, -3 … appended when the name is taken."""
    base = Path(cfg.output_dir) / (cfg.name or default_run_name(cfg))
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def train(
    cfg: RunConfig,
    resume_dir: str | Path | None = None,
    stop_after_epoch: int | None = None,
    log: Any = print,
    progress: Any = None,
    extend_to: int | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Run (or resume) one training run; returns (run folder, summary). `extend_to`: on resume, train to this
    many epochs instead of the saved schedule.epochs (a finished run goes on; config.yaml records it)."""
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        if not (run_dir / "config.yaml").is_file():
            raise KdlabError(f"cannot resume: {run_dir} is not a run folder (no config.yaml)")
        cfg = load_config(run_dir / "config.yaml")
        if extend_to is not None:
            done = _epochs_done(run_dir)
            if extend_to < max(done, 1):
                raise ConfigError(f"schedule.epochs={extend_to} on --resume: the run has already trained {done} epochs")
            cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, epochs=extend_to))
    dist = init_distributed(cfg.engine.device)
    if resume_dir is not None and extend_to is not None and dist.is_main:
        save_config(cfg, run_dir / "config.yaml")
    check_distributed_config(cfg, dist)
    if not dist.is_main:
        log, progress = (lambda _: None), None  # rank 0 alone reports
    run = build_run(cfg)
    cfg = run.cfg  # with the pretrained models' preprocessing written out: config.yaml and checkpoints record it
    for note in run.notes:
        log(note)
    if dist.active:
        if run.device.type == "cuda":
            run.device = torch.device("cuda", dist.local_rank)
        torch.manual_seed(cfg.seed * 1_000_003 + dist.rank)  # the same models; independent random streams
        log(f"{dist.world} processes: global batch {cfg.data.batch_size}, {cfg.data.batch_size // dist.world} each")
    if resume_dir is None:
        if dist.is_main:
            run_dir = new_run_dir(cfg)
            save_config(portable_paths(_with_resolved_method(cfg, run.method)), run_dir / "config.yaml")
            atomic_write_json(run_dir / "provenance.json", provenance())
        run_dir = Path(dist.broadcast_object(str(run_dir) if dist.is_main else None))
    try:
        trainer = build_trainer(cfg, run.method, run.data, run_dir, run.device, log=log, dist=dist)
    except BaseException:
        if resume_dir is None and dist.is_main:
            _remove_unstarted(run_dir)  # a start that failed leaves no folder behind (the next run is not "-2")
        raise
    log(f"run folder: {run_dir}")
    try:
        summary = trainer.fit(resume=resume_dir is not None, stop_after_epoch=stop_after_epoch, progress=progress)
    except KeyboardInterrupt as e:
        e.run_dir = run_dir  # type: ignore[attr-defined]  # for the "resume with" message
        raise
    if summary and dist.is_main:
        made = run_dir / "provenance.json"
        summary = {**model_labels(cfg), **(json.loads(made.read_text()) if made.is_file() else {}), **summary}
        atomic_write_json(run_dir / "summary.json", summary)
    if summary and cfg.engine.report:
        from kdlab.report.html import write_report

        log(f"report: {write_report(run_dir)}")
    return run_dir, summary


def provenance() -> dict[str, Any]:
    """What made a run: the date (UTC, ISO 8601), kdlab's version, its git commit when kdlab runs from a
    checkout (`+modified` with uncommitted changes), Python and PyTorch versions."""
    import datetime
    import platform
    import subprocess

    from kdlab.version import __version__

    commit = None
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10)  # fmt: skip
        if head.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)  # fmt: skip
            commit = head.stdout.strip() + ("+modified" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kdlab_version": __version__,
        "git_commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def _epochs_done(run_dir: Path) -> int:
    """Epochs recorded in a run folder's metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    return len([ln for ln in path.read_text().splitlines() if ln.strip()]) if path.is_file() else 0


def _remove_unstarted(run_dir: Path) -> None:
    """Remove a run folder that holds nothing but its config.yaml and provenance.json (it never trained)."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {"config.yaml", "provenance.json"}:
        shutil.rmtree(run_dir)


def dry_run(cfg: RunConfig) -> dict[str, Any]:
    """Check a config end to end without a run folder: load the data, build student, teachers, method and
    views, and take one training step on one batch. Returns the plan (sizes, parameters, first loss terms)."""
    import tempfile

    run = build_run(cfg)
    cfg = run.cfg  # with the pretrained models' preprocessing written out
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(cfg, run.method, run.data, Path(tmp), run.device, log=lambda _: None)
        first_terms = trainer.step_terms()
    n_params = sum(p.numel() for p in run.method.student.parameters())
    return {
        "dataset": cfg.data.dataset,
        "notes": run.notes,
        "classes": run.data.num_classes,
        "image_shape": list(run.data.image_shape),
        "train_images": len(run.data.train),
        "test_images": len(run.data.test),
        **model_labels(cfg),
        "student_parameters": n_params,
        "method": {"name": cfg.method["name"], **run.method.params_dict()},
        "views": {"standard": cfg.views.standard, "strong": cfg.views.strong},
        "steps_per_epoch": len(trainer.train_loader),
        "epochs": trainer.epochs,
        "first_step_loss_terms": first_terms,
    }


def _with_resolved_method(cfg: RunConfig, method: Distiller) -> RunConfig:
    return dataclasses.replace(cfg, method={"name": cfg.method["name"], **method.params_dict()})


def config_from_checkpoint_meta(meta: dict[str, Any]) -> RunConfig:
    return from_dict(RunConfig, meta["config"])


def load_trained(
    path: str | Path, which: str = "best", inference_only: bool = False
) -> tuple[Distiller, RunConfig, dict[str, Any]]:
    """Rebuild a trained method (student + extra modules) from a run folder or checkpoint file.

    A teacher's architecture is rebuilt (without its weights) for methods that take one, so extra modules
    sized from it (regressors, projectors, a shared classifier) load from the checkpoint. With
    `inference_only`, a method that predicts with the student's own head comes back as the student alone (a
    `ce` method): evaluating or exporting it needs neither the teachers' code nor their files.
    Returns (method in eval mode on CPU, config, checkpoint meta)."""
    from kdlab.engine.state import load_training_state

    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / f"{which}.safetensors"
        if not p.is_file():
            p = p.with_name("last.safetensors")
    elif _is_torch_file(p):
        raise CheckpointError(
            f"{p} is a PyTorch weights file, not a kdlab run folder or checkpoint: say which model it is for, "
            "e.g. `kdlab eval FILE --model resnet56 --data SPEC` (or --factory file.py:function)"
        )
    model_state, _, meta = load_training_state(p)
    cfg = config_from_checkpoint_meta(meta)
    info = meta["data"]
    shape = tuple(info["image_shape"])
    torch.manual_seed(0)
    n = info["num_classes"]
    mean, std = info["mean"], info["std"]
    student_built = build_configured_model(cfg.student, n, shape, mean, std, "student", weights=False)
    student, s_taps = student_built.model, student_built.taps
    teachers = []
    student_only = inference_only and _method_class(cfg).predicts_with_student_head
    if student_only:
        method = build_method({"name": "ce"}, student, [], s_taps, (shape[0], shape[1], shape[2]))
        method.load_checkpoint_state(model_state)
        return method.eval(), cfg, meta
    if _needs_teacher(cfg):
        # The architectures only: what inference needs of a teacher (e.g. a shared classifier) is in the
        # checkpoint, so the teachers' own weight files need not exist on this machine.
        for i, t in enumerate(teacher_configs(cfg)):
            t_built = build_configured_model(t, n, shape, mean, std, f"teachers[{i}]", weights=False)
            teachers.append(Teacher(t_built.model, t_built.taps))
    method = build_method({**cfg.method}, student, teachers, s_taps, (shape[0], shape[1], shape[2]))
    method.load_checkpoint_state(model_state)
    method.eval()
    return method, cfg, meta


def _is_torch_file(p: Path) -> bool:
    """A torch.save file (a zip archive, or a legacy pickle starting with the protocol byte)."""
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        head = f.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def _method_class(cfg: RunConfig) -> type[Distiller]:
    from kdlab.methods.base import METHODS

    return METHODS.get(str(cfg.method["name"])).cls


def _needs_teacher(cfg: RunConfig) -> bool:
    return _method_class(cfg).needs_teacher


def check_same_data(trained: dict[str, Any], data: ImageDataset, spec: str) -> None:
    """Fail (KdlabError) unless `data` has the trained run's image shape (C, H, W), class count and class
    names, saying what differs: evaluating a 32×32 RGB model on 8×8 grey digits gives a number, not a result."""
    problems = []
    if tuple(trained["image_shape"]) != tuple(data.image_shape):
        problems.append(f"images {tuple(data.image_shape)} (C, H, W), not {tuple(trained['image_shape'])}")
    if trained["num_classes"] != data.num_classes:
        problems.append(f"{data.num_classes} classes, not {trained['num_classes']}")
    elif trained.get("classes") and list(trained["classes"]) != list(data.classes):
        differ = [f"{a}≠{b}" for a, b in zip(trained["classes"], data.classes) if a != b][:3]
        problems.append(f"other class names ({', '.join(differ)})")
    if problems:
        raise KdlabError(f"{spec} is not the data the model was trained on: it has {'; '.join(problems)}")


def evaluate_path(path: str | Path, dataset: str | None = None, which: str = "best") -> dict[str, Any]:
    """Test accuracy (top-1, top-5), loss and ECE of a trained run folder / checkpoint on its own or another
    dataset."""
    method, cfg, meta = load_trained(path, which, inference_only=True)
    spec, d = dataset or cfg.data.dataset, cfg.data
    data = load_dataset(
        spec, d.cache_dir, None, d.test_per_class if dataset is None else None, d.stream, d.memory_budget_gb,
        d.image_size,
    )  # fmt: skip
    check_same_data(meta["data"], data, spec)
    device = resolve_device(cfg.engine.device)
    method.to(device)
    numbers = evaluate_on_test(method.predict, data, (meta["data"]["mean"], meta["data"]["std"]), device,
                               cfg.data.eval_batch_size, cfg.engine.amp)  # fmt: skip
    return {"checkpoint": os.path.basename(str(path)), "epoch": meta["epoch"], "dataset": spec, **numbers}


def evaluate_model(mcfg: ModelConfig, dataset: str, device: str = "auto", batch_size: int = 512) -> dict[str, Any]:
    """Test accuracy (top-1, top-5), loss and ECE of any model with weights — zoo name or factory, a checkpoint
    as it exists (models/loading.py), its own input normalisation — on `dataset`'s test split: check a teacher
    before distilling from it."""
    if not mcfg.checkpoint and not mcfg.pretrained:
        raise ConfigError("evaluating a model needs its weights: give the checkpoint file (or --pretrained)")
    data = load_dataset(dataset)
    dev = resolve_device(device)
    mcfg = resolve_model_config(mcfg, "model")
    teacher = build_teacher(mcfg, data, "model").to(dev)
    numbers = evaluate_on_test(teacher.model.eval(), data, (data.mean, data.std), dev, batch_size, "none")
    weights = mcfg.checkpoint or (mcfg.pretrained if isinstance(mcfg.pretrained, str) else "pretrained (cache)")
    seen = {k: getattr(mcfg, k) for k in ("normalize", "input_size", "input_resize", "input_crop_pct")}
    return {"checkpoint": os.path.basename(str(weights)), "model": mcfg.label, "dataset": dataset, **seen, **numbers}


@torch.no_grad()
def evaluate_on_test(
    predict: Any, data: ImageDataset, stats: Stats, device: torch.device, batch_size: int, amp: str
) -> dict[str, Any]:
    """predict: normalised images (B, C, H, W) → logits (B, K), over data's test split normalised with stats
    = (mean, std): samples, test_acc and test_top5 (%), test_loss (mean CE, nats), test_ece_15 (%)."""
    from kdlab.data import make_loader
    from kdlab.engine.trainer import autocast_context
    from kdlab.metrics import expected_calibration_error, top_k_accuracy
    from kdlab.views import Normalize, to_unit

    normalize = Normalize(*stats).to(device)
    loader = make_loader(data, "test", batch_size, device, False)  # in memory, or streamed (test crops)
    logits, labels = [], []
    with autocast_context(device, amp):
        for batch in loader:
            logits.append(predict(normalize(to_unit(batch.images))).float().cpu())
            labels.append(batch.labels.cpu())
    loader.close()
    lg, y = torch.cat(logits), torch.cat(labels)
    return {
        "samples": len(y),
        "test_acc": top_k_accuracy(lg, y),
        "test_top5": top_k_accuracy(lg, y, 5),
        "test_loss": float(torch.nn.functional.cross_entropy(lg.double(), y)),
        "test_ece_15": expected_calibration_error(lg, y, 15),
    }
