"""engine.cuda_graphs: a captured step must mean what the uncaptured step means. On the CPU a CUDA graph cannot be
captured; `TraceCapture` is the stand-in (the step traced once into ATen ops and replayed on the same tensors: a
Python number, a host-side branch or Python-held state freezes there as it would in a CUDA graph). Each run here
is compared, epoch by epoch and bitwise, with the same run whose "capture" re-runs the step each time.
On a GPU (KDLAB_TEST_DEVICE=cuda, benchmarks/gpu_check.sh) the same runs are captured as real CUDA graphs."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import digits_overrides, metrics_without_timing

import kdlab.engine.trainer as trainer_module
from kdlab.config import load_config
from kdlab.engine.graphed_step import GraphedStep, StepOutput, TraceCapture
from kdlab.errors import ConfigError
from kdlab.experiment import train
from kdlab.views import image_ops
from kdlab.views.policies import FusedPolicy, FusedRandom

DEVICE = torch.device(os.environ.get("KDLAB_TEST_DEVICE", "cpu"))


# the CPU stand-in's tests; a GPU (KDLAB_TEST_DEVICE=cuda) runs the real capture instead
stand_in = pytest.mark.skipif(DEVICE.type != "cpu", reason="the CPU stand-in for a capture")


class RerunCapture:
    """No capture at all: every replay runs the step again (the reference)."""

    def __call__(self, fn: Callable[[], StepOutput]) -> tuple[StepOutput, Callable[[], StepOutput]]:
        return fn(), fn


class StrictTraceCapture(TraceCapture):
    """TraceCapture that also refuses a tensor made from host data while the step is traced (torch.tensor,
    as_tensor, from_numpy): on a GPU that is a copy from the host, which waits for the device and, captured,
    would replay the capture's bytes. (The trace itself refuses a value read back to the host.)"""

    def __call__(self, fn: Callable[[], StepOutput]) -> tuple[StepOutput, Callable[[], StepOutput]]:
        def refuse(*_args: object, **_kwargs: object) -> None:
            raise AssertionError("a tensor made from host data inside the step")

        with pytest.MonkeyPatch.context() as patch:
            for name in ("tensor", "as_tensor", "from_numpy"):
                patch.setattr(torch, name, refuse)
            return super().__call__(fn)


@pytest.fixture
def accelerator_views(monkeypatch: pytest.MonkeyPatch) -> None:
    """The views as a GPU runs them (draws on the device, ops masked, no host-side grouping)."""
    monkeypatch.setattr(FusedPolicy, "run", FusedPolicy.run_on_device)
    monkeypatch.setattr(FusedRandom, "run", FusedRandom.run_on_device)
    monkeypatch.setattr(image_ops, "apply", lambda u, op, v, pre=None, semantics=image_ops.PILLOW:
                        image_ops.apply_masked(u, op, v, semantics))  # fmt: skip


