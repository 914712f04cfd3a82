"""The Trainer: epochs of (standard view → method → backward → SGD), evaluation, checkpoints, resume.

Hot path: everything inside a step is tensor code on the device. Running sums of the loss terms, the
correct-prediction count and a non-finite-loss flag stay on the device and are read once per
`engine.log_interval` steps and at the end of each epoch."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kdlab.config import RunConfig, portable_paths, to_dict
from kdlab.data import ImageDataset, IndexBatches, make_loader
from kdlab.engine.distributed import Distributed
from kdlab.engine.schedule import LRSchedule
from kdlab.engine.state import load_training_state, optimizer_from_flat, save_training_state
from kdlab.errors import CheckpointError, ConfigError, NonFiniteLossError
from kdlab.faults import crash_point
from kdlab.io import atomic_write_json, atomic_write_text
from kdlab.methods.base import Distiller
from kdlab.views import Normalize, StandardView, ViewPipeline, build_view, to_unit
from kdlab.views.pick import CutMixPick


@dataclass
class EvalResult:
    """Test-split evaluation: accuracy in %, mean CE loss in nats, agreement with the teacher(s) in %."""

    acc: float
    loss: float
    agreement: float | None = None
    logits: torch.Tensor | None = field(default=None, repr=False)


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device when asked for, else a no-op."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Trainer:
    """Runs one training run of `method` on `data` into `run_dir` as configured by `cfg`."""

    def __init__(
        self,
        cfg: RunConfig,
        method: Distiller,
        data: ImageDataset,
        run_dir: Path,
        device: torch.device,
        log: Callable[[str], None] = print,
        dist: Distributed | None = None,
    ):
        self.cfg = cfg
        self.dist = dist or Distributed()
        self.device = device
        self.method = method.to(device)
        self.data = data
        self.run_dir = Path(run_dir)
        self.log = log
        eng = cfg.engine
        self.memory_format = torch.channels_last if eng.channels_last else torch.contiguous_format
        if eng.channels_last:
            self.method.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if eng.teacher_amp == "bf16":
            for i in range(len(method.teachers)):
                method.teacher(i).set_inference_precision(torch.bfloat16)
        if eng.sync_bn:
            if device.type != "cuda":
                raise ConfigError("engine.sync_bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only)")
            method.student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method.student)
        self.views = build_pipeline(cfg, data).to(device)
        self.scorer = None
        if isinstance(self.views.strong, CutMixPick):
            pp = self.views.strong.params
            self.views.strong.n_pick(cfg.data.batch_size)  # n_pick > pool is a config error, now
            if not method.teachers and pp.score != "student_entropy":
                raise ConfigError(f"cutmix_pick with score={pp.score} needs a teacher")
            self.scorer = lambda x: method.score_candidates(x, pp.score, pp.temperature, pp.bn_update_compat)
        self.generator = torch.Generator(device=device)  # the sample order: the same in every process
        self.generator.manual_seed(cfg.seed)
        self.view_generator = self.generator  # augmentation draws: one stream per process
        if self.dist.active:
            self.view_generator = torch.Generator(device=device)
            self.view_generator.manual_seed(cfg.seed + 1_000_003 * (self.dist.rank + 1))
        self.train_loader = make_loader(
            data, "train", cfg.data.batch_size, device, True, cfg.data.drop_last, self.generator,
            shard=(self.dist.rank, self.dist.world), workers=cfg.data.workers,
        )  # fmt: skip
        self.test_loader = make_loader(data, "test", cfg.data.eval_batch_size, device, False, workers=cfg.data.workers)
        if method.needs_train_labels:
            method.attach_train_labels(self.train_loader.labels, self.generator)
        groups = method.param_groups()
        self.lr = cfg.optim.lr
        if cfg.optim.lr_ref_batch:
            self.lr = cfg.optim.lr * cfg.data.batch_size / cfg.optim.lr_ref_batch
        self.optimizer = torch.optim.SGD(
            groups,
            lr=self.lr,
            momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
            nesterov=cfg.optim.nesterov,
        )
        if self.dist.active:  # every optimiser step (ATSC's bias step too) first averages gradients
            self.optimizer.register_step_pre_hook(lambda opt, *_: self.dist.average_gradients(opt))
        self.schedule = LRSchedule(cfg.schedule, self.lr)
        self.epochs = self.schedule.epochs
        sched = cfg.schedule
        if sched.kind == "multistep" and sched.milestones and min(sched.milestones) >= sched.epochs:
            log(
                f"warning: schedule.milestones {list(sched.milestones)} are all ≥ schedule.epochs={sched.epochs}: "
                "the learning rate never decays (scale them, use schedule.epoch_factor, or schedule.kind=cosine)"
            )
        self.skip_nonfinite = eng.nonfinite == "skip"
        self.skipped: list[torch.Tensor] = []  # loss terms of the steps skipped this epoch (skip mode)
        self._term_names: list[str] = []
        self.step_fn = self._train_step
        if eng.compile:
            self.step_fn = torch.compile(self._train_step)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.best_acc = -1.0
        self.best_epoch = 0
        self.start_epoch = 1
        self.teacher_eval: list[EvalResult] = []
        self._teacher_test_logits: torch.Tensor | None = None

    # ------------------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def predict(self, fn: Callable[[torch.Tensor], torch.Tensor], loader: IndexBatches) -> torch.Tensor:
        """Float32 logits (N, K) of `fn` over `loader`, in loader order, on the device."""
        out = []
        with autocast_context(self.device, self.cfg.engine.amp):
            for batch in loader:
                x = self.views.normalize(to_unit(batch.images)).contiguous(memory_format=self.memory_format)
                out.append(fn(x).float())
        return torch.cat(out)

    def evaluate_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> EvalResult:
        n = len(labels)
        pred = logits.argmax(1)
        acc = (pred == labels).sum().item() / n * 100  # exact count / n, as `kdlab eval` reports it
        loss = F.cross_entropy(logits, labels).item()
        agreement = None
        if self._teacher_test_logits is not None:
            agreement = (pred == self._teacher_test_logits.argmax(1)).sum().item() / n * 100
        return EvalResult(acc, loss, agreement, logits)

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
        """The trained model's test accuracy, loss and agreement with the teacher(s)."""
        self.method.eval()
        logits = self.predict(self.method.predict, self.test_loader)
        crash_point("eval")
        return self.evaluate_logits(logits, self.test_loader.labels)

    # ------------------------------------------------------------------------------------------ training

    def _train_step(
        self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, epoch: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step. Returns (loss terms (T,), correct count) as device tensors, no host sync."""
        with autocast_context(self.device, self.cfg.engine.amp):
            batch = self.views(images, labels, index, self.view_generator, self.scorer, self.memory_format)
            batch.epoch = epoch
            logits, terms = self.method.forward_train(batch)
        values = torch.stack([t.float() for t in terms.values()])
        loss = values.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._term_names = list(terms)
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
        for i, batch in enumerate(self.train_loader):
            if i == steps:
                break
            progress_epoch = epoch - 1 + i / steps
            lr = self.schedule(progress_epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            n_skipped = len(self.skipped)
            values, n_correct = self.step_fn(batch.images, batch.labels, batch.index, progress_epoch)
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
                self._check_finite(first_bad, bad_terms)
                if progress is not None:
                    progress.update(task, completed=i + 1, loss=float(sums.sum()) / seen)
            elif progress is not None:
                progress.update(task, completed=i + 1)
        if self.skipped:
            self._report_skipped(epoch, steps, seen)
        assert sums is not None
        if self.dist.active:  # epoch totals over all processes
            sums, correct = self.dist.sum(sums), self.dist.sum(correct)
            seen = int(self.dist.sum(torch.tensor(seen, device=self.device)))
        means = (sums / seen).tolist()
        out = {f"train_{n}": v for n, v in zip(self._term_names, means)}
        out["train_loss"] = sum(means)
        out["train_acc"] = correct.item() / seen * 100
        out.update(self.views.pop_stats())
        if self.skipped:
            out["skipped_steps"] = len(self.skipped)
        return out

    def _report_skipped(self, epoch: int, steps: int, seen: int) -> None:
        bad = torch.stack(self.skipped)
        names = [n for n, b in zip(self._term_names, (~torch.isfinite(bad)).any(0).tolist()) if b]
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
        names = [n for n, bad in zip(self._term_names, bad_terms.tolist()) if bad] if bad_terms is not None else []
        last = self.ckpt_dir / "last.safetensors"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"loss became non-finite at step {step} (terms: {', '.join(names) or 'total'}); training stopped, "
            f"{kept}. Lower optim.lr or check the data.",
            step,
            names,
        )

    # ------------------------------------------------------------------------------------------ state

    def _data_info(self) -> dict[str, Any]:
        d = self.data
        return {
            "name": d.name,
            "num_classes": d.num_classes,
            "image_shape": list(d.image_shape),
            "mean": list(d.mean),
            "std": list(d.std),
            "classes": d.classes,
        }

    def _rng_state(self) -> dict[str, torch.Tensor]:
        state = {"data": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.dist.active:  # every process's augmentation and torch streams, gathered to the writer
            for r, st in enumerate(self.dist.gather(self.view_generator.get_state().to(self.device))):
                state[f"views{r}"] = st.cpu()
            for r, st in enumerate(self.dist.gather(torch.get_rng_state().to(self.device))):
                state[f"torch{r}"] = st.cpu()
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save_checkpoint(self, name: str, epoch: int, result: EvalResult | None, full: bool) -> None:
        meta: dict[str, Any] = {
            "format": "kdlab-checkpoint-v1",
            "epoch": epoch,
            "epochs": self.epochs,
            "test_acc": result.acc if result else None,
            "best_acc": self.best_acc,
            "best_epoch": self.best_epoch,
            "config": to_dict(portable_paths(self.cfg)),
            "data": self._data_info(),
            "teacher_test_acc": [r.acc for r in self.teacher_eval],
        }
        # Both may be collectives (the gathered RNG streams; CRD's pending memory update): every process
        # takes part, rank 0 writes.
        model_state = self.method.checkpoint_state()
        rng = self._rng_state() if full else {}
        if not self.dist.is_main:
            return
        save_training_state(
            self.ckpt_dir / f"{name}.safetensors",
            model_state,
            self.optimizer if full else None,
            rng,
            meta,
        )

    def resume(self) -> None:
        """Continue from checkpoints/last.safetensors: weights, optimiser, RNG, epoch, best so far."""
        for tmp in [*self.run_dir.glob(".tmp-*"), *self.ckpt_dir.glob(".tmp-*")] if self.dist.is_main else []:
            tmp.unlink()  # a write cut short by a kill; the file it was replacing is intact
        path = self.ckpt_dir / "last.safetensors"
        if not path.is_file():  # killed during the first epoch: nothing to keep, start over in this folder
            self.log("no checkpoint yet (the run stopped in its first epoch): starting again from epoch 1")
            self._truncate_metrics(0)
            return
        model, tensors, meta = load_training_state(path)
        self.method.load_checkpoint_state(model)
        optimizer_from_flat(self.optimizer, tensors, meta["optimizer"])
        self.generator.set_state(tensors["rng.data"])
        if self.dist.active:
            key = f"rng.views{self.dist.rank}"
            if key not in tensors:
                raise CheckpointError(f"cannot resume on {self.dist.world} processes: {path} was written by fewer")
            self.view_generator.set_state(tensors[key])
            torch.set_rng_state(tensors[f"rng.torch{self.dist.rank}"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.start_epoch = int(meta["epoch"]) + 1
        self.best_acc = float(meta["best_acc"])
        self.best_epoch = int(meta["best_epoch"])
        self._truncate_metrics(int(meta["epoch"]))

    def _truncate_metrics(self, epoch: int) -> None:
        """Drop metric lines of epochs after the checkpoint (written before a kill, to be redone)."""
        path = self.run_dir / "metrics.jsonl"
        if self.dist.is_main and path.is_file():
            lines = path.read_text().splitlines()
            keep = [ln for ln in lines if (e := _epoch_of(ln)) is not None and e <= epoch]
            atomic_write_text(path, "".join(ln + "\n" for ln in keep))

    # ------------------------------------------------------------------------------------------ the loop

    def fit(self, resume: bool = False, stop_after_epoch: int | None = None, progress: Any = None) -> dict[str, Any]:
        """Train to the last epoch (or `stop_after_epoch`), writing metrics, checkpoints and summary.json."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        teachers = self.evaluate_teachers()
        for i, r in enumerate(teachers):
            self.log(f"teacher {i}: test acc {r.acc:.2f}%  loss {r.loss:.3f}")
        if resume:
            self.resume()
            if self.start_epoch > 1:
                self.log(f"resuming at epoch {self.start_epoch}/{self.epochs}")
        last_eval: EvalResult | None = None
        t_start = time.perf_counter()
        end = self.epochs if stop_after_epoch is None else min(self.epochs, stop_after_epoch)
        task = None
        for epoch in range(self.start_epoch, end + 1):
            if progress is not None:
                task = progress.add_task(
                    f"epoch {epoch}/{self.epochs}", total=len(self.train_loader), loss=float("nan")
                )
            t0 = time.perf_counter()
            record: dict[str, Any] = {"epoch": epoch, "lr": self.schedule(epoch - 1)}
            record.update(self.train_epoch(epoch, progress, task))
            train_time = time.perf_counter() - t0
            self.dist.average_buffers(list(self.method.trainable_modules().values()))
            if epoch % self.cfg.engine.eval_every == 0 or epoch == self.epochs:
                if self.method.adaptive_teachers:  # the teachers changed: re-measure them first
                    record["teacher_test_acc"] = [r.acc for r in self.evaluate_teachers()]
                last_eval = self.evaluate()
                record.update({"test_acc": last_eval.acc, "test_loss": last_eval.loss})
                if last_eval.agreement is not None:
                    record["agreement"] = last_eval.agreement
                if last_eval.acc > self.best_acc:
                    self.best_acc, self.best_epoch = last_eval.acc, epoch
                    self.save_checkpoint("best", epoch, last_eval, full=False)
            record.update(self.method.epoch_report())
            record["epoch_time_s"] = time.perf_counter() - t0
            record["images_per_s"] = self.train_loader.num_samples / train_time
            if self.dist.is_main:
                with open(self.run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            self.save_checkpoint("last", epoch, last_eval, full=True)
            if progress is not None:
                progress.remove_task(task)
            self.log(_epoch_line(record, self.epochs))
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
            "best_test_acc": self.best_acc if self.best_acc >= 0 else None,
            "best_epoch": self.best_epoch or None,
            "last_test_loss": last.get("test_loss"),
            "last_agreement": last.get("agreement"),
            "last_train_acc": lines[-1]["train_acc"] if lines else None,
            "teacher_test_acc": [r.acc for r in self.teacher_eval],
            "train_seconds_this_session": round(seconds, 2),
            "mean_images_per_s": sum(ln["images_per_s"] for ln in lines) / len(lines) if lines else None,
        }


def _epoch_of(line: str) -> int | None:
    """The epoch of a metrics.jsonl line; None for a blank line or one cut short by a kill."""
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return None


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {r['epoch']}/{epochs}", f"loss {r['train_loss']:.4f}", f"train {r['train_acc']:.2f}%"]
    if "test_acc" in r:
        parts.append(f"test {r['test_acc']:.2f}%")
    if "agreement" in r:
        parts.append(f"agree {r['agreement']:.1f}%")
    parts.append(f"{r['images_per_s']:.0f} img/s")
    return "  ".join(parts)


def build_pipeline(cfg: RunConfig, data: ImageDataset) -> ViewPipeline:
    """The configured standard view, optional strong view and normalisation for `data`."""
    size = data.image_shape[1]
    standard = StandardView(cfg.views.standard, size, cfg.data.crop_padding, cfg.data.flip)
    strong = None
    if cfg.views.strong:
        params = {"strength": cfg.views.strength, "per_batch_compat": cfg.views.per_batch_compat, **cfg.views.params}
        strong = build_view(cfg.views.strong, params, size)
    return ViewPipeline(standard, Normalize(data.mean, data.std), strong)
