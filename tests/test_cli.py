import json
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import DIGITS, digits_overrides

from kdlab.cli import main


def test_models_lists_the_zoo_with_parameter_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "resnet32x4" in out and "7.43M" in out and "ShuffleV2" in out and "1.36M" in out


def test_methods_lists_kd_with_defaults(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "kd" in out and '"temperature": 4.0' in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "optim.lrr=0.1"], "unknown config key 'optim.lrr' (did you mean: optim.lr?)"),
        (["train", "data.dataset=cifar100:/no/such/dir"], "dataset path /no/such/dir does not exist"),
        (["distill", "data.dataset=digits"], "`kdlab distill` needs a teacher"),
        (["train", "teacher.name=resnet8"], "use `kdlab distill`"),
        (["train", "--config", "missing.yaml"], "config file 'missing.yaml' not found"),
        (["train", "--dry-run", "data.dataset=digits", "student.kwargs={depth:56}"], "a space after each colon"),
        (["eval", "/no/such/run"], "does not exist"),
        (
            ["distill", "data.dataset=digits", "teacher.name=resnet8", "method.name=kd", "method.temperature=0"],
            "method.temperature must be > 0",
        ),
        (
            [
                "train",
                "--dry-run",
                "data.dataset=digits",
                "views.strong=cutmix_pick",
                "views.params.n_pick=1000",
                "views.params.score=student_entropy",
            ],
            "n_pick=1000 exceeds the pool of 128 candidates",
        ),
        (["train", "--dry-run", "data.dataset=digits", "views.strong=cutmix_pick"], "score=kld needs a teacher"),
        (
            ["distill", "data.dataset=digits", "teacher.name=resnet8", "method.name=kd", "method.strong_target=labels"],
            "views.strong is not set",
        ),
        (["train", "--resume", "runs/x", "seed=3"], "drop --config, overrides"),
        (["train", "--dry-run", "engine.device=gpu0"], "engine.device='gpu0' is not a device"),
    ],
)
def test_bad_input_is_one_clean_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_truncated_cifar_via_cli(shared_data, tmp_path, capsys):
    src = shared_data / "cifar-truncated" / "cifar-100-python"
    # As shipped (train.TRUNCATED): the official file name is missing.
    assert main(["train", f"data.dataset=cifar100:{src}"]) == 2
    assert "cifar-100-python/train is missing" in capsys.readouterr().err
    # Under the official names: the cut-off pickle itself is reported.
    (tmp_path / "c100").mkdir()
    for f in src.iterdir():
        shutil.copy(f, tmp_path / "c100" / f.name.replace(".TRUNCATED", ""))
    assert main(["train", f"data.dataset=cifar100:{tmp_path / 'c100'}"]) == 2
    assert "c100/train is truncated or corrupt" in capsys.readouterr().err


