"""Shared fixtures: a per-session cache dir, the ../shared/data folder, and a trained digits teacher."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

# engine.amp/channels_last=auto follow the hardware (engine/precision.py); the suite decides as if bf16 were not
# native, so that its numbers are the same on every CI machine (test_precision sets it per test). Subprocesses
# (CLI tests, torchrun) inherit it.
os.environ.setdefault("KDLAB_NATIVE_BF16", "0")

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Decoded-dataset caches go to one temporary folder per test session (CI's home stays clean)."""
    os.environ["KDLAB_CACHE"] = str(tmp_path_factory.mktemp("kdlab-cache"))
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; CI always has it, so its absence fails under CI and skips only elsewhere."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_DATA} is missing in CI")
        pytest.skip("../shared/data not present")
    return SHARED_DATA


# engine.report=false: the HTML report is tested on its own (test_diagnostics); 1–2 s saved per training run.
DIGITS = ["data.dataset=digits", "data.crop_padding=1", "data.flip=false", "engine.progress=false",
          "engine.report=false"]  # fmt: skip


def metrics_without_timing(run_dir: Path) -> list[dict]:
    """A run's metrics.jsonl, one dict per epoch, without the wall-clock fields (what two runs can share)."""
    drop = ("epoch_time_s", "images_per_s")
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in (run_dir / "metrics.jsonl").open()]


def digits_overrides(tmp: Path, epochs: int, **extra: object) -> list[str]:
    """Overrides for a short, seeded digits run under `tmp`."""
    out = [*DIGITS, f"output_dir={tmp}", f"schedule.epochs={epochs}", "schedule.kind=cosine", "seed=0"]
    return out + [f"{k}={v}" for k, v in extra.items()]


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet14 teacher trained 8 epochs on digits with CE (shared by the distillation tests)."""
    from kdlab.config import load_config
    from kdlab.experiment import train

    tmp = tmp_path_factory.mktemp("teacher")
    # contiguous: the layout the distillation tests' margins were measured with (channels_last rounds otherwise)
    cfg = load_config(None, [*digits_overrides(tmp, 8), "student.name=resnet14", "name=teacher",
                             "engine.channels_last=false"])  # fmt: skip
    run_dir, summary = train(cfg, log=lambda _: None)
    assert summary["last_epoch_test_acc"] > 80
    return run_dir


def methods_for_any_student() -> list[str]:
    """Every registered method that trains any classifier (not those that need e.g. a distillation token)."""
    from kdlab.methods import METHODS

    return [n for n in METHODS.names() if METHODS.get(n).cls.student_requirement is None]


def assert_export_predicts_as_the_run(run_dir: Path, export_dir: Path, n_images: int = 7) -> None:
    """The exported program (export_dir/model.pt2) on uint8 digits test images gives the run's own prediction
    (its best checkpoint's `predict` on the same images, normalised with the run's statistics)."""
    import torch

    from kdlab.data import load_dataset
    from kdlab.experiment import load_trained
    from kdlab.views import Normalize

    program = torch.export.load(str(export_dir / "model.pt2"))
    images = load_dataset("digits").test.images[:n_images]
    method, _, meta = load_trained(run_dir)
    with torch.no_grad():
        expected = method.predict(Normalize(meta["data"]["mean"], meta["data"]["std"])(images.float() / 255))
    torch.testing.assert_close(program.module()(images), expected)
