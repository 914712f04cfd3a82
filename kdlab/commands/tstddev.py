"""`kdlab tstddev`: T. stddev of one or more strong views for a trained teacher, on any dataset.

Only the teacher runs: with the student frozen at lr 0 (the paper's protocol) the student cannot change
what the teacher sees, so kdlab skips it. Each step feeds the teacher x then x'; their softmax rows
(T = 1) form the stream that `kdlab.metrics.t_stddev` groups by 640."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from kdlab.assembly import views_for
from kdlab.config import RunConfig
from kdlab.data import DeviceLoader, load_dataset
from kdlab.engine.trainer import autocast_context
from kdlab.errors import ConfigError
from kdlab.experiment import build_teacher, resolve_device
from kdlab.io import atomic_write_json
from kdlab.metrics import t_stddev


@torch.no_grad()
def measure_tstddev(
    cfg: RunConfig, views: list[str], epochs: int = 1, group_size: int = 640, log: Any = print
) -> dict[str, float]:
    """{view: T. stddev} for the configured teacher over `epochs` passes of the training split."""
    if cfg.teacher is None:
        raise ConfigError("tstddev needs a teacher: teacher.name=… teacher.checkpoint=…")
    device = resolve_device(cfg.engine.device)
    data = load_dataset(cfg.data.dataset, cfg.data.cache_dir, cfg.data.train_per_class, cfg.data.test_per_class)
    teacher = build_teacher(cfg.teacher, data, "teacher").to(device)
    results = {}
    for name in views:
        view_cfg = dataclasses.replace(cfg.views, strong=None if name == "none" else name)
        pipeline = views_for(dataclasses.replace(cfg, views=view_cfg), data).to(device).train()
        if pipeline.strong is not None and pipeline.strong.needs_scores:
            raise ConfigError(
                f"{name} scores candidates with the student being trained; measure "
                f"`{pipeline.strong.unscored_stand_in}` instead"
            )
        g = torch.Generator(device=device).manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        loader = DeviceLoader(data.train, cfg.data.batch_size, device, True, cfg.data.drop_last, g)
        rows = []
        for _ in range(epochs):
            for b in loader:
                batch = pipeline(b.images, b.labels, b.index, g)
                xs = [batch.x] if batch.x_strong is None else [batch.x, batch.x_strong]
                with autocast_context(device, cfg.engine.amp):
                    logits = teacher(torch.cat(xs)).float()
                rows.append(logits.softmax(1).cpu())
        results[name] = t_stddev(torch.cat(rows), group_size)
        log(f"{name}: T. stddev {results[name]:.6f}")
    return results


def run_tstddev(cfg: RunConfig, views: list[str], epochs: int, log: Any = print) -> tuple[Path, dict[str, float]]:
    """Measure, then write tstddev.json into output_dir/tstddev-<teacher>-…; returns (folder, results)."""
    results = measure_tstddev(cfg, views, epochs, log=log)
    assert cfg.teacher is not None
    out = Path(cfg.output_dir) / (cfg.name or f"tstddev-{cfg.teacher.name}-s{cfg.seed}")
    out.mkdir(parents=True, exist_ok=True)
    ranking = sorted(results.items(), key=lambda kv: kv[1])
    atomic_write_json(
        out / "tstddev.json",
        {
            "teacher": cfg.teacher.name,
            "dataset": cfg.data.dataset.split(":")[0],
            "epochs": epochs,
            "group_size": 640,
            "views": dict(ranking),
            "views_config": dataclasses.asdict(dataclasses.replace(cfg.views, strong=None)),
        },
    )
    return out, results
