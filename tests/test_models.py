import pickle

import pytest
import torch
import torch.nn.functional as F

from kdlab.errors import CheckpointError, ModelError
from kdlab.models import FeatureExtractor, create_model, list_models, model_taps
from kdlab.models.loading import build_model, load_weights

# Published CIFAR-100 parameter counts (millions) of the CRD benchmark zoo.
PUBLISHED = {
    "resnet8x4": 1.23, "resnet32x4": 7.43, "wrn_40_2": 2.26, "wrn_16_2": 0.70, "resnet56": 0.86,
    "resnet20": 0.28, "vgg13": 9.46, "vgg8": 3.96, "MobileNetV2": 0.81, "ShuffleV1": 0.95,
    "ShuffleV2": 1.36, "ResNet50": 23.71,
}  # fmt: skip
ZOO = ["resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
       "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13", "vgg16",
       "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ShuffleV2_1_5", "ResNet18", "ResNet34", "ResNet50",
       "resnet18_imagenet", "resnet34_imagenet", "resnet50_imagenet"]  # fmt: skip


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_shufflev2_1_5_is_the_simkd_zoo_model():
    """ShuffleV2_1_5 of the SimKD/ATSC code: ShuffleV2's modules and names at channels 176/352/704 (+ head
    1024): 2,580,548 parameters at 100 classes (counted from that architecture; 2.58M)."""
    small, big = create_model("ShuffleV2", 100), create_model("ShuffleV2_1_5", 100)
    assert list(small.state_dict()) == list(big.state_dict())
    assert n_params(big) == 2_580_548
    assert big.layer3[0].conv3.out_channels == 352 and big.conv2.in_channels == 704


def test_shared_head_methods_read_the_last_stage_map():
    """The SimKD/ATSC code projects `feat[-2]`: MobileNetV2's last block (160 channels), ShuffleNetV2's
    layer3; kdlab's `feature` tap stays the map the classifier pools (CAM needs it)."""
    from kdlab.methods import Teacher, build_method

    for student, channels in (("MobileNetV2", 160), ("ShuffleV2", 464), ("ShuffleV2_1_5", 704)):
        torch.manual_seed(0)
        t = Teacher(create_model("resnet8", 10), model_taps("resnet8"))
        m = build_method({"name": "simkd"}, create_model(student, 10), [t], model_taps(student), (3, 32, 32))
        assert m.projectors[0].net[0].in_channels == channels


def test_zoo_is_complete():
    assert set(ZOO) <= set(list_models())


@pytest.mark.parametrize(("name", "millions"), sorted(PUBLISHED.items()))
def test_parameter_count_matches_published(name, millions):
    assert n_params(create_model(name, 100)) / 1e6 == pytest.approx(millions, rel=0.02)


