import json
import math
from dataclasses import dataclass

import pytest
import torch
from conftest import assert_export_predicts_as_the_run, digits_overrides
from safetensors.torch import load_file

from kdlab.commands.export import export_run
from kdlab.config import load_config
from kdlab.errors import ConfigError, KdlabError, NonFiniteLossError
from kdlab.experiment import evaluate_path, train
from kdlab.io import atomic_write
from kdlab.losses import cross_entropy
from kdlab.methods.base import Distiller, register_method

QUIET = {"log": lambda _: None}


def test_teacher_trains_far_above_chance(digits_teacher):
    summary = json.loads((digits_teacher / "summary.json").read_text())
    # 10 classes: chance is 10%. A resnet14 after 8 epochs must clear it by a wide margin.
    assert summary["last_epoch_test_acc"] > 80 and summary["best_test_acc"] >= summary["last_epoch_test_acc"]
    lines = (digits_teacher / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8
    first = json.loads(lines[0])
    assert {
        "epoch",
        "lr",
        "train_loss",
        "train_ce",
        "train_acc",
        "test_acc",
        "test_top5",
        "test_loss",
        "images_per_s",
    } <= set(first)
    assert 100 >= first["test_top5"] >= first["test_acc"]
    assert (digits_teacher / "checkpoints" / "last.safetensors").is_file()
    assert (digits_teacher / "checkpoints" / "best.safetensors").is_file()
    assert "student:\n  name: resnet14" in (digits_teacher / "config.yaml").read_text()


def test_kd_student_learns_and_agrees_with_teacher(digits_teacher, tmp_path):
    cfg = load_config(
        None,
        [*digits_overrides(tmp_path, 6), "method.name=kd", "student.name=resnet8", "teacher.name=resnet14",
         f"teacher.checkpoint={digits_teacher}"],
    )  # fmt: skip
    run_dir, summary = train(cfg, **QUIET)
    teacher_acc = json.loads((digits_teacher / "summary.json").read_text())["best_test_acc"]
    assert summary["teacher_test_acc"] == [pytest.approx(teacher_acc)]  # teacher evaluated before training
    assert summary["last_epoch_test_acc"] > 70 and summary["last_agreement"] > 70
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train_ce", "train_kd", "agreement"} <= set(record)
    # `kdlab eval` of the best checkpoint reproduces the accuracy logged at that epoch.
    evaluated = evaluate_path(run_dir, which="best")
    assert evaluated["test_acc"] == pytest.approx(summary["best_test_acc"], abs=1e-6)


def test_resume_gives_the_uninterrupted_result(tmp_path):
    overrides = [*digits_overrides(tmp_path, 4), "student.name=resnet8"]
    full_dir, full = train(load_config(None, [*overrides, "name=full"]), **QUIET)
    part_dir, part = train(load_config(None, [*overrides, "name=part"]), stop_after_epoch=2, **QUIET)
    assert part["status"] == "stopped" and part["epochs_done"] == 2
    with open(part_dir / "metrics.jsonl", "a") as f:  # an epoch line written just before a kill
        f.write(json.dumps({"epoch": 3, "train_acc": 0.0}) + "\n")
    _, resumed = train(None, resume_dir=part_dir, **QUIET)  # type: ignore[arg-type]
    assert resumed["status"] == "finished" and resumed["epochs_done"] == 4
    a = load_file(str(full_dir / "checkpoints" / "last.safetensors"))
    b = load_file(str(part_dir / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    strip = lambda d: {k: v for k, v in d.items() if k not in ("epoch_time_s", "images_per_s")}  # noqa: E731
    la = [strip(json.loads(x)) for x in (full_dir / "metrics.jsonl").read_text().splitlines()]
    lb = [strip(json.loads(x)) for x in (part_dir / "metrics.jsonl").read_text().splitlines()]
    assert la == lb
    assert full["last_epoch_test_acc"] == resumed["last_epoch_test_acc"]


@dataclass
class _NanParams:
    bad_step: int = 25


@register_method("test_nan_at_step", "test only: CE that turns NaN at a given step")
class _NanAtStep(Distiller):
    Params = _NanParams
    needs_teacher = False

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward_train(self, batch):
        self.steps += 1
        logits = self.student(batch.x)
        poison = torch.where(self.steps == self.params.bad_step, float("nan"), 0.0)
        return logits, {"ce": cross_entropy(logits, batch.y), "aux": poison}


def test_nan_loss_stops_with_step_and_term_and_keeps_last_good_checkpoint(tmp_path):
    # digits: 1348 training images, batch 64 → 22 steps per epoch; step 25 is in epoch 2.
    cfg = load_config(None, [*digits_overrides(tmp_path, 3, **{"engine.log_interval": 50}),
                             "student.name=resnet8", "method.name=test_nan_at_step", "name=nan"])  # fmt: skip
    with pytest.raises(NonFiniteLossError, match="at step 25 \\(terms: aux\\)") as info:
        train(cfg, **QUIET)
    assert info.value.step == 25 and info.value.terms == ["aux"]
    last = load_file(str(tmp_path / "nan" / "checkpoints" / "last.safetensors"))
    assert all(torch.isfinite(v).all() for k, v in last.items() if v.is_floating_point())
    lines = (tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1]


def test_nan_skip_mode_drops_the_bad_step_and_goes_on(tmp_path):
    cfg = load_config(None, [*digits_overrides(tmp_path, 2), "student.name=resnet8", "method.name=test_nan_at_step",
                             "engine.nonfinite=skip", "name=skip"])  # fmt: skip
    logs: list[str] = []
    _, summary = train(cfg, log=logs.append)
    records = [json.loads(x) for x in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert "skipped_steps" not in records[0] and records[1]["skipped_steps"] == 1  # step 25 is in epoch 2
    assert all(math.isfinite(r["train_loss"]) for r in records) and summary["status"] == "finished"
    assert any("skipped 1 of 22 steps, non-finite loss (aux)" in m for m in logs)
    last = load_file(str(tmp_path / "skip" / "checkpoints" / "last.safetensors"))
    assert all(torch.isfinite(v).all() for k, v in last.items() if v.is_floating_point())


def test_missing_teacher_checkpoint_is_a_clear_error(tmp_path):
    cfg = load_config(None, [*digits_overrides(tmp_path, 1), "method.name=kd", "teacher.name=resnet8"])
    with pytest.raises(ConfigError, match="teacher.checkpoint is not set"):
        train(cfg, **QUIET)


def test_teacher_with_other_class_count_is_refused(tmp_path, digits_teacher):
    # The digits teacher has 10 classes; a 2-class folder dataset cannot use it.
    import numpy as np
    from PIL import Image

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "two" / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / "two" / split / c / "0.png")
    cfg = load_config(None, [*digits_overrides(tmp_path, 1), f"data.dataset=imagefolder:{tmp_path / 'two'}",
                             "method.name=kd", "student.name=resnet8", "teacher.name=resnet14",
                             f"teacher.checkpoint={digits_teacher}"])  # fmt: skip
    with pytest.raises(KdlabError, match="has 10 classes but the dataset has 2"):
        train(cfg, **QUIET)


def test_export_roundtrip(digits_teacher, tmp_path):
    card = export_run(digits_teacher, tmp_path / "export")
    assert card["student_parameters"] == card["exported_parameters"] > 0
    assert_export_predicts_as_the_run(digits_teacher, tmp_path / "export")
    saved = json.loads((tmp_path / "export" / "model.json").read_text())
    assert saved["num_classes"] == 10 and saved["input"]["dtype"] == "uint8"
    assert str(tmp_path) not in (tmp_path / "export" / "model.json").read_text()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("good")

    def failing(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(KdlabError, match="No space left on device; the previous file is intact"):
        atomic_write(target, failing)
    assert target.read_text() == "good" and list(tmp_path.iterdir()) == [target]


def test_bf16_autocast_and_channels_last_train(digits_teacher, tmp_path):
    cfg = load_config(
        None,
        [*digits_overrides(tmp_path, 3), "engine.amp=bf16", "engine.channels_last=true", "method.name=kd",
         "student.name=resnet8", "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher}"],
    )  # fmt: skip
    _, summary = train(cfg, **QUIET)
    assert summary["last_epoch_test_acc"] > 50  # 10 classes: chance is 10%


def test_bf16_teacher_forward_keeps_the_teachers_predictions(digits_teacher):
    from kdlab.data import load_dataset
    from kdlab.methods import Teacher
    from kdlab.models import create_model
    from kdlab.models.loading import load_weights
    from kdlab.views import Normalize, to_unit

    data = load_dataset("digits")
    x = Normalize(data.mean, data.std)(to_unit(data.test.images))
    fp32 = create_model("resnet14", 10, 1)
    load_weights(fp32, digits_teacher)
    bf16 = Teacher(create_model("resnet14", 10, 1), {})
    bf16.model.load_state_dict(fp32.state_dict())
    bf16.set_inference_precision(torch.bfloat16)
    with torch.no_grad():
        a, b = fp32.eval()(x), bf16(x)
    assert b.dtype == torch.float32 and bf16.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.98
    assert (a - b).abs().max() < 0.5 and not torch.equal(a, b)  # bf16 did run, and stayed close


def test_progress_shows_the_running_loss_from_the_first_sync_never_nan(tmp_path):
    """An epoch shorter than engine.log_interval used to show `loss nan` until it ended."""

    class Recorder:
        def __init__(self) -> None:
            self.fields: list[str] = []

        def add_task(self, description: str, total: int, loss: str) -> int:
            self.fields.append(loss)
            return 0

        def update(self, task: int, completed: int, loss: str | None = None) -> None:
            if loss is not None:
                self.fields.append(loss)

        def remove_task(self, task: int) -> None:
            pass

    rec = Recorder()
    cfg = load_config(None, [*digits_overrides(tmp_path, 1), "engine.log_interval=1000", "data.train_per_class=20"])
    train(cfg, log=lambda _: None, progress=rec)
    assert rec.fields[0] == "" and rec.fields[-1].startswith("loss ") and not any("nan" in f for f in rec.fields)


def test_eval_on_other_data_fails_saying_what_differs(digits_teacher, tmp_path):
    """A digits model (1×8×8, 10 classes) on 32×32 RGB images of two classes: an error, not 9.35%."""
    import numpy as np
    from PIL import Image

    from kdlab.experiment import evaluate_path

    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / split / c / "0.png")
    with pytest.raises(KdlabError, match=r"images \(3, 32, 32\) \(C, H, W\), not \(1, 8, 8\); 2 classes, not 10"):
        evaluate_path(digits_teacher, f"imagefolder:{tmp_path}")
    assert evaluate_path(digits_teacher, "digits")["test_acc"] > 80  # the run's own data still evaluates


def test_tensorboard_events_hold_the_metrics_of_every_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = train(load_config(None, [*digits_overrides(tmp_path, 2), "engine.tensorboard=true"]), **QUIET)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [(e.step, e.value) for e in events.Scalars("test_acc")]
    assert logged == [(r["epoch"], pytest.approx(r["test_acc"])) for r in records]
    assert {"train_loss", "lr", "test_top5"} <= set(events.Tags()["scalars"])


def test_weight_average_against_hand_values():
    from torch import nn

    from kdlab.engine.ema import WeightAverage

    class One(nn.Module):  # a Distiller stand-in: checkpoint_state() as the real ones give it
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(1)

        def checkpoint_state(self):
            return {f"student.{k}": v for k, v in self.state_dict().items()}

    m = One()
    ema = WeightAverage(m, decay=0.5)  # type: ignore[arg-type]
    with torch.no_grad():
        m.bn.weight.fill_(3.0)  # 1 → 3: average ½·1 + ½·3 = 2
        m.bn.num_batches_tracked.fill_(7)
    ema.update()
    with torch.no_grad():
        m.bn.weight.fill_(4.0)  # ½·2 + ½·4 = 3
    ema.update()
    assert ema.state()["student.bn.weight"].item() == 3.0 and ema.state()["student.bn.num_batches_tracked"].item() == 7
    with ema.swapped_in():
        assert m.bn.weight.item() == 3.0
    assert m.bn.weight.item() == 4.0  # the raw weights come back


def test_ema_is_evaluated_kept_exported_and_resumes_exactly(tmp_path):
    overrides = [*digits_overrides(tmp_path, 3), "student.name=resnet8", "engine.ema_decay=0.9"]
    full_dir, _ = train(load_config(None, [*overrides, "name=full"]), **QUIET)
    records = [json.loads(x) for x in (full_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("raw_test_acc" in r for r in records) and any(r["raw_test_acc"] != r["test_acc"] for r in records)
    last = load_file(str(full_dir / "checkpoints" / "last.safetensors"))
    assert any(k.startswith("model.raw.") for k in last)
    assert not torch.equal(last["model.student.fc.weight"], last["model.raw.student.fc.weight"])
    from kdlab.experiment import evaluate_path

    assert evaluate_path(full_dir, which="last")["test_acc"] == pytest.approx(records[-1]["test_acc"], abs=1e-9)
    card = export_run(full_dir, tmp_path / "export", which="last")
    assert card["test_acc"] == pytest.approx(records[-1]["test_acc"])
    part_dir, _ = train(load_config(None, [*overrides, "name=part"]), stop_after_epoch=1, **QUIET)
    train(None, resume_dir=part_dir, **QUIET)  # type: ignore[arg-type]
    resumed = load_file(str(part_dir / "checkpoints" / "last.safetensors"))
    assert all(torch.equal(last[k], resumed[k]) for k in last if k.startswith("model."))


def test_a_compiled_run_does_not_recompile_as_the_learning_rate_moves(tmp_path):
    """engine.compile: the learning rate is a tensor updated in place (a Python float was a constant of the
    traced optimiser step, and each new value of a per-step schedule recompiled it, ~20 img/s on digits)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    overrides = [*digits_overrides(tmp_path, 2), "engine.compile=true", "data.drop_last=true"]
    train(load_config(None, [*overrides, "name=c"]), **QUIET)
    assert counters["stats"]["unique_graphs"] <= 8, dict(counters["stats"])  # 42 steps, each with its own lr
    run_dir, _ = train(load_config(None, [*overrides, "name=r"]), stop_after_epoch=1, **QUIET)
    _, summary = train(None, resume_dir=run_dir, **QUIET)  # type: ignore[arg-type]  # tensor lr survives a checkpoint
    assert summary["status"] == "finished"
