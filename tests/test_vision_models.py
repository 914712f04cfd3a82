"""timm and torchvision models by name (`timm:NAME`, `torchvision:NAME`): the optional `vision` extra.

These tests need timm and torchvision (`make test-vision` installs them into .venv-vision: torch 2.14.1 and
torchvision 0.29.1 from this machine's disk, timm from the registry); without them they skip."""

from __future__ import annotations

import json

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
    model, taps, _ = build_model("timm:resnet18", 100, 3, image_size=(32, 32))
    assert _params(model) == _params(timm.create_model("resnet18", num_classes=100)) == 11_227_812
    assert taps == {"feature": "layer4", "classifier": "fc", "stem": "act1",
                    **{f"stage{k}": f"layer{k}" for k in range(1, 5)}}  # fmt: skip
    grey, _, _ = build_model("timm:resnet18", 10, 1, image_size=(8, 8))  # in_chans follows the data
    assert grey(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_torchvision_model_by_name_with_probed_taps():
    model, taps, _ = build_model("torchvision:mobilenet_v3_small", 10, 3, image_size=(32, 32))
    assert _params(model) == _params(tv_models.mobilenet_v3_small(num_classes=10))
    assert taps == {"feature": "features", "classifier": "classifier.3"}
    model, taps, _ = build_model("torchvision:resnet18", 100, 3, image_size=(32, 32))
    assert taps == {"feature": "layer4", "classifier": "fc", **{f"stage{k}": f"layer{k}" for k in range(1, 5)}}
    assert _params(model) == 11_227_812


def test_downloads_are_refused_and_names_checked():
    with pytest.raises(ConfigError, match="pretrained=true"):
        build_model("timm:resnet18", 10, 3, kwargs={"pretrained": True}, image_size=(32, 32))
    with pytest.raises(ModelError, match="did you mean"):
        build_model("torchvision:resnet81", 10, 3, image_size=(32, 32))


def test_a_plain_state_dict_of_a_torchvision_model_loads(tmp_path):
    source = tv_models.resnet18(num_classes=10)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    model, taps, _ = build_model("torchvision:resnet18", 10, 3, image_size=(32, 32))
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


def test_layer_decay_and_decay_filter_give_timms_own_groups():
    """A timm ViT student: kdlab's groups (parameter → weight decay, lr scale) equal timm's
    param_groups_layer_decay with the model's no_weight_decay() list, as timm's optimiser factory calls it."""
    from timm.optim import param_groups_layer_decay

    from kdlab.config import OptimConfig
    from kdlab.engine.optimizers import parameter_groups
    from kdlab.methods.base import build_method

    vit_kwargs = {"img_size": 8, "patch_size": 4, "depth": 3, "embed_dim": 32, "num_heads": 2}
    student, taps, _ = build_model("timm:vit_tiny_patch16_224", 10, 1, kwargs=vit_kwargs, image_size=(8, 8))
    method = build_method({"name": "ce"}, student, [], taps, (1, 8, 8))
    ours = parameter_groups(method, OptimConfig(name="adamw", weight_decay=0.05, layer_decay=0.65))
    theirs = param_groups_layer_decay(student, 0.05, student.no_weight_decay(), layer_decay=0.65)

    def by_param(groups):
        return {id(p): (g["weight_decay"], pytest.approx(g["lr_scale"])) for g in groups for p in g["params"]}

    assert by_param(ours) == by_param(theirs)
    assert len({g["lr_scale"] for g in ours}) == 1 + 3 + 1  # embeddings, 3 blocks, final norm + head
    head = dict(student.named_parameters())["head.weight"]
    assert by_param(ours)[id(head)] == (0.05, 1.0)  # the head learns at the full rate


TINY_VIT = {"img_size": 16, "patch_size": 4, "embed_dim": 48, "depth": 3, "num_heads": 3}  # 16 px: 16 tokens
TINY_DEIT = {"img_size": 8, "patch_size": 2, "embed_dim": 48, "depth": 2, "num_heads": 3}  # 8 px: 16 tokens
ADAMW = ["optim.name=adamw", "optim.weight_decay=0.05", "schedule.warmup_epochs=1"]


def test_a_cnn_teacher_distils_into_a_deit_distilled_student(digits_teacher, tmp_path):
    """DeiT's recipe (hard distillation through the distillation token) from the resnet14 digits teacher; the run
    evaluates and exports the mean of the two heads, as DeiT predicts."""
    from kdlab.commands.export import export_run
    from kdlab.experiment import evaluate_path, load_trained
    from kdlab.views import Normalize

    cfg = load_config(None, [*digits_overrides(tmp_path, 10), "method.name=deit", "data.batch_size=32",
                             "student.name=timm:deit_tiny_distilled_patch16_224", f"student.kwargs={TINY_DEIT}",
                             "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher}", *ADAMW,
                             "optim.lr=0.003"])  # fmt: skip
    run_dir, summary = train(cfg, log=lambda _: None)
    assert summary["last_epoch_test_acc"] > 25  # 10 classes (chance 10 %); 37.4 % on 2026-12-05
    assert evaluate_path(run_dir)["test_acc"] == pytest.approx(summary["best_test_acc"], abs=1e-6)
    export_run(run_dir, tmp_path / "export")
    program = torch.export.load(str(tmp_path / "export" / "model.pt2"))
    method, _, meta = load_trained(run_dir)
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    x = Normalize(meta["data"]["mean"], meta["data"]["std"])(images.float() / 255)
    with torch.no_grad():
        cls_dist = method.student.train()(x)  # distilled training: both heads
        method.student.eval()
        torch.testing.assert_close(program.module()(images), (cls_dist[0] + cls_dist[1]) / 2)


def test_deit_on_a_student_without_a_distillation_token_exits_2(digits_teacher, tmp_path, capsys):
    from kdlab.cli import main

    code = main(["distill", *digits_overrides(tmp_path, 1), "method.name=deit", "student.name=timm:resnet10t",
                 "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher}"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "distillation token" in err[0]


def test_a_vit_teacher_at_its_own_size_distils_into_a_cnn_at_the_datas(tmp_path):
    """A ViT trained at 16 px (2× digits' 8 px) teaches a resnet8 that sees the 8-px images: each model gets its
    own resize of the same batch, and the teacher keeps its accuracy at its own size."""
    teacher_cfg = load_config(None, [*digits_overrides(tmp_path, 15), "student.name=timm:vit_tiny_patch16_224",
                                     f"student.kwargs={TINY_VIT}", "student.input_size=16", *ADAMW,
                                     "optim.lr=0.002", "name=vit"])  # fmt: skip
    teacher_dir, teacher = train(teacher_cfg, log=lambda _: None)
    cfg = load_config(None, [*digits_overrides(tmp_path, 3), "method.name=kd", "student.name=resnet8",
                             "teacher.name=timm:vit_tiny_patch16_224", f"teacher.kwargs={TINY_VIT}",
                             "teacher.input_size=16", f"teacher.checkpoint={teacher_dir}"])  # fmt: skip
    _, summary = train(cfg, log=lambda _: None)
    assert summary["teacher_test_acc"][0] == pytest.approx(teacher["best_test_acc"], abs=1e-6)  # its best checkpoint
    assert teacher["last_epoch_test_acc"] > 30 and summary["last_epoch_test_acc"] > 30  # chance: 10 %


def _rgb_folder(root, size=40, per_class=3, classes=4):
    """An image-folder dataset of random RGB PNGs, `classes` classes, `size` px square."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / f"c{c}" / f"{i}.png")
    return f"imagefolder:{root}"


def test_eval_with_pretrained_path_gives_timms_logits_and_records_its_preprocessing(tmp_path):
    """`pretrained=PATH` (a weights file made here, 4 classes) gives the logits of timm's own loading path,
    timm.create_model(pretrained=True, pretrained_cfg_overlay=dict(file=PATH)), with timm's own eval transform
    (resize to 224 / 0.95, center crop 224, bicubic, ImageNet mean/std) on the same 40-px PNGs; `kdlab eval`
    records that preprocessing and reaches the same accuracy."""
    from timm.data import create_transform, resolve_data_config
    from torchvision.transforms.functional import to_pil_image

    from kdlab.config import ModelConfig
    from kdlab.data import load_dataset
    from kdlab.experiment import evaluate_model
    from kdlab.models.build import build_configured_model
    from kdlab.views import Normalize, to_unit

    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", num_classes=4).state_dict(), weights)
    spec = _rgb_folder(tmp_path / "rgb")
    data = load_dataset(spec)
    images = data.test.images
    ref_model = timm.create_model(
        "resnet18", num_classes=4, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights), num_classes=4)
    ).eval()
    transform = create_transform(**resolve_data_config(model=ref_model))
    with torch.no_grad():
        ref = ref_model(torch.stack([transform(to_pil_image(im)) for im in images]))
    mcfg = ModelConfig(name="timm:resnet18", pretrained=str(weights))
    built = build_configured_model(mcfg, 4, data.image_shape, data.mean, data.std, "model")
    with torch.no_grad():
        ours = built.model.eval()(Normalize(data.mean, data.std)(to_unit(images)))
    # PIL rounds its resized image to uint8, kdlab resizes floats: within that rounding of one logit scale
    assert (ours - ref).abs().max() < 0.02 * ref.abs().max()
    assert torch.equal(ours.argmax(1), ref.argmax(1))
    result = evaluate_model(mcfg, spec, device="cpu")
    assert result["normalize"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert (result["input_size"], result["input_resize"], result["input_crop_pct"]) == ([224, 224], "bicubic", 0.95)
    labels = data.test.labels
    assert result["test_acc"] == pytest.approx(100 * (ref.argmax(1) == labels).float().mean().item())


def test_pretrained_from_the_librarys_cache_and_a_one_line_error_without_it(tmp_path, monkeypatch, capsys):
    """pretrained=true reads timm's Hugging Face cache and torchvision's torch hub cache, laid out here as the
    libraries lay them out; with an empty cache the run exits 2 naming what to fetch and where, and nothing is
    downloaded. A 1000-class head on 4-class data: a student starts a fresh head (fine-tuning), a teacher is
    refused in one line."""
    from kdlab.cli import main
    from kdlab.config import ModelConfig
    from kdlab.data import load_dataset
    from kdlab.experiment import build_teacher
    from kdlab.models.build import build_configured_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    spec = _rgb_folder(tmp_path / "rgb", size=16)
    data = load_dataset(spec)
    rc = main(["eval", "--model", "timm:resnet18", "--pretrained", "--data", spec])
    err = capsys.readouterr().err
    assert rc == 2 and "timm/resnet18.a1_in1k" in err and str(tmp_path / "hf") in err and len(err.splitlines()) == 1
    # timm's cache layout: models--timm--resnet18.a1_in1k/snapshots/<rev>/model.safetensors + refs/main
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("resnet18")
    repo = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    save_file(source.state_dict(), str(repo / "snapshots" / "abc" / "model.safetensors"))
    student = build_configured_model(ModelConfig(name="timm:resnet18", pretrained=True), 4, (3, 16, 16),
                                     data.mean, data.std, "student")  # fmt: skip
    assert torch.equal(student.model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert student.fresh_head == ["fc.weight"] and student.model.fc.out_features == 4
    with pytest.raises(ConfigError, match="random head"):
        build_teacher(ModelConfig(name="timm:resnet18", pretrained=True), data, "teacher")
    # torchvision: the weights enum's file in TORCH_HOME/hub/checkpoints
    rc = main(["eval", "--model", "torchvision:resnet18", "--pretrained", "--data", spec])
    err = capsys.readouterr().err
    assert rc == 2 and "resnet18-f37072fd.pth" in err and str(tmp_path / "torch") in err
    tv_source = tv_models.resnet18()
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(tv_source.state_dict(), tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    tv = build_configured_model(ModelConfig(name="torchvision:resnet18", pretrained=True), 4, (3, 16, 16),
                                data.mean, data.std, "student")  # fmt: skip
    assert torch.equal(tv.model.conv1.weight, tv_source.conv1.weight) and tv.fresh_head == ["fc.weight", "fc.bias"]


def test_a_pretrained_vit_teacher_records_its_own_normalisation_in_the_run(tmp_path):
    """vit_tiny_patch16_224.augreg_in21k_ft_in1k normalises with 0.5 / 0.5, not ImageNet's statistics: a run
    distilling from it (its weights file, 4 classes, at its own 224 px) into resnet8 at the data's 16 px writes
    that into config.yaml."""
    import yaml

    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    weights = tmp_path / "vit.pth"
    torch.save(timm.create_model(name, num_classes=4, depth=2).state_dict(), weights)
    spec = _rgb_folder(tmp_path / "rgb", size=16)
    cfg = load_config(None, [f"data.dataset={spec}", "data.batch_size=4", "schedule.epochs=1", "student.name=resnet8",
                             f"teacher.name=timm:{name}", f"teacher.pretrained={weights}", "teacher.kwargs={depth: 2}",
                             "method.name=kd", f"output_dir={tmp_path}", "engine.progress=false",
                             "engine.report=false"])  # fmt: skip
    run_dir, summary = train(cfg, log=lambda _: None)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["teacher"]
    assert saved["normalize"] == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert (saved["input_size"], saved["input_resize"], saved["input_crop_pct"]) == ([224, 224], "bicubic", 0.9)
    assert summary["epochs_done"] == 1


def _method_names() -> list[str]:
    from kdlab.methods import METHODS

    return [n for n in METHODS.names() if n != "deit"]  # deit: its own tests above


VIT_8PX = {"img_size": 8, "patch_size": 2, "embed_dim": 32, "depth": 4, "num_heads": 2}  # digits' 8 px: 4×4 tokens


@pytest.fixture(scope="module")
def tiny_teachers(tmp_path_factory):
    """Untrained weights files: a tiny ViT and a resnet8 for digits (what is tested is that each pair runs)."""
    from kdlab.models import create_model

    root = tmp_path_factory.mktemp("teachers")
    torch.manual_seed(0)
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=10, in_chans=1, **VIT_8PX).state_dict(),
               root / "vit.pth")  # fmt: skip
    torch.save(create_model("resnet8", 10, 1).state_dict(), root / "resnet8.pth")
    return root


@pytest.mark.parametrize("pair", ["cnn->vit", "vit->cnn", "vit->vit"])
@pytest.mark.parametrize("method", _method_names())
def test_every_method_with_a_vit_trains_or_exits_2_in_one_line(method, pair, tiny_teachers, tmp_path, capsys):
    """Every method, with a ViT student, teacher or both (tokens without the class token become (B, C, 4, 4)
    maps where a method reads maps): it trains one epoch, or stops with exit 2 and one line saying why. Never an
    internal error (exit 3)."""
    from kdlab.cli import main

    vit = ["timm:vit_tiny_patch16_224", json.dumps(VIT_8PX)]
    teacher, student = pair.split("->")
    t = (
        ["teacher.name=" + vit[0], "teacher.kwargs=" + vit[1], f"teacher.checkpoint={tiny_teachers / 'vit.pth'}"]
        if teacher == "vit"
        else ["teacher.name=resnet8", f"teacher.checkpoint={tiny_teachers / 'resnet8.pth'}"]
    )
    s = ["student.name=" + vit[0], "student.kwargs=" + vit[1]] if student == "vit" else ["student.name=resnet8"]
    extra = {"crd": ["method.nce_k=32"], "mlkd": ["views.strong=randaugment"]}.get(method, [])
    rc = main(["distill", *digits_overrides(tmp_path, 1), "data.train_per_class=8", "data.test_per_class=4",
               f"method.name={method}", *t, *s, *extra])  # fmt: skip
    err = capsys.readouterr().err.strip()
    refused = REFUSED.get((method, pair))
    if refused is None:
        assert rc == 0, f"exit {rc}: {err}"
    else:
        assert rc == 2 and len(err.splitlines()) == 1 and refused in err, f"exit {rc}: {err}"


# What cannot mean anything on a ViT, and the line that says why: OFD and ReviewKD read pre-activation maps
# (a BatchNorm before a ReLU), which a transformer block has not; KDSVD matches singular vectors along the
# map's width, which a 4×4 token grid and resnet8's 8-wide first stage do not share; a shared head (SimKD, ATSC)
# reuses the teacher's classifier on its pooled map, which a class-token ViT's classifier never read.
REFUSED = {
    **{("ofd", p): "pre-activation taps" for p in ("cnn->vit", "vit->cnn", "vit->vit")},
    **{("reviewkd", p): "declares no tap" for p in ("vit->cnn", "vit->vit")},
    **{("kdsvd", p): "along the map's width" for p in ("cnn->vit", "vit->cnn")},
    **{(m, p): "class token" for m in ("simkd", "atsc") for p in ("vit->cnn", "vit->vit")},
}


def test_vit_tokens_are_read_as_patch_maps():
    """The taps probed on a timm ViT (class token), a DeiT-distilled one (class + distillation tokens) and a
    torchvision ViT: the feature is the final norm's tokens and four stages are evenly spaced blocks; each reads
    as (B, C, h, w) of the patch tokens alone, in row-major patch order."""
    from kdlab.models.features import FeatureExtractor
    from kdlab.models.loading import build_model

    x = torch.randn(2, 1, 8, 8)
    for name, prefix in (("vit_tiny_patch16_224", 1), ("deit_tiny_distilled_patch16_224", 2)):
        model, taps, _ = build_model(f"timm:{name}", 10, 1, kwargs=VIT_8PX, image_size=(8, 8))
        assert taps["feature"] == "norm" and taps["stem"] == "patch_embed"
        assert [taps[f"stage{k}"] for k in range(1, 5)] == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
        model.eval()
        with FeatureExtractor(model, [taps["feature"], "patch_embed"]) as fx:
            _, feats = fx(x)
        tokens = model.forward_features(x)  # (2, prefix + 16, 32)
        assert tokens.shape[1] == prefix + 16
        expected = tokens[:, prefix:].reshape(2, 4, 4, 32).permute(0, 3, 1, 2)
        assert torch.allclose(feats["norm"], expected) and feats["patch_embed"].shape == (2, 32, 4, 4)
    model, taps, _ = build_model("torchvision:vit_b_16", 10, 3, kwargs={"image_size": 32}, image_size=(32, 32))
    assert taps["feature"] == "encoder" and taps["stem"] == "conv_proj"
    assert [taps[f"stage{k}"] for k in range(1, 5)] == [f"encoder.layers.encoder_layer_{i}" for i in (2, 5, 8, 11)]
    with FeatureExtractor(model.eval(), ["encoder"]) as fx:
        _, feats = fx(torch.randn(2, 3, 32, 32))
    assert feats["encoder"].shape == (2, 768, 2, 2)
    with pytest.raises(ModelError, match="patch_size"):  # the library's own TypeError, as the user's error
        build_model("torchvision:vit_b_16", 10, 3, kwargs={"patch_size": 2}, image_size=(32, 32))


def test_kdlab_train_fine_tunes_a_pretrained_model_with_a_fresh_head(tmp_path, capsys):
    """`kdlab train` with student.pretrained=PATH (a 7-class weights file) on 4-class data: the body starts from
    the file (at lr 1e-9 it stays there), the head is new and sized for the data, and the run says so."""
    from kdlab.checkpoint import load_tensors
    from kdlab.cli import main

    torch.manual_seed(0)
    source = timm.create_model("resnet10t", num_classes=7)
    torch.save(source.state_dict(), tmp_path / "r10t.pth")
    spec = _rgb_folder(tmp_path / "rgb", size=16)
    rc = main(["train", f"data.dataset={spec}", "data.batch_size=8", "schedule.epochs=1", "optim.lr=1e-9",
               "optim.weight_decay=0", "student.name=timm:resnet10t", f"student.pretrained={tmp_path / 'r10t.pth'}",
               "student.input_size=16", f"output_dir={tmp_path}", "name=ft", "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "head (fc.weight) starts fresh for the data's 4 classes" in out
    weights, _ = load_tensors(tmp_path / "ft" / "checkpoints" / "last.safetensors")
    body = weights["model.student.conv1.0.weight"]
    assert torch.allclose(body, source.conv1[0].weight, atol=1e-6)
    assert weights["model.student.fc.weight"].shape == (4, source.fc.in_features)