@pytest.mark.parametrize("name", ZOO)
def test_output_shape_and_taps(name):
    torch.manual_seed(0)
    model = create_model(name, 100).eval()
    taps = model_taps(name)
    assert {"feature", "classifier"} <= set(taps)
    x = torch.randn(2, 3, 32, 32)
    with FeatureExtractor(model, taps.values()) as fx, torch.no_grad():
        logits, feats = fx(x)
        plain = model(x)
    assert logits.shape == (2, 100)
    torch.testing.assert_close(logits, plain)
    feature = feats[taps["feature"]]
    assert feature.ndim == 4 and feature.shape[0] == 2
    # The pre-pool map, pooled and fed through the classifier, gives the logits: the tap is the right one.
    head = dict(model.named_modules())[taps["classifier"]]
    torch.testing.assert_close(head(F.adaptive_avg_pool2d(feature, 1).flatten(1)), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "count"), [("resnet18_imagenet", 11_689_512), ("resnet34_imagenet", 21_797_672),
                        ("resnet50_imagenet", 25_557_032)],
)  # fmt: skip
def test_imagenet_resnets_have_torchvisions_exact_parameter_count_and_names(name, count):
    model = create_model(name, 1000)
    assert n_params(model) == count  # torchvision's published counts
    keys = list(model.state_dict())
    assert keys[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"] and "fc.weight" in keys
    assert "layer2.0.downsample.0.weight" in keys and "layer2.0.downsample.1.running_var" in keys
    assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_grey_input_channels():
    model = create_model("resnet8", 10, in_channels=1)
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_unknown_model_suggests_closest():
    with pytest.raises(ModelError, match="did you mean: .*resnet20"):
        create_model("resnet21", 10)
    with pytest.raises(ModelError, match="no module 'layer9'"):
        build_model("resnet8", 10, 3, taps={"feature": "layer9"})


def test_crd_checkpoint_loads_unchanged(tmp_path):
    """A RepDistiller-style `{'model': state_dict, 'epoch': …}` file loads into the same architecture."""
    torch.manual_seed(1)
    src = create_model("wrn_16_2", 100).eval()
    torch.save({"model": src.state_dict(), "epoch": 240, "accuracy": 73.2}, tmp_path / "ckpt_epoch_240.pth")
    torch.manual_seed(2)
    dst = create_model("wrn_16_2", 100).eval()
    load_weights(dst, tmp_path / "ckpt_epoch_240.pth", "fc")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(dst(x), src(x))


def test_checkpoint_of_another_architecture_names_keys(tmp_path):
    torch.save({"model": create_model("resnet8", 100).state_dict()}, tmp_path / "r8.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \[\"layer1.1.bn1"):
        load_weights(create_model("resnet20", 100), tmp_path / "r8.pth", "fc")


@pytest.mark.parametrize("wrapper", ["state_dict", "net", "model_state_dict"])
def test_checkpoints_as_they_exist_load(tmp_path, wrapper):
    """A file from before PyTorch 0.4.1 (no BatchNorm num_batches_tracked), wrapped with bookkeeping, saved from a
    DataParallel (`module.`) torch.compile'd (`_orig_mod.`) model: torch's load_state_dict accepts it, so do we."""
    torch.manual_seed(1)
    src = create_model("resnet8", 10).eval()
    old = {f"module._orig_mod.{k}": v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({wrapper: old, "best_prec1": 83.2, "epoch": 200}, tmp_path / "old.th")
    dst = create_model("resnet8", 10).eval()
    load_weights(dst, tmp_path / "old.th", "fc")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(dst(x), src(x))


def test_keys_that_really_differ_are_named_by_module(tmp_path):
    sd = create_model("resnet8", 10).state_dict()
    renamed = {k.replace("fc.", "linear.", 1) if k.startswith("fc.") else k: v for k, v in sd.items()}
    torch.save(renamed, tmp_path / "linear.pth")
    with pytest.raises(
        CheckpointError, match=r'modules only in the checkpoint: \["linear"\]; only in the model: \["fc"\]'
    ):
        load_weights(create_model("resnet8", 10), tmp_path / "linear.pth", "fc")


def test_checkpoint_with_other_class_count(tmp_path):
    torch.save({"model": create_model("resnet8", 10).state_dict()}, tmp_path / "r8.pth")
    with pytest.raises(CheckpointError, match="has 10 classes but the dataset has 100"):
        load_weights(create_model("resnet8", 100), tmp_path / "r8.pth", "fc", what="teacher")


class _Evil:
    def __reduce__(self):
        return (print, ("this ran on load",))


def test_checkpoint_that_runs_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"model": _Evil()}))
    with pytest.raises(CheckpointError, match="refusing to load") as refused:
        load_weights(create_model("resnet8", 10), path)
    assert "this ran on load" not in capsys.readouterr().out
    message = str(refused.value)
    assert "kdlab never loads such files" in message and "weights_only" not in message and "\x1b" not in message


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x00" * 50)
    with pytest.raises(CheckpointError, match="unreadable or corrupt"):
        load_weights(create_model("resnet8", 10), path)


def test_bring_your_own_model(tmp_path):
    (tmp_path / "mynet.py").write_text(
        "from torch import nn\n"
        "def build(num_classes, width=8):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))\n"
    )
    model, taps, _ = build_model(
        "custom", 7, 3, factory=f"{tmp_path}/mynet.py:build", kwargs={"width": 4},
        taps={"feature": "1", "classifier": "4"},
    )  # fmt: skip
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 7) and taps["feature"] == "1"
    with pytest.raises(ModelError, match="defines no function 'make'"):
        build_model("custom", 7, 3, factory=f"{tmp_path}/mynet.py:make")


def test_a_factory_that_raises_exits_2_naming_its_file(tmp_path, capsys):
    """A user's factory file that raises when imported, or a builder that raises when called, is the user's
    error: exit 2 with one line naming the file and the exception, not kdlab's internal error (exit 3)."""
    from kdlab.cli import main

    (tmp_path / "broken.py").write_text("import torch\nraise RuntimeError('CUDA driver too old')\n")
    (tmp_path / "raising.py").write_text("def build(num_classes):\n    return {}['width']\n")
    for factory, says in ((f"{tmp_path}/broken.py:build", "raised RuntimeError when imported: CUDA driver too old"),
                          (f"{tmp_path}/raising.py:build", "raised KeyError: 'width'")):  # fmt: skip
        rc = main(["train", "data.dataset=digits", f"student.factory={factory}",
                   f"output_dir={tmp_path}", "--dry-run"])  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert rc == 2 and says in err and factory.split(":")[0] in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("name", list_models())
def test_probed_taps_find_the_zoos_hand_written_ones(name):
    """What a factory or timm/torchvision model gets without taps in config: the last map before pooling,
    named by its outermost module, and the last Linear with K outputs — the zoo's own taps, for every zoo model."""
    from kdlab.models.external import probe_taps
    from kdlab.models.registry import model_taps

    shape = (3, 64, 64) if name.endswith("_imagenet") else (3, 32, 32)
    found = probe_taps(create_model(name, 100, 3), shape, 100)
    zoo = model_taps(name)
    assert found["feature"] == zoo["feature"] and found["classifier"] == zoo["classifier"]
    assert all(zoo[k] == v for k, v in found.items())  # stages found by name agree too
