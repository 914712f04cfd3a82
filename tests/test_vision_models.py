"""timm and torchvision models by name (`timm:NAME`, `torchvision:NAME`): the optional `vision` extra.

These tests need timm and torchvision (`make test-vision` installs them into .venv-vision: torch 2.14.1 and
torchvision 0.29.1 from this machine's disk, timm from the registry); without them they skip."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")
tv_models = pytest.importorskip("torchvision.models")

from kdlab.config import load_config  # noqa: E402
from kdlab.errors import ConfigError, ModelError  # noqa: E402
from kdlab.experiment import train  # noqa: E402
from kdlab.models.loading import build_model, load_weights  # noqa: E402
from tests.conftest import digits_overrides  # noqa: E402


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_timm_model_by_name_with_probed_taps():
    model, taps = build_model("timm:resnet18", 100, 3, image_size=(32, 32))
    assert _params(model) == _params(timm.create_model("resnet18", num_classes=100)) == 11_227_812
    assert taps == {"feature": "layer4", "classifier": "fc", "stem": "act1",
                    **{f"stage{k}": f"layer{k}" for k in range(1, 5)}}  # fmt: skip
    grey, _ = build_model("timm:resnet18", 10, 1, image_size=(8, 8))  # in_chans follows the data
    assert grey(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_torchvision_model_by_name_with_probed_taps():
    model, taps = build_model("torchvision:mobilenet_v3_small", 10, 3, image_size=(32, 32))
    assert _params(model) == _params(tv_models.mobilenet_v3_small(num_classes=10))
    assert taps == {"feature": "features", "classifier": "classifier.3"}
    model, taps = build_model("torchvision:resnet18", 100, 3, image_size=(32, 32))
    assert taps == {"feature": "layer4", "classifier": "fc", **{f"stage{k}": f"layer{k}" for k in range(1, 5)}}
    assert _params(model) == 11_227_812


def test_downloads_are_refused_and_names_checked():
    with pytest.raises(ConfigError, match="never does"):
        build_model("timm:resnet18", 10, 3, kwargs={"pretrained": True}, image_size=(32, 32))
    with pytest.raises(ModelError, match="did you mean"):
        build_model("torchvision:resnet81", 10, 3, image_size=(32, 32))


def test_a_plain_state_dict_of_a_torchvision_model_loads(tmp_path):
    source = tv_models.resnet18(num_classes=10)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    model, taps = build_model("torchvision:resnet18", 10, 3, image_size=(32, 32))
    load_weights(model, tmp_path / "resnet18.pth", taps.get("classifier"))
    assert torch.equal(model.fc.weight, source.fc.weight)


@pytest.mark.parametrize("method", ["kd", "fitnet", "simkd"])
def test_distil_from_a_timm_teacher_to_a_timm_student(tmp_path, method):
    """Digits (1 channel): a timm teacher saved as a plain state dict, a timm student; feature and shared-head
    methods use the probed taps. The run's labels are the models actually used."""
    teacher = timm.create_model("resnet10t", num_classes=10, in_chans=1)
    torch.save({"state_dict": teacher.state_dict()}, tmp_path / "teacher.pth")
    cfg = load_config(None, [*digits_overrides(tmp_path, 1), f"method.name={method}", "data.train_per_class=20",
                             "teacher.name=timm:resnet10t", f"teacher.checkpoint={tmp_path / 'teacher.pth'}",
                             "student.name=timm:mobilenetv3_small_050"])  # fmt: skip
    run_dir, summary = train(cfg, log=lambda _: None)
    assert summary["teachers"] == ["timm:resnet10t"] and summary["student"] == "timm:mobilenetv3_small_050"
    assert "from-timm-resnet10t" in run_dir.name and summary["status"] == "finished"
