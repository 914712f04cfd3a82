"""Per-model input size (models/input_size.py): each model sees its own antialiased resize of the same batch; a
teacher at 2× the data's size distils into a student at the data's size, feature methods included; the exported
student resizes inside its program; bad sizes are one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_export_predicts_as_the_run, digits_overrides

from kdlab.commands.export import export_run
from kdlab.config import load_config
from kdlab.errors import ConfigError
from kdlab.experiment import train
from kdlab.models import create_model
from kdlab.models.input_size import attach_input_size

QUIET = {"log": lambda _: None}


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_the_model_sees_the_antialiased_resize_of_the_batch(mode):
    torch.manual_seed(0)
    plain = create_model("resnet8", 10, 1).eval()
    resized = create_model("resnet8", 10, 1).eval()
    resized.load_state_dict(plain.state_dict())
    attach_input_size(resized, (16, 12), mode)
    x = torch.randn(3, 1, 8, 8)
    expected = plain(F.interpolate(x, size=(16, 12), mode=mode, align_corners=False, antialias=True))
    torch.testing.assert_close(resized(x), expected)
    assert resized.state_dict().keys() == plain.state_dict().keys()  # checkpoints unchanged
    torch.testing.assert_close(resized(torch.randn(2, 1, 16, 12)).shape, torch.Size([2, 10]))


@pytest.fixture(scope="module")
def teacher_at_16px(tmp_path_factory):
    """A resnet14 teacher trained on digits resized to 16 px (the data is 8 px)."""
    tmp = tmp_path_factory.mktemp("t16")
    cfg = load_config(None, [*digits_overrides(tmp, 6), "student.name=resnet14", "student.input_size=16", "name=t16"])
    run_dir, summary = train(cfg, **QUIET)
    assert summary["last_epoch_test_acc"] > 80
    assert load_config(run_dir / "config.yaml").student.input_size == 16  # recorded in the run's config
    return run_dir


@pytest.mark.parametrize("method", ["kd", "fitnet"])
def test_a_16px_teacher_distils_into_an_8px_student(teacher_at_16px, tmp_path, method):
    cfg = load_config(None, [*digits_overrides(tmp_path, 3), f"method.name={method}", "student.name=resnet8",
                             "teacher.name=resnet14", f"teacher.checkpoint={teacher_at_16px}",
                             "teacher.input_size=16"])  # fmt: skip
    run_dir, summary = train(cfg, **QUIET)
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["agreement"] > 60 and summary["last_epoch_test_acc"] > 40  # 10 classes: chance is 10 %
    assert summary["teacher_test_acc"][0] > 80  # the teacher evaluated at its own size keeps its accuracy


def test_the_teacher_at_the_wrong_size_is_what_the_resize_prevents(teacher_at_16px, tmp_path):
    """Control: the same 16-px teacher fed the 8-px data directly is far worse than at its own size."""
    base = [*digits_overrides(tmp_path, 1), "method.name=kd", "student.name=resnet8", "teacher.name=resnet14",
            f"teacher.checkpoint={teacher_at_16px}", "schedule.epochs=1"]  # fmt: skip
    _, at_own = train(load_config(None, [*base, "teacher.input_size=16", "name=own"]), **QUIET)
    _, at_data = train(load_config(None, [*base, "name=data"]), **QUIET)
    assert at_own["teacher_test_acc"][0] > at_data["teacher_test_acc"][0] + 20


def test_an_exported_student_resizes_inside_its_program(teacher_at_16px, tmp_path):
    card = export_run(teacher_at_16px, tmp_path / "export")
    assert card["model_input_size"] == [16, 16] and card["input"]["shape"] == ["N", 1, 8, 8]
    assert_export_predicts_as_the_run(teacher_at_16px, tmp_path / "export", 5)


def test_bad_input_sizes_are_one_line_errors():
    for value in ("[8,8,8]", "0", "[8,-1]"):
        with pytest.raises(ConfigError, match="input_size") as err:
            load_config(None, [f"teacher.input_size={value}"])
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="input_resize"):
        load_config(None, ["student.input_resize=nearest"])