def test_train_eval_export_from_the_command_line(tmp_path):
    """The installed entry point end to end: train a tiny run, evaluate it, export it."""
    run = [sys.executable, "-m", "kdlab"]
    common = ["data.dataset=digits", "data.flip=false", "data.crop_padding=1", "schedule.epochs=2",
              "student.name=resnet8", f"output_dir={tmp_path}", "name=cli"]  # fmt: skip
    done = subprocess.run([*run, "train", "--no-progress", *common], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    ev = subprocess.run([*run, "eval", str(tmp_path / "cli")], capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["test_acc"] == pytest.approx(summary["best_test_acc"])
    ex = subprocess.run([*run, "export", str(tmp_path / "cli")], capture_output=True, text=True, timeout=300)
    assert ex.returncode == 0, ex.stderr
    assert (tmp_path / "cli" / "export" / "model.pt2").is_file()


def test_data_check_reports_counts_and_duplicates(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "d" / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(
                    tmp_path / "d" / split / c / f"{i}.png"
                )
    shutil.copy(tmp_path / "d" / "train" / "a" / "0.png", tmp_path / "d" / "train" / "b" / "dup.png")
    shutil.copy(tmp_path / "d" / "train" / "a" / "1.png", tmp_path / "d" / "test" / "a" / "leak.png")
    assert main(["data", "check", f"imagefolder:{tmp_path / 'd'}"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["train"], report["test"], report["classes"]) == (7, 7, 2)
    assert report["duplicates"] == {"within_train": 1, "within_test": 0, "test_images_also_in_train": 1}
    assert report["image"] == {"channels": 3, "height": 4, "width": 4, "mode": "RGB"}
    assert main(["data", "check", f"imagefolder:{tmp_path / 'missing'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_overrides_count_anywhere_after_the_command(capsys):
    argv = ["train", "data.dataset=digits", "--no-progress", "schedule.epochs=1", "--dry-run", "student.name=resnet8",
            "engine.threads=1"]  # fmt: skip
    assert main(argv) == 0
    assert '"student": "resnet8"' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--dry-run", "data.dataset=digits", "--bogus"])
    with pytest.raises(SystemExit):
        main(["models", "seed=1"])


def test_version_and_config_listing(capsys):
    from kdlab import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"kdlab {__version__}"
    from kdlab.commands.config_keys import config_keys

    rows = {r[0]: r for r in config_keys()}
    assert {"data.train_per_class", "data.test_per_class", "views.strong", "teacher.normalize"} <= set(rows)
    assert all(r[3] for r in rows.values())  # every key says what it means
    assert rows["schedule.epochs"][1:3] == ("int", "240")
    assert main(["config", "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert "configs/cifar10/small_kd_resnet20_resnet8.yaml" in listed
    assert main(["config", "--show", "configs/cifar10/small_kd_resnet20_resnet8.yaml", "seed=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["seed"] == 3 and shown["schedule"]["epochs"] == 15 and shown["optim"]["nesterov"] is False


def test_a_run_says_how_long_an_epoch_will_take(tmp_path):
    from kdlab.config import load_config
    from kdlab.experiment import train

    lines: list[str] = []
    cfg = load_config(None, [*digits_overrides(tmp_path, 2), "engine.log_interval=2"])
    train(cfg, log=lines.append)
    estimates = [x for x in lines if "per epoch" in x]
    assert len(estimates) == 1 and "for the 2 epoch(s) to go" in estimates[0]


def test_a_failed_start_leaves_no_run_folder(tmp_path, capsys):
    args = ["train", *DIGITS, f"output_dir={tmp_path}", "schedule.epochs=1", "name=x"]
    assert main([*args, "views.strong=cutmixx"]) == 2
    assert "did you mean" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(args) == 0 and (tmp_path / "x").is_dir()  # the next run gets the name, not x-2


def test_a_finished_run_says_so_and_extends_with_schedule_epochs(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", *DIGITS, f"output_dir={tmp_path}", "schedule.epochs=2", "name=r"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "finished its 2 epochs" in out and "resuming at epoch 3/2" not in out
    assert main(["train", "--resume", str(run), "schedule.epochs=3"]) == 0
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and "epochs: 3" in (run / "config.yaml").read_text()
    assert main(["train", "--resume", str(run), "schedule.epochs=1"]) == 2
    assert "already trained 3 epochs" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "seed=1"]) == 2  # any other override still refused
    assert main(["train", "--resume", str(run), "schedule.epochs=abc"]) == 2  # a clean error, not an internal one
    assert "whole number of epochs" in capsys.readouterr().err


def test_eval_of_a_torch_file_says_which_model_to_name(tmp_path, capsys):
    import torch

    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "w.pth")
    assert main(["eval", str(tmp_path / "w.pth")]) == 2
    err = capsys.readouterr().err
    assert "PyTorch weights file" in err and "--model" in err and "corrupt" not in err


LONG = "a-run-whose-name-alone-makes-its-folder-line-longer-than-eighty-columns"


def test_ctrl_c_names_the_folder_to_resume_and_logs_are_not_wrapped(tmp_path):
    import signal
    import time

    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "kdlab", "train", *DIGITS, f"output_dir={tmp_path}", "schedule.epochs=500",
           f"name={LONG}", "engine.eval_every=100"]  # fmt: skip
    # A test run started in the background of a non-interactive shell inherits SIGINT ignored (POSIX), and an
    # ignored signal stays ignored across exec: the child would never see Ctrl-C. Give it the default back.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.time() + 120
    while not (tmp_path / LONG / "checkpoints" / "last.safetensors").is_file() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert f"kdlab train --resume {tmp_path / LONG}" in err
    # redirected output: rich does not wrap at 80 columns
    folder_line = f"run folder: {tmp_path / LONG}"
    assert len(folder_line) > 80 and folder_line in out.splitlines()
    assert any("per epoch" in ln and "for the 500 epoch(s) to go" in ln for ln in out.splitlines())


def test_the_python_api_runs_a_config_from_a_notebook(tmp_path):
    import kdlab

    cfg = kdlab.load_config(None, [*digits_overrides(tmp_path, 1), "name=api"])
    run_dir, summary = kdlab.train(cfg, log=lambda _: None)
    assert kdlab.evaluate(run_dir)["test_acc"] == pytest.approx(summary["last_epoch_test_acc"], abs=1e-9)
    assert kdlab.export(run_dir)["num_classes"] == 10
    assert set(kdlab.__all__) >= {"load_config", "train", "evaluate", "analyze", "export"}
    with pytest.raises(AttributeError):
        kdlab.trian  # noqa: B018
