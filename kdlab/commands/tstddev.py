"""`kdlab tstddev`: T. stddev of one or more strong views for a trained teacher, on any dataset.

Only the teacher runs: with the student frozen at lr 0 (the paper's protocol) the student cannot change
what the teacher sees, so kdlab skips it — except where a view picks its x' by a student's score
(cutmix_pick with `score=kld` or `student_entropy`), where a trained student is loaded (`--student`), as the
release loads one. Each step feeds the teacher x then x'; their softmax rows (T = 1) form the chunks that
`kdlab.metrics.t_stddev_chunks` groups five steps at a time, as the code released with Wang et al.,
"Knowledge Distillation Thrives on Data Augmentation" (arXiv 2012.02909) does; 10 epochs by default, as its
scripts run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kdlab.assembly import views_for
from kdlab.commands.analysis import STREAMED_SAMPLES
from kdlab.config import RunConfig
from kdlab.data import DeviceLoader, load_dataset
from kdlab.data.streaming import StreamingDataset
from kdlab.engine.trainer import autocast_context
from kdlab.errors import ConfigError
from kdlab.experiment import build_teacher, load_trained, resolve_device
from kdlab.io import atomic_write_json
from kdlab.methods.base import Teacher, candidate_scores
from kdlab.metrics import t_stddev_chunks
from kdlab.typed_config import parse_override
from kdlab.views import Scorer, ScoreRequest


def parse_view_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`NAME[:KEY=VALUE[:KEY=VALUE…]]` → (view name, its views.params), values read as YAML; e.g.
    `cutmix_pick:score=teacher_entropy` (`none`: no strong view)."""
    name, *pairs = spec.split(":")
    params = {}
    for pair in pairs:
        keys, value = parse_override(pair)
        if len(keys) != 1:
            raise ConfigError(f"view spec {spec!r}: give parameters as {name}:KEY=VALUE")
        params[keys[0]] = value
    return name, params


def _scorer(teacher: Teacher, student: Callable[[torch.Tensor], torch.Tensor] | None, spec: str) -> Scorer:
    """A view's scorer from the measured teacher and, where the score needs one, a trained student."""

    def score(x: torch.Tensor, request: ScoreRequest) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        t = [teacher(x).float()]
        if request.kind != "teacher_entropy" and student is None:
            raise ConfigError(f"{spec} scores with a student (score={request.kind}): give --student RUN_DIR")
        s = student(x).float() if student is not None and request.kind != "teacher_entropy" else None
        return candidate_scores(t, s, request), t

    return score


@torch.no_grad()
def measure_tstddev(
    cfg: RunConfig, views: list[str], epochs: int = 10, student: str | None = None, log: Any = print
) -> dict[str, float]:
    """{view spec: T. stddev} for the configured teacher over `epochs` passes of the training split, grouped
    as the release groups it (`kdlab.metrics.t_stddev_chunks`: per step the batch of x, then of x'; five
    steps per group). A view that scores candidates (cutmix_pick) scores them with the teacher and, for
    `kld` / `student_entropy`, the trained student of `student` (a run folder or checkpoint) in eval mode."""
    if cfg.teacher is None:
        raise ConfigError("tstddev needs a teacher: teacher.name=… teacher.checkpoint=…")
    device = resolve_device(cfg.engine.device)
    d = cfg.data
    data = load_dataset(
        d.dataset, d.cache_dir, d.train_per_class, d.test_per_class, d.stream, d.memory_budget_gb, d.image_size
    )
    if isinstance(data, StreamingDataset):  # measured on a spread-out sample decoded into memory
        data = data.decoded(STREAMED_SAMPLES)
    teacher = build_teacher(cfg.teacher, data, "teacher").to(device)
    student_fn = None
    if student is not None:
        trained, _, _ = load_trained(student, inference_only=True)
        student_fn = trained.to(device).eval().predict
    results = {}
    for spec in views:
        name, params = parse_view_spec(spec)
        view_cfg = dataclasses.replace(
            cfg.views, strong=None if name == "none" else name, params={**cfg.views.params, **params}
        )
        pipeline = views_for(dataclasses.replace(cfg, views=view_cfg), data).to(device).train()
        pipeline.check(cfg.data.batch_size, 1)
        if pipeline.needs_scores:
            pipeline.attach_scorer(_scorer(teacher, student_fn, spec))
        g = torch.Generator(device=device).manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        loader = DeviceLoader(data.train, cfg.data.batch_size, device, True, cfg.data.drop_last, g)
        chunks = []
        for _ in range(epochs):
            for b in loader:
                batch = pipeline(b.images, b.labels, b.index, g)
                with autocast_context(device, cfg.engine.amp):
                    chunks.append(teacher(batch.x).float().softmax(1).cpu())
                    if batch.x_strong is not None:
                        known = batch.teacher_strong
                        t_strong = known[0] if known is not None else teacher(batch.x_strong)
                        chunks.append(t_strong.float().softmax(1).cpu())
        results[spec] = t_stddev_chunks(chunks, 5 if name == "none" else 10)
        log(f"{spec}: T. stddev {results[spec]:.6f}")
    return results


def run_tstddev(
    cfg: RunConfig, views: list[str], epochs: int = 10, student: str | None = None, log: Any = print
) -> tuple[Path, dict[str, float]]:
    """Measure, then write tstddev.json into output_dir/tstddev-<name or teacher-seed>; returns (folder, results)."""
    results = measure_tstddev(cfg, views, epochs, student, log=log)
    assert cfg.teacher is not None
    # its own folder, never a run's: a recipe's `name` is the training run's folder name
    out = Path(cfg.output_dir) / f"tstddev-{cfg.name or f'{cfg.teacher.label}-s{cfg.seed}'}".replace(":", "-")
    out.mkdir(parents=True, exist_ok=True)
    ranking = sorted(results.items(), key=lambda kv: kv[1])
    atomic_write_json(
        out / "tstddev.json",
        {
            "teacher": cfg.teacher.label,
            "dataset": cfg.data.dataset.split(":")[0],
            "epochs": epochs,
            "grouping": "per step the batch of x then of x'; 5 steps per group (10 chunks, 5 without x')",
            "student": student,
            "views": dict(ranking),
            "views_config": dataclasses.asdict(dataclasses.replace(cfg.views, strong=None)),
        },
    )
    return out, results