def _run(tmp: Path, monkeypatch: pytest.MonkeyPatch, capture: object | None, overrides: list[str]) -> list[dict]:
    """metrics.jsonl of a 1-epoch digits run with engine.cuda_graphs, captured by `capture` (None: the real
    CUDA capture), without its timings."""
    made: list[GraphedStep] = []

    def capture_for(device: torch.device, generators: object) -> object:
        return capture

    real = GraphedStep.__init__

    def remember(self: GraphedStep, *args: object, **kwargs: object) -> None:
        real(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    if capture is not None:
        monkeypatch.setattr(trainer_module, "capture_for", capture_for)
    monkeypatch.setattr(GraphedStep, "__init__", remember)
    name = type(capture).__name__
    cfg = load_config(None, [*digits_overrides(tmp, 1), "engine.cuda_graphs=true", f"name={name}", *overrides])
    run_dir, _ = train(cfg, log=lambda _: None)
    assert made and made[0].replays > 10  # the replays really ran (digits: 22 batches, the last partial)
    return metrics_without_timing(run_dir)


CASES = {
    "kd": ["method.name=kd"],
    "dkd, its warm-up read from the epoch tensor": ["method.name=dkd", "method.warmup_epochs=3"],
    "crd, memory banks and negatives": ["method.name=crd", "method.nce_k=64"],
    "atsc adapting its teacher (bias step)": ["method.name=atsc", "method.adapt=true"],
    "cutmix_pick (teacher scores, top-k)": ["method.name=kd", "views.strong=cutmix_pick"],
    "mixup α=0.4 (global RNG), ema, bf16": [
        "method.name=kd",
        "views.strong=mixup",
        "views.params.alpha=0.4",
        "engine.ema_decay=0.9",
        "engine.amp=bf16",
    ],
    "autoaugment": ["method.name=kd", "views.strong=autoaugment"],
    "randaugment timm": [
        "method.name=kd",
        "views.strong=randaugment",
        "views.params.scale=timm",
        "views.params.mstd=0.5",
    ],
    "randaugment (torchvision scale)": ["method.name=ce", "views.strong=randaugment"],
    "trivialaugment": ["method.name=ce", "views.strong=trivialaugment"],
    "color_jitter": ["method.name=ce", "views.strong=color_jitter"],
    "cutout filled with the dataset mean": ["method.name=ce", "views.strong=cutout", "views.params.ops=release"],
    "adamw, clipped, decay filtered": ["method.name=kd", "optim.name=adamw", "optim.lr=0.003", "optim.clip_grad=0.5"],
}


@stand_in
@pytest.mark.parametrize("case", list(CASES))
def test_a_replayed_step_trains_as_the_step_itself(case, digits_teacher, tmp_path, monkeypatch, accelerator_views):
    if "adamw" in case:
        pytest.skip("AdamW on the CPU reads its step count on the host (capturable AdamW is CUDA-only): the CUDA test")
    overrides = ["student.name=resnet8", "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher}",
                 "schedule.warmup_epochs=0.5", *CASES[case]]  # a per-step learning rate  # fmt: skip
    if case.startswith("atsc"):
        overrides.append("schedule.kind=cosine")
    replayed = _run(tmp_path / "a", monkeypatch, StrictTraceCapture(), overrides)
    rerun = _run(tmp_path / "b", monkeypatch, RerunCapture(), overrides)
    assert replayed == rerun


@pytest.mark.skipif(
    DEVICE.type != "cuda" or not torch.cuda.is_available(),
    reason="CUDA graphs need CUDA (the CPU runs the trace stand-in above)",
)
@pytest.mark.parametrize("case", list(CASES))
def test_a_cuda_graph_trains_as_the_step_itself(case, digits_teacher, tmp_path, monkeypatch):
    """The real capture on a GPU against the uncaptured step on the same GPU. The same kernels run in the same
    order, but some backward kernels on CUDA add with atomics (gathers, index_put) and may round differently
    from run to run: training numbers to 1e-3 relative, test accuracy to one point."""
    overrides = ["student.name=resnet8", "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher}",
                 "schedule.warmup_epochs=0.5", f"engine.device={DEVICE}", *CASES[case]]  # fmt: skip
    if case.startswith("atsc"):
        overrides.append("schedule.kind=cosine")
    captured = _run(tmp_path / "a", monkeypatch, None, overrides)
    rerun = _run(tmp_path / "b", monkeypatch, RerunCapture(), overrides)
    assert [sorted(r) for r in captured] == [sorted(r) for r in rerun]
    for got, want in zip(captured, rerun, strict=True):
        for key, value in want.items():
            if key in ("test_acc", "test_top5", "agreement", "raw_test_acc", "train_acc"):
                assert abs(got[key] - value) <= 1.0, (key, got[key], value)
            elif isinstance(value, float):
                assert math.isclose(got[key], value, rel_tol=1e-3, abs_tol=1e-4), (key, got[key], value)


@stand_in
def test_the_trace_stand_in_catches_a_frozen_learning_rate(digits_teacher, tmp_path, monkeypatch):
    """The stand-in can fail: with the learning rate a Python number (what the foreach SGD takes) the replays
    keep the traced rate, and the run differs from the uncaptured one."""

    def float_lr(self: object, group: dict, value: float) -> None:
        group["lr"] = value

    monkeypatch.setattr(trainer_module.Trainer, "_set_lr", float_lr)
    overrides = ["method.name=ce", "schedule.warmup_epochs=1"]
    replayed = _run(tmp_path / "a", monkeypatch, TraceCapture(), overrides)
    rerun = _run(tmp_path / "b", monkeypatch, RerunCapture(), overrides)
    assert replayed[0]["train_loss"] != rerun[0]["train_loss"]


@stand_in
def test_a_captured_run_resumes_bitwise(digits_teacher, tmp_path, monkeypatch, accelerator_views):
    """Stopped after epoch 1 and resumed (three uncaptured steps again, then a new capture): the same numbers
    as the run that went through. Bitwise only where the stand-in's replay is bitwise the eager step: make_fx
    replays decomposed ATen ops, which round differently from the eager kernels for some recipes and layouts
    (this one in channels_last; CE in contiguous); a CUDA graph replays the eager kernels themselves."""
    monkeypatch.setattr(trainer_module, "capture_for", lambda device, generators: TraceCapture())
    common = [*digits_overrides(tmp_path, 2), "engine.cuda_graphs=true", "method.name=kd", "views.strong=cutmix",
              "student.name=resnet8", "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher}",
              "engine.channels_last=false"]  # fmt: skip
    full_dir, _ = train(load_config(None, [*common, "name=full"]), log=lambda _: None)
    part_dir, _ = train(load_config(None, [*common, "name=part"]), stop_after_epoch=1, log=lambda _: None)
    train(None, resume_dir=part_dir, log=lambda _: None)  # type: ignore[arg-type]
    assert metrics_without_timing(full_dir) == metrics_without_timing(part_dir)


def test_warm_up_capture_replay_and_partial_batches():
    calls: list[tuple[int, object]] = []

    def step(images, labels, index, epoch):  # type: ignore[no-untyped-def]
        calls.append((images.shape[0], epoch))
        return images.float().sum()[None], labels.sum()

    graphed = GraphedStep(step, torch.device("cpu"), 4, RerunCapture(), warmup=2)
    batch = lambda n, v: (torch.full((n, 1, 2, 2), v, dtype=torch.uint8), torch.ones(n, dtype=torch.long),  # noqa: E731
                          torch.arange(n))  # fmt: skip
    outs = [graphed(*batch(4, v), epoch=0.5 * v) for v in range(5)] + [graphed(*batch(3, 9), epoch=9.0)]
    assert graphed.replays == 2  # calls 1, 2 warm up, 3 captures, 4, 5 replay, the partial batch runs as is
    assert [float(o[0]) for o in outs] == [0.0, 16.0, 32.0, 48.0, 64.0, 108.0]  # each step saw its own batch
    assert isinstance(calls[2][1], torch.Tensor) and calls[5] == (3, 9.0)  # captured: the epoch as a tensor


@pytest.mark.parametrize(
    ("override", "message"),
    [("engine.compile=true", "choose one"), ("engine.nonfinite=skip", "nonfinite=stop")],
)
def test_what_cannot_be_captured_is_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["engine.cuda_graphs=true", override])


