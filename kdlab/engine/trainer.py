"""The Trainer: epochs of (views → method → backward → SGD), evaluation and accounting. It receives its
parts (views, loaders, optimiser, schedule, random streams) from the experiment layer; checkpoints and
resume live in `checkpointing.py`.

Hot path: everything inside a step is tensor code on the device. Running sums of the loss terms, the
correct-prediction count and a non-finite-loss flag stay on the device and are read once per
`engine.log_interval` steps and at the end of each epoch."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kdlab.config import RunConfig, portable_paths
from kdlab.data import IndexBatches
from kdlab.engine.checkpointing import Checkpointer, Progress
from kdlab.engine.distributed import Distributed
from kdlab.engine.ema import WeightAverage
from kdlab.engine.graphed_step import GraphedStep, capture_for
from kdlab.engine.precision import resolve_precision
from kdlab.engine.schedule import LRSchedule
from kdlab.errors import ConfigError, NonFiniteLossError
from kdlab.faults import crash_point
from kdlab.io import atomic_write_json
from kdlab.methods.base import Distiller
from kdlab.metrics import top_k_accuracy
from kdlab.typed_config import to_dict
from kdlab.views import ViewPipeline, to_unit


@dataclass
class EvalResult:
    """Test-split evaluation: top-1 accuracy in %, mean CE loss in nats, agreement with the teacher(s) in %,
    top-5 accuracy in %."""

    acc: float
    loss: float
    agreement: float | None = None
    top5: float | None = None
    raw: EvalResult | None = None  # with engine.ema_decay: the raw (not averaged) weights' result


def autocast_context(device: torch.device, amp: str, cache: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device when `amp` is (or resolves to, for "auto": engine/precision.py) "bf16", else a
    no-op. `cache=False` for a step captured as a CUDA graph: autocast's cache of cast weights would hold the
    capture's copies (PyTorch's CUDA graphs notes)."""
    if amp == "auto":
        amp = resolve_precision(amp, False, device).amp
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


@dataclass
class TrainingParts:
    """What the Trainer runs, built by the experiment layer: the views, the loaders (train shuffled by
    `generator`), the optimiser and its schedule, and the random streams (`generator`: the sample order, the
    same in every process; `view_generator`: augmentation draws, one stream per process)."""

    views: ViewPipeline
    train_loader: IndexBatches
    test_loader: IndexBatches
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    generator: torch.Generator
    view_generator: torch.Generator


