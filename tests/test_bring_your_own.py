"""Models as users have them: a teacher defined in the user's file and saved the old way, with its own input
normalisation, distilled, then exported with only what inference needs and run in a plain script."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from kdlab.commands.export import export_run
from kdlab.config import ModelConfig, load_config, parse_normalize
from kdlab.errors import ConfigError
from kdlab.experiment import build_teacher, evaluate_model, evaluate_path, train
from kdlab.models import create_model
from kdlab.models.normalization import InputAdapter
from kdlab.typed_config import from_dict
from tests.conftest import digits_overrides

QUIET = {"log": lambda _: None}
FACTORY = '''
from kdlab.models import create_model


def build(num_classes, width=1):
    """The user's network: here kdlab's resnet14 for one-channel 8x8 digits."""
    return create_model("resnet14", num_classes, 1)
'''


def _program_parameters(program: torch.export.ExportedProgram) -> int:
    kind = torch.export.graph_signature.InputKind.PARAMETER
    specs = program.graph_signature.input_specs
    return sum(program.state_dict[s.target].numel() for s in specs if s.kind == kind and s.target is not None)


def test_input_adapter_maps_dataset_normalised_input_to_the_models_own():
    g = torch.Generator().manual_seed(0)
    x01 = torch.rand(4, 3, 5, 5, generator=g)
    ds_mean, ds_std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.25, 0.2, 0.3])
    own = parse_normalize({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}, "teacher", 3)
    x_ds = (x01 - ds_mean.view(1, 3, 1, 1)) / ds_std.view(1, 3, 1, 1)
    adapted = InputAdapter(own, ds_mean.tolist(), ds_std.tolist())(x_ds)
    expected = (x01 - torch.tensor(own.mean).view(1, 3, 1, 1)) / torch.tensor(own.std).view(1, 3, 1, 1)
    torch.testing.assert_close(adapted, expected)
    none = InputAdapter(parse_normalize("none", "teacher", 3), ds_mean.tolist(), ds_std.tolist())(x_ds)
    torch.testing.assert_close(none, x01)  # [0, 1] input


@pytest.mark.parametrize(
    ("value", "message"),
    [("imagenett", "dataset, none, imagenet"), ({"mean": [0.5]}, "dataset, none, imagenet"),
     ({"mean": [0.5], "std": [0.0]}, "std must be > 0"), ({"mean": "a", "std": [1]}, "list of numbers")],
)  # fmt: skip
def test_bad_normalize_values_are_config_errors(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_normalize(value, "teacher", 3)
    with pytest.raises(ConfigError, match="3 channels"):
        parse_normalize({"mean": [0.1, 0.2], "std": [1, 1]}, "teacher", 3)


@pytest.fixture(scope="module")
def unit_range_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A resnet14 trained on digits with [0, 1] input (`student.normalize=none`), saved the way old scripts did:
    torch.save({'state_dict': …} of a DataParallel model, without BatchNorm's num_batches_tracked)."""
    tmp = tmp_path_factory.mktemp("unit")
    cfg = load_config(None, [*digits_overrides(tmp, 6), "student.name=resnet14", "student.normalize=none"])
    run_dir, summary = train(cfg, **QUIET)
    state = load_file(run_dir / "checkpoints" / "last.safetensors")
    old = {
        "module." + k[len("model.student.") :]: v
        for k, v in state.items()
        if k.startswith("model.student.") and not k.endswith("num_batches_tracked")
    }
    path = tmp / "resnet14_digits.th"
    torch.save({"state_dict": old, "best_prec1": summary["last_epoch_test_acc"]}, path)
    return path, summary["last_epoch_test_acc"]


def _teacher_accuracy(cfg_overrides: list[str], tmp: Path) -> float:
    from kdlab.data import load_dataset
    from kdlab.views import Normalize, to_unit

    cfg = load_config(None, [*digits_overrides(tmp, 1), *cfg_overrides])
    data = load_dataset("digits")
    assert cfg.teacher is not None
    teacher = build_teacher(cfg.teacher, data, "teacher")
    with torch.no_grad():
        logits = teacher.model.eval()(Normalize(data.mean, data.std)(to_unit(data.test.images)))
    return float((logits.argmax(1) == data.test.labels).float().mean()) * 100


def test_a_teacher_keeps_its_accuracy_with_its_own_normalisation(unit_range_teacher, tmp_path):
    path, trained_acc = unit_range_teacher
    base = ["method.name=kd", "teacher.name=resnet14", f"teacher.checkpoint={path}"]
    own = _teacher_accuracy([*base, "teacher.normalize=none"], tmp_path)
    assert own == pytest.approx(trained_acc, abs=0.3)  # the accuracy it had in its own run
    assert _teacher_accuracy(base, tmp_path) < own - 10  # fed the dataset's normalisation it falls apart


