"""Assembling a Trainer from a config: the views, loaders, random streams, optimiser and schedule it runs,
and the device-level preparation of the method (placement, memory format, teacher precision, SyncBatchNorm)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kdlab.config import RunConfig
from kdlab.data import ImageDataset, make_loader
from kdlab.engine import LRSchedule, Trainer, TrainingParts
from kdlab.engine.distributed import Distributed
from kdlab.engine.optimizers import build_optimizer
from kdlab.engine.precision import resolve_precision
from kdlab.errors import ConfigError
from kdlab.methods.base import Distiller
from kdlab.views import ViewPipeline, build_pipeline


def data_info(data: ImageDataset) -> dict[str, Any]:
    """The dataset facts a checkpoint records: name, classes, image shape (C, H, W), mean/std in [0, 1] units."""
    return {
        "name": data.name,
        "num_classes": data.num_classes,
        "image_shape": list(data.image_shape),
        "mean": list(data.mean),
        "std": list(data.std),
        "classes": data.classes,
    }


def views_for(cfg: RunConfig, data: ImageDataset) -> ViewPipeline:
    """The configured standard view, optional strong view and normalisation for `data`."""
    v = cfg.views
    params = {"strength": v.strength, "per_batch_compat": v.per_batch_compat, **v.params}
    return build_pipeline(
        v.standard, v.strong, params, data.image_shape[1], data.mean, data.std, cfg.data.crop_padding, cfg.data.flip,
        v.preset_family,
    )  # fmt: skip


def prepare_method(cfg: RunConfig, method: Distiller, device: torch.device) -> Distiller:
    """The method on `device`, in channels_last when asked or chosen (engine/precision.py), frozen teachers in
    bf16 when asked, the student's BatchNorm synchronised across processes when asked (CUDA only)."""
    eng = cfg.engine
    method.to(device)
    if resolve_precision(eng.amp, eng.channels_last, device).channels_last:
        method.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if eng.teacher_amp == "bf16":
        for i in range(len(method.teachers)):
            method.teacher(i).set_inference_precision(torch.bfloat16)
    if eng.sync_bn:
        if device.type != "cuda":
            raise ConfigError("engine.sync_bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only)")
        method.student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method.student)
    return method


def build_parts(
    cfg: RunConfig,
    method: Distiller,
    data: ImageDataset,
    device: torch.device,
    dist: Distributed,
    log: Callable[[str], None] = print,
) -> TrainingParts:
    """Views (a scoring view gets the method's scorer), loaders, random streams, the optimiser and its schedule."""
    views = views_for(cfg, data).to(device)
    views.check(cfg.data.batch_size, len(method.teachers))
    if method.needs_strong_view and views.strong is None:
        raise ConfigError(
            f"method {cfg.method['name']!r} trains on a weak and a strong view: set views.strong "
            "(its release: views.strong=randaugment)"
        )
    if views.needs_scores:
        views.attach_scorer(method.score_candidates)
    generator = torch.Generator(device=device)  # the sample order: the same in every process
    generator.manual_seed(cfg.seed)
    view_generator = generator  # augmentation draws: one stream per process
    if dist.active:
        view_generator = torch.Generator(device=device)
        view_generator.manual_seed(cfg.seed + 1_000_003 * (dist.rank + 1))
    train_loader = make_loader(
        data, "train", cfg.data.batch_size, device, True, cfg.data.drop_last, generator,
        shard=(dist.rank, dist.world), workers=cfg.data.workers, decoder=cfg.data.decoder,
    )  # fmt: skip
    test_loader = make_loader(
        data, "test", cfg.data.eval_batch_size, device, False, workers=cfg.data.workers, decoder=cfg.data.decoder
    )
    if method.needs_train_labels:
        method.attach_train_labels(train_loader.labels, generator)
    lr = cfg.optim.lr
    if cfg.optim.lr_ref_batch:
        lr = cfg.optim.lr * cfg.data.batch_size / cfg.optim.lr_ref_batch
    average = (lambda opt, *_: dist.average_gradients(opt)) if dist.active else None
    optimizer = build_optimizer(cfg, method, lr, device, average)
    sched = cfg.schedule
    if sched.kind == "multistep" and sched.milestones and min(sched.milestones) >= sched.epochs:
        log(
            f"warning: schedule.milestones {list(sched.milestones)} are all ≥ schedule.epochs={sched.epochs}: "
            "the learning rate never decays (scale them, use schedule.epoch_factor, or schedule.kind=cosine)"
        )
    return TrainingParts(views, train_loader, test_loader, optimizer, LRSchedule(sched, lr), generator, view_generator)


def build_trainer(
    cfg: RunConfig,
    method: Distiller,
    data: ImageDataset,
    run_dir: Path,
    device: torch.device,
    log: Callable[[str], None] = print,
    dist: Distributed | None = None,
) -> Trainer:
    """A Trainer for `method` on `data` writing into `run_dir`, everything built from `cfg`."""
    dist = dist or Distributed()
    method = prepare_method(cfg, method, device)
    parts = build_parts(cfg, method, data, device, dist, log)
    return Trainer(cfg, method, parts, data_info(data), run_dir, device, log, dist)