class Trainer:
    """Runs one training run of `method` with `parts` into `run_dir`: the loop, evaluation and accounting.
    `cfg` gives the engine settings and is recorded in checkpoints; `data_info` (classes, mean/std, image
    shape) too."""

    def __init__(
        self,
        cfg: RunConfig,
        method: Distiller,
        parts: TrainingParts,
        data_info: dict[str, Any],
        run_dir: Path,
        device: torch.device,
        log: Callable[[str], None] = print,
        dist: Distributed | None = None,
    ):
        self.cfg = cfg
        self.dist = dist or Distributed()
        self.device = device
        self.method = method
        self.data_info = data_info
        self.run_dir = Path(run_dir)
        self.log = log
        self.views = parts.views
        self.train_loader, self.test_loader = parts.train_loader, parts.test_loader
        self.optimizer, self.schedule = parts.optimizer, parts.schedule
        self.view_generator = parts.view_generator
        self.precision = resolve_precision(cfg.engine.amp, cfg.engine.channels_last, device)
        log(self.precision.describe())
        self.memory_format = torch.channels_last if self.precision.channels_last else torch.contiguous_format
        self.epochs = self.schedule.epochs
        self.skip_nonfinite = cfg.engine.nonfinite == "skip"
        self.skipped: list[torch.Tensor] = []  # loss terms of the steps skipped this epoch (skip mode)
        self.term_names: list[str] = []
        self.step_fn = self._step_function(cfg, device, parts)
        self.ema = WeightAverage(method, cfg.engine.ema_decay) if cfg.engine.ema_decay is not None else None
        self.checkpoints = Checkpointer(
            run_dir, method, parts.optimizer, parts.generator, parts.view_generator, device, self.dist, log, self.ema
        )
        self.progress = Progress()
        self.teacher_eval: list[EvalResult] = []
        self._teacher_test_logits: torch.Tensor | None = None

    def _step_function(self, cfg: RunConfig, device: torch.device, parts: TrainingParts) -> Callable[..., Any]:
        """The training step as configured: plain, torch.compile'd, or captured as a CUDA graph."""
        if cfg.engine.compile:
            return torch.compile(self._train_step, mode=cfg.engine.compile_mode)
        if not cfg.engine.cuda_graphs:
            return self._train_step
        capture = capture_for(device, [parts.generator, parts.view_generator])
        return GraphedStep(self._train_step, device, cfg.data.batch_size, capture)

    # ------------------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def predict(self, fn: Callable[[torch.Tensor], torch.Tensor], loader: IndexBatches) -> torch.Tensor:
        """Float32 logits (N, K) of `fn` over `loader`, in loader order, on the device."""
        out = []
        with autocast_context(self.device, self.precision.amp):
            for batch in loader:
                x = self.views.normalize(to_unit(batch.images)).contiguous(memory_format=self.memory_format)
                out.append(fn(x).float())
        return torch.cat(out)

    def evaluate_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> EvalResult:
        loss = F.cross_entropy(logits, labels).item()
        agreement = None
        if self._teacher_test_logits is not None:
            agreement = top_k_accuracy(logits, self._teacher_test_logits.argmax(1))
        # exact counts / n, as `kdlab eval` reports them
        return EvalResult(top_k_accuracy(logits, labels), loss, agreement, top_k_accuracy(logits, labels, 5))

    def evaluate_teachers(self) -> list[EvalResult]:
        """Test accuracy of every teacher (done once, before training); caches the ensemble's test logits."""
        results: list[EvalResult] = []
        teachers = list(self.method.teachers)
        if not teachers:
            return results
        self.method.eval()
        all_logits = []
        for t in teachers:
            logits = self.predict(t, self.test_loader)
            all_logits.append(logits)
            results.append(self.evaluate_logits(logits, self.test_loader.labels))
        self._teacher_test_logits = torch.stack(all_logits).mean(0)
        self.teacher_eval = results
        return results

    def evaluate(self) -> EvalResult:
        """The trained model's test accuracy, loss and agreement with the teacher(s): the averaged weights
        when engine.ema_decay is set (the raw weights' result then in `raw`)."""
        self.method.eval()
        logits = self.predict(self.method.predict, self.test_loader)
        crash_point("eval")
        result = self.evaluate_logits(logits, self.test_loader.labels)
        if self.ema is None:
            return result
        with self.ema.swapped_in():
            averaged = self.evaluate_logits(
                self.predict(self.method.predict, self.test_loader), self.test_loader.labels
            )
        averaged.raw = result
        return averaged

    # ------------------------------------------------------------------------------------------ training

    def _train_step(
        self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, epoch: float | torch.Tensor = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on uint8 images (B, C, H, W), labels (B,), sample ids (B,); `epoch` the fractional
        epoch (a 0-dim tensor when captured). Returns (loss terms (T,), correct count) as device tensors, no host
        sync."""
        with autocast_context(self.device, self.precision.amp, cache=not self.cfg.engine.cuda_graphs):
            batch = self.views(images, labels, index, self.view_generator, self.memory_format)
            batch.epoch = epoch
            logits, terms = self.method.forward_train(batch)
        values = torch.stack([t.float() for t in terms.values()])
        loss = values.sum()
        self.optimizer.zero_grad(set_to_none=True)
        backward_terms = getattr(self.optimizer, "backward_terms", None)  # an optimiser that splits the loss (DOT)
        if backward_terms is not None:
            backward_terms(terms)
        else:
            loss.backward()
        self.term_names = list(terms)
        if self.skip_nonfinite and self.dist.any(~torch.isfinite(values).all()):  # host sync: only in skip mode
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped.append(values.detach().cpu())
            return values.detach(), torch.zeros((), dtype=torch.long, device=self.device)
        self.optimizer.step()
        self.method.post_step(batch, self.optimizer)
        correct = (logits.detach().argmax(1) == labels).sum()
        return values.detach(), correct

    def train_epoch(
        self, epoch: int, progress: Any = None, task: Any = None, max_steps: int | None = None
    ) -> dict[str, float]:
        """One pass over the training split (or its first `max_steps` batches, for benchmarks); returns mean
        loss terms and accuracy (host floats)."""
        self.method.train()
        self.views.train()
        steps = len(self.train_loader) if max_steps is None else min(max_steps, len(self.train_loader))
        sums: torch.Tensor | None = None
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        bad_terms: torch.Tensor | None = None
        seen = 0
        self.skipped = []
        global_step0 = (epoch - 1) * steps
        t_epoch = time.perf_counter()
        for i, batch in enumerate(self.train_loader):
            if i == steps:
                break
            progress_epoch = epoch - 1 + i / steps
            lr = self.schedule(progress_epoch)
            for group in self.optimizer.param_groups:
                self._set_lr(group, lr * group.get("lr_scale", 1.0))
            n_skipped = len(self.skipped)
            values, n_correct = self.step_fn(batch.images, batch.labels, batch.index, progress_epoch)
            if self.ema is not None:
                self.ema.update()
            crash_point("step")
            if len(self.skipped) > n_skipped:  # engine.nonfinite=skip dropped this step
                continue
            b = batch.labels.shape[0]
            seen += b
            if sums is None:
                sums = torch.zeros_like(values)
                bad_terms = torch.zeros(values.shape, dtype=torch.bool, device=self.device)
            sums += values * b
            correct += n_correct
            finite = torch.isfinite(values)
            newly_bad = (first_bad < 0) & ~finite.all()  # (never in skip mode: those steps were dropped)
            first_bad = torch.where(newly_bad, global_step0 + i + 1, first_bad)
            bad_terms = bad_terms | (~finite & newly_bad)  # type: ignore[operator]
            if (i + 1) % self.cfg.engine.log_interval == 0 or i + 1 == steps:
                self._check_finite(first_bad, bad_terms)  # a host sync: the clock below is honest
                if self.estimate_pending:
                    self._log_estimate(time.perf_counter() - t_epoch, i + 1, steps)
                if progress is not None:
                    progress.update(task, completed=i + 1, loss=f"loss {float(sums.sum()) / seen:.4f}")
            elif progress is not None:
                progress.update(task, completed=i + 1)
        if self.skipped:
            self._report_skipped(epoch, steps, seen)
        assert sums is not None
        if self.dist.active:  # epoch totals over all processes
            sums, correct = self.dist.sum(sums), self.dist.sum(correct)
            seen = int(self.dist.sum(torch.tensor(seen, device=self.device)))
        means = (sums / seen).tolist()
        out = {f"train_{n}": v for n, v in zip(self.term_names, means)}
        out["train_loss"] = sum(means)
        out["train_acc"] = correct.item() / seen * 100
        out.update(self.views.pop_stats())
        if self.skipped:
            out["skipped_steps"] = len(self.skipped)
        return out

    def _set_lr(self, group: dict[str, Any], value: float) -> None:
        """Set a parameter group's learning rate. Compiled or captured, the rate is a 0-dim tensor updated in
        place: a Python float is a constant of a traced optimiser step (every new value recompiled it) and of a
        captured one (every replay would reuse it)."""
        if not (self.cfg.engine.compile or self.cfg.engine.cuda_graphs):
            group["lr"] = value
        elif isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = torch.tensor(value, dtype=torch.float32, device=self.device)

    estimate_pending = False  # fit() sets it: say how long an epoch and the run will take, once per session
    epochs_to_go = 0

    def _log_estimate(self, elapsed: float, done: int, steps: int) -> None:
        """One line after the first synced steps of a session: time per epoch and for the epochs to go (training
        steps only, measured over the first `done` steps, warm-up included; evaluation adds a little)."""
        self.estimate_pending = False
        per_epoch = elapsed / done * steps
        total = per_epoch * self.epochs_to_go
        self.log(
            f"≈ {_duration(per_epoch)} per epoch (from the first {done} steps), "
            f"≈ {_duration(total)} for the {self.epochs_to_go} epoch(s) to go"
        )

    def _report_skipped(self, epoch: int, steps: int, seen: int) -> None:
        bad = torch.stack(self.skipped)
        names = [n for n, b in zip(self.term_names, (~torch.isfinite(bad)).any(0).tolist()) if b]
        if seen == 0:
            raise NonFiniteLossError(
                f"every step of epoch {epoch} had a non-finite loss (terms: {', '.join(names)}); training stopped, "
                "the last good checkpoint is kept. Lower optim.lr or check the data.",
                (epoch - 1) * steps + 1,
                names,
            )
        self.log(f"epoch {epoch}: skipped {len(self.skipped)} of {steps} steps, non-finite loss ({', '.join(names)})")

    def _check_finite(self, first_bad: torch.Tensor, bad_terms: torch.Tensor | None) -> None:
        step = int(first_bad)
        if step < 0:
            return
        names = [n for n, bad in zip(self.term_names, bad_terms.tolist()) if bad] if bad_terms is not None else []
        last = self.checkpoints.last
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"loss became non-finite at step {step} (terms: {', '.join(names) or 'total'}); training stopped, "
            f"{kept}. Lower optim.lr or check the data.",
            step,
            names,
        )

    # ------------------------------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, name: str, epoch: int, result: EvalResult | None, full: bool) -> None:
        self.checkpoints.save(
            name,
            {
                "epoch": epoch,
                "epochs": self.epochs,
                "test_acc": result.acc if result else None,
                "best_acc": self.progress.best_acc,
                "best_epoch": self.progress.best_epoch,
                "config": to_dict(portable_paths(self.cfg)),
                "data": self.data_info,
                "teacher_test_acc": [r.acc for r in self.teacher_eval],
            },
            full,
        )

    def step_terms(self) -> dict[str, float]:
        """One training step on the first training batch → its named loss terms (host floats): a dry run."""
        batch = next(iter(self.train_loader))
        values, _ = self._train_step(batch.images, batch.labels, batch.index, 0.0)
        return dict(zip(self.term_names, values.tolist(), strict=True))

    # ------------------------------------------------------------------------------------------ the loop

    def fit(self, resume: bool = False, stop_after_epoch: int | None = None, progress: Any = None) -> dict[str, Any]:
        """Train to the last epoch (or `stop_after_epoch`), writing metrics, checkpoints and summary.json. The
        loaders' decoding workers (streamed data) live across epochs and stop when fit returns or raises."""
        try:
            return self._fit(resume, stop_after_epoch, progress)
        finally:
            self.train_loader.close()
            self.test_loader.close()

    def _fit(self, resume: bool, stop_after_epoch: int | None, progress: Any) -> dict[str, Any]:
        self.checkpoints.dir.mkdir(parents=True, exist_ok=True)
        teachers = self.evaluate_teachers()
        for i, r in enumerate(teachers):
            self.log(f"teacher {i}: test acc {r.acc:.2f}%  loss {r.loss:.3f}")
        if resume:
            self.progress = self.checkpoints.resume()
            if self.progress.start_epoch > self.epochs:
                self.log(
                    f"the run has finished its {self.epochs} epochs; to train longer: "
                    f"kdlab train --resume {self.run_dir} schedule.epochs=N"
                )
            elif self.progress.start_epoch > 1:
                self.log(f"resuming at epoch {self.progress.start_epoch}/{self.epochs}")
        last_eval: EvalResult | None = None
        t_start = time.perf_counter()
        end = self.epochs if stop_after_epoch is None else min(self.epochs, stop_after_epoch)
        task = None
        events = _tensorboard(self.run_dir) if self.cfg.engine.tensorboard and self.dist.is_main else None
        self.epochs_to_go = end - self.progress.start_epoch + 1
        self.estimate_pending = self.epochs_to_go > 0
        for epoch in range(self.progress.start_epoch, end + 1):
            if progress is not None:
                task = progress.add_task(f"epoch {epoch}/{self.epochs}", total=len(self.train_loader), loss="")
            t0 = time.perf_counter()
            record: dict[str, Any] = {"epoch": epoch, "lr": self.schedule(epoch - 1)}
            record.update(self.train_epoch(epoch, progress, task))
            train_time = time.perf_counter() - t0
            self.dist.average_buffers(list(self.method.trainable_modules().values()))
            if epoch % self.cfg.engine.eval_every == 0 or epoch == self.epochs:
                if self.method.adaptive_teachers:  # the teachers changed: re-measure them first
                    record["teacher_test_acc"] = [r.acc for r in self.evaluate_teachers()]
                last_eval = self.evaluate()
                record.update({"test_acc": last_eval.acc, "test_top5": last_eval.top5, "test_loss": last_eval.loss})
                if last_eval.raw is not None:
                    record.update({"raw_test_acc": last_eval.raw.acc, "raw_test_loss": last_eval.raw.loss})
                if last_eval.agreement is not None:
                    record["agreement"] = last_eval.agreement
                if last_eval.acc > self.progress.best_acc:
                    self.progress.best_acc, self.progress.best_epoch = last_eval.acc, epoch
                    self.save_checkpoint("best", epoch, last_eval, full=False)
            record.update(self.method.epoch_report())
            record["epoch_time_s"] = time.perf_counter() - t0
            record["images_per_s"] = self.train_loader.num_samples / train_time
            if self.dist.is_main:
                with open(self.run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            if events is not None:
                for key, value in record.items():
                    if isinstance(value, int | float) and key != "epoch":
                        events.add_scalar(key, value, epoch)
                events.flush()
            self.save_checkpoint("last", epoch, last_eval, full=True)
            if progress is not None:
                progress.remove_task(task)
            self.log(_epoch_line(record, self.epochs))
        if events is not None:
            events.close()
        self.dist.barrier()
        if not self.dist.is_main:
            return {}
        summary = self.summary(last_eval, time.perf_counter() - t_start, finished=end == self.epochs)
        atomic_write_json(self.run_dir / "summary.json", summary)
        return summary

    def summary(self, last_eval: EvalResult | None, seconds: float, finished: bool) -> dict[str, Any]:
        lines = [json.loads(ln) for ln in (self.run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        evaluated = [ln for ln in lines if "test_acc" in ln]
        last = evaluated[-1] if evaluated else {}
        return {
            "status": "finished" if finished else "stopped",
            "epochs_done": lines[-1]["epoch"] if lines else 0,
            "epochs": self.epochs,
            "last_epoch_test_acc": last.get("test_acc"),
            "best_test_acc": self.progress.best_acc if self.progress.best_acc >= 0 else None,
            "best_epoch": self.progress.best_epoch or None,
            "last_test_loss": last.get("test_loss"),
            "last_agreement": last.get("agreement"),
            "last_train_acc": lines[-1]["train_acc"] if lines else None,
            "teacher_test_acc": [r.acc for r in self.teacher_eval],
            "train_seconds_this_session": round(seconds, 2),
            "mean_images_per_s": sum(ln["images_per_s"] for ln in lines) / len(lines) if lines else None,
        }


def _tensorboard(run_dir: Path) -> Any:
    """A TensorBoard SummaryWriter into run_dir/tensorboard (the optional tensorboard package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "engine.tensorboard=true needs the tensorboard package: pip install 'kdlab[tensorboard]'"
        ) from None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _duration(seconds: float) -> str:
    """12 s, 3.4 min, 2.1 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {r['epoch']}/{epochs}", f"loss {r['train_loss']:.4f}", f"train {r['train_acc']:.2f}%"]
    if "test_acc" in r:
        parts.append(f"test {r['test_acc']:.2f}%")
    if "agreement" in r:
        parts.append(f"agree {r['agreement']:.1f}%")
    parts.append(f"{r['images_per_s']:.0f} img/s")
    return "  ".join(parts)