def test_bring_your_own_teacher_end_to_end(unit_range_teacher, tmp_path):
    """A teacher from the user's file, saved the old way, with [0, 1] input: evaluate it, distil, export,
    then run the export without kdlab's training code, and without the teacher's file."""
    path, trained_acc = unit_range_teacher
    factory = tmp_path / "my_models.py"
    factory.write_text(FACTORY)
    # check the teacher before distilling from it: `kdlab eval FILE --factory … --normalize none --data digits`
    checked = evaluate_model(
        from_dict(ModelConfig, {"factory": f"{factory}:build", "checkpoint": str(path), "normalize": "none"}),
        "digits",
    )
    assert checked["test_acc"] == pytest.approx(trained_acc, abs=0.3) and checked["test_top5"] >= checked["test_acc"]
    assert 0 <= checked["test_ece_15"] < 100 and checked["model"].endswith("my_models.py:build")
    teacher = [f"teacher.factory={factory}:build", f"teacher.checkpoint={path}", "teacher.normalize=none"]
    run_dir, summary = train(
        load_config(None, [*digits_overrides(tmp_path, 3), "method.name=kd", "student.name=resnet8", *teacher]),
        **QUIET,
    )
    assert summary["last_epoch_test_acc"] > 60
    assert summary["teachers"] == ["my_models.py:build"] and "from-my_models-build" in run_dir.name  # not "resnet8"
    saved = (run_dir / "config.yaml").read_text()
    assert "normalize: none" in saved and "my_models.py:build" in saved  # recorded in the run folder
    os.remove(factory)  # the student needs none of the teacher's code
    assert evaluate_path(run_dir, which="last")["test_acc"] == pytest.approx(summary["last_epoch_test_acc"], abs=1e-6)
    card = export_run(run_dir, tmp_path / "export", which="last")
    out = tmp_path / "export"
    program = torch.export.load(str(out / "model.pt2"))
    # only the student: the program's parameters are the card's, and equal the student's
    assert _program_parameters(program) == card["exported_parameters"] == card["student_parameters"]
    assert card["weights_load_into"] == "student" and json.loads((out / "model.json").read_text())["format"]
    assert card["normalize"] == "dataset" and len(card["mean"]) == 1  # the student's: the digits statistics
    # the weights load with plain load_state_dict into the model they name, and carry the card as metadata
    student = create_model("resnet8", 10, 1).eval()
    student.load_state_dict(load_file(out / "model.safetensors"), strict=True)
    with safe_open(out / "model.safetensors", "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["num_classes"]) == 10 and json.loads(meta["mean"]) == card["mean"]
    from kdlab.data import load_dataset

    images = load_dataset("digits").test.images[:16]
    mean, std = torch.tensor(card["mean"]).view(1, -1, 1, 1), torch.tensor(card["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        plain = student((images.float() / 255 - mean) / std)
    torch.testing.assert_close(program.module()(images), plain, rtol=1e-4, atol=1e-4)


def test_export_of_a_distilled_student_is_the_size_of_the_student(digits_teacher, tmp_path):
    """No freshly initialised teacher copy inside the .pt2: a KD student's export ≈ a CE student's."""
    common = [*digits_overrides(tmp_path, 1), "student.name=resnet8"]
    kd_dir, _ = train(load_config(None, [*common, "name=kd", "method.name=kd", "teacher.name=resnet14",
                                         f"teacher.checkpoint={digits_teacher}"]), **QUIET)  # fmt: skip
    ce_dir, _ = train(load_config(None, [*common, "name=ce"]), **QUIET)
    export_run(kd_dir, tmp_path / "kd")
    export_run(ce_dir, tmp_path / "ce")
    kd_size, ce_size = ((tmp_path / d / "model.pt2").stat().st_size for d in ("kd", "ce"))
    assert kd_size < 1.1 * ce_size


def test_kdlab_eval_of_a_weights_file_on_the_command_line(unit_range_teacher, capsys):
    from kdlab.cli import main

    path, trained_acc = unit_range_teacher
    assert main(["eval", str(path), "--model", "resnet14", "--normalize", "none", "--data", "digits"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["test_acc"] == pytest.approx(trained_acc, abs=0.3) and out["model"] == "resnet14"
    assert main(["eval", str(path), "--model", "resnet14"]) == 2  # which data? a one-line error
    assert "needs --data" in capsys.readouterr().err
    assert main(["eval", str(path), "--model", "resnet14", "--data", "digits", "--normalize", "{mean: [0.5"]) == 2
    assert "--normalize is not valid YAML" in capsys.readouterr().err