def test_cuda_graphs_on_the_cpu_is_a_clear_error(tmp_path):
    cfg = load_config(None, [*digits_overrides(tmp_path, 1), "engine.cuda_graphs=true", "engine.device=cpu"])
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        train(cfg, log=lambda _: None)


@stand_in
@pytest.mark.parametrize("method", ["atsc", "ce", "crd", "dist", "dkd", "fitnet", "at", "sp", "rkd", "pkt", "vid",
                                    "kd", "simkd", "ttm"])  # fmt: skip
def test_every_method_s_step_can_be_captured(method, tmp_path, monkeypatch, accelerator_views):
    """One step of every method (with a mixed strong view) traced: no value read to the host, no op sized by the
    data, no tensor made from host data — what a CUDA graph capture needs."""
    from kdlab.assembly import build_trainer
    from kdlab.data import load_dataset
    from kdlab.methods import Teacher, build_method
    from kdlab.models import create_model, model_taps

    cfg = load_config(None, [*digits_overrides(tmp_path, 1), f"method.name={method}", "data.batch_size=16",
                             "views.strong=cutmix", *(["method.nce_k=64"] if method == "crd" else [])])  # fmt: skip
    data = load_dataset("digits")
    torch.manual_seed(0)
    teacher = Teacher(create_model("resnet14", 10, 1), model_taps("resnet14"))
    m = build_method(cfg.method, create_model("resnet8", 10, 1), [teacher], model_taps("resnet8"), data.image_shape)
    trainer = build_trainer(cfg, m, data, tmp_path, torch.device("cpu"), log=lambda _: None)
    batch = next(iter(trainer.train_loader))
    trainer.step_fn(batch.images, batch.labels, batch.index)  # lazy set-up (momentum buffers, banks)
    (values, _), replay = StrictTraceCapture()(lambda: trainer._train_step(batch.images, batch.labels, batch.index))
    assert torch.equal(replay()[0].isfinite(), values.isfinite()) and values.isfinite().all()
