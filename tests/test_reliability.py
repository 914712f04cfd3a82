"""Faults: kill -9 at several points then resume (bitwise equal to an uninterrupted run), a full disk or a refused
write while checkpointing, and run folders free of the machine's absolute paths."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DIGITS
from safetensors.torch import load_file

from kdlab.config import load_config
from kdlab.errors import KdlabError
from kdlab.experiment import train

TIMING = {"epoch_time_s", "images_per_s"}
# digits, resnet8, 2 epochs of 22 steps, with a CutMix strong view so the data RNG is exercised too.
RUN = [*DIGITS, "student.name=resnet8", "method.name=ce", "views.strong=cutmix", "schedule.epochs=2", "seed=3"]


def _kdlab(args: list[str], crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every process: same reduction order
    env.pop("KDLAB_CRASH_AT", None)
    if crash_at:
        env["KDLAB_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "kdlab", *args], env=env, capture_output=True, text=True, timeout=300)


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    done = _kdlab(["train", "--no-progress", *RUN, f"output_dir={out}", "name=ref"])
    assert done.returncode == 0, done.stderr
    return out / "ref"


# step 5: in epoch 1, before any checkpoint; step 30: in epoch 2; eval 2: the test pass of epoch 2;
# write 5: epoch 2's last.safetensors written to its temporary name but not yet renamed over epoch 1's.
@pytest.mark.parametrize("crash_at", ["step:5", "step:30", "eval:2", "write:5"])
def test_kill_9_then_resume_equals_an_uninterrupted_run(reference, tmp_path, crash_at):
    killed = _kdlab(["train", "--no-progress", *RUN, f"output_dir={tmp_path}", "name=run"], crash_at)
    assert killed.returncode == -9, killed.stderr
    run_dir = tmp_path / "run"
    for ckpt in (run_dir / "checkpoints").glob("*.safetensors"):
        load_file(str(ckpt))  # whatever is under a checkpoint's name is complete
    if crash_at == "write:5":
        assert list((run_dir / "checkpoints").glob(".tmp-*"))  # the cut write left only its temporary file
    resumed = _kdlab(["train", "--no-progress", "--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert _records(run_dir) == _records(reference)
    ours, ref = (
        load_file(str(run_dir / "checkpoints" / "last.safetensors")),
        load_file(str(reference / "checkpoints" / "last.safetensors")),
    )
    model_keys = [k for k in ref if k.startswith("model.")]
    assert model_keys and all(torch.equal(ours[k], ref[k]) for k in model_keys)  # bitwise
    assert not list(run_dir.rglob(".tmp-*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (
        summary["status"] == "finished"
        and summary["best_test_acc"] == json.loads((reference / "summary.json").read_text())["best_test_acc"]
    )


@pytest.mark.parametrize(
    ("error", "as_safetensors"), [(errno.ENOSPC, True), (errno.ENOSPC, False), (errno.EACCES, False)]
)
def test_full_disk_or_refused_write_stops_clearly_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch, error, as_safetensors
):
    """The write fails the way the real one does: safetensors raises its own SafetensorError carrying the OS
    error ("IoError(Os { code: 28, kind: StorageFull, … })"); other writers raise OSError."""
    from safetensors import SafetensorError

    import kdlab.checkpoint as checkpoint

    real_save = checkpoint.save_file
    calls = {"n": 0}

    def failing_save(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] >= 3:  # epoch 1 writes best + last; epoch 2's first write dies half-way
            Path(path).write_bytes(b"\0" * 1000)
            if as_safetensors:
                raise SafetensorError(
                    f'Error while serializing: IoError(Os {{ code: {error}, kind: StorageFull, message: "No space '
                    'left on device" })'
                )
            raise OSError(error, os.strerror(error))
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", failing_save)
    cfg = load_config(None, [*RUN, f"output_dir={tmp_path}", "name=run"])
    with pytest.raises(KdlabError, match=f"could not write .*{os.strerror(error)}.*previous file is intact"):
        train(cfg, log=lambda _: None)
    last = tmp_path / "run" / "checkpoints" / "last.safetensors"
    from kdlab.engine.state import load_training_state

    _, _, meta = load_training_state(last)
    assert meta["epoch"] == 1 and not list(last.parent.glob(".tmp-*"))


def test_run_folder_and_export_hold_no_absolute_paths(tmp_path, digits_teacher):
    from kdlab.commands.export import export_run

    # Everything given as an absolute path: output folder, teacher checkpoint, cache.
    cfg = load_config(None, [*DIGITS, "student.name=resnet8", "method.name=kd", "schedule.epochs=1",
                             "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher.resolve()}",
                             f"output_dir={tmp_path.resolve()}", "name=abs"])  # fmt: skip
    run_dir, summary = train(cfg, log=lambda _: None)
    export_run(run_dir)
    needles = {str(tmp_path.resolve()), str(Path.cwd().resolve()), str(Path(__file__).resolve().parents[1])}
    needles |= {os.path.expanduser("~")} - {"/", "/root"}  # a home folder name is personal
    offenders = []
    for f in run_dir.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            for n in needles:  # as an absolute path, i.e. not the tail of a relative "../../tmp/…"
                offenders += [f"{f.relative_to(run_dir)}: {n}" for m in re.finditer(re.escape(n.encode()), data)
                              if data[max(0, m.start() - 2) : m.start()] != b".."]  # fmt: skip
    assert not offenders, offenders
    # …and the run still resumes and evaluates from its relative paths.
    from kdlab.experiment import evaluate_path

    # One epoch, so best = last: re-evaluating must give the accuracy the run itself measured.
    assert evaluate_path(run_dir)["test_acc"] == pytest.approx(summary["last_epoch_test_acc"], abs=1e-6)


def test_written_files_follow_the_umask(tmp_path):
    """Checkpoints, exported weights and JSON get 0666 & ~umask (0644 under umask 022), as open() would give,
    so a colleague can read them; safetensors alone writes 0600."""
    import os

    import torch

    from kdlab.checkpoint import save_tensors
    from kdlab.io import atomic_write_text

    old = os.umask(0o022)
    try:
        save_tensors(tmp_path / "w.safetensors", {"a": torch.zeros(2)}, {"k": 1})
        atomic_write_text(tmp_path / "m.json", "{}")
    finally:
        os.umask(old)
    from kdlab import io

    expected = 0o666 & ~io._UMASK
    assert os.stat(tmp_path / "w.safetensors").st_mode & 0o777 == expected
    assert os.stat(tmp_path / "m.json").st_mode & 0o777 == expected
