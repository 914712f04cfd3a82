"""The training presets released with Guo et al., "Why does Knowledge Distillation work? Rethink its attention
and fidelity mechanism" (arXiv 2405.00739; data_loader/DataLoaderCIFAR.py, DataLoaderImageNet.py): timm's
RandAugment and torchvision's ColorJitter as that release runs them on Pillow images, re-typed here with Pillow
on small inputs and compared with kdlab's batched ops; then the presets' composition."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from kdlab.views import StandardView, build_view
from kdlab.views import image_ops as O
from kdlab.views.jitter import JITTER_OPS, color_jitter_u8, jitter_draws
from kdlab.views.policies import TIMM_SPACE, FusedTimmRandom, mean_fill

# ---------------------------------------------------------------- timm's RandAugment, re-typed (nearest resampling)
MAX_LEVEL = 10.0
FILL = (124, 116, 104)  # the release's ImageNet mean, min(255, round(255·m))


def _negate(v: float, negative: bool) -> float:
    return -v if negative else v


def release_arg(name: str, level: float, negative: bool, size: int) -> float:
    """timm's *_level_to_arg for the ops of its `_RAND_TRANSFORMS` (PosterizeTpu, TranslateXRel/YRel)."""
    if name == "rotate":
        return _negate(level / MAX_LEVEL * 30.0, negative)
    if name == "posterize":
        return int(level / MAX_LEVEL * 4)
    if name == "solarize":
        return int(level / MAX_LEVEL * 256)
    if name == "solarize_add":
        return int(level / MAX_LEVEL * 110)
    if name in ("color", "contrast", "brightness", "sharpness"):
        return level / MAX_LEVEL * 1.8 + 0.1
    if name in ("shear_x", "shear_y"):
        return _negate(level / MAX_LEVEL * 0.3, negative)
    if name in ("translate_x", "translate_y"):
        return _negate(level / MAX_LEVEL * 0.45, negative) * size  # pct × img.size
    return 0.0


def release_op(name: str, img: Image.Image, arg: float) -> Image.Image:
    """timm's op functions, with resample=NEAREST (kdlab does not model timm's random bilinear/bicubic)."""
    kw = {"fillcolor": FILL, "resample": Image.NEAREST}
    if name == "shear_x":
        return img.transform(img.size, Image.AFFINE, (1, arg, 0, 0, 1, 0), **kw)
    if name == "shear_y":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, arg, 1, 0), **kw)
    if name == "translate_x":
        return img.transform(img.size, Image.AFFINE, (1, 0, arg, 0, 1, 0), **kw)
    if name == "translate_y":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, arg), **kw)
    if name == "rotate":
        return img.rotate(arg, **kw)
    if name == "auto_contrast":
        return ImageOps.autocontrast(img)
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "invert":
        return ImageOps.invert(img)
    if name == "posterize":
        if int(arg) == 0:  # Pillow before 10 kept 0 bits (black); today's refuses bits < 1 (level < 2.5)
            return img.point([0] * 768)
        return img if arg >= 8 else ImageOps.posterize(img, int(arg))
    if name == "solarize":
        return ImageOps.solarize(img, arg)
    if name == "solarize_add":
        lut = [min(255, i + int(arg)) if i < 128 else i for i in range(256)]
        return img.point(lut * 3)
    enhance = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
               "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}  # fmt: skip
    return enhance[name](img).enhance(arg)


def _images(n: int = 6, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _pil(u: torch.Tensor) -> Image.Image:
    return Image.fromarray(u.permute(1, 2, 0).numpy())


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


@pytest.mark.parametrize("name", TIMM_SPACE)
@pytest.mark.parametrize("level", [0.0, 3.7, 9.2, 10.0])
def test_timm_randaugment_ops_match_the_release_on_pillow(name, level):
    size = 16
    fused = FusedTimmRandom(size, 1, level, 0.0, O.Semantics(fill=FILL))
    pick = torch.full((2,), TIMM_SPACE.index(name))
    negative = torch.tensor([False, True])
    args = fused.arguments(pick, torch.full((2,), level, dtype=torch.float64), negative)
    for k in range(2):
        expected = release_arg(name, level, bool(negative[k]), size)
        assert float(args[k]) == pytest.approx(expected, abs=1e-12)
    u = _images(2, size)
    ours = O.apply_grouped(u.clone(), fused.op_index[pick], args, None, O.Semantics(fill=FILL))
    for k in range(2):
        theirs = _tensor(release_op(name, _pil(u[k]), release_arg(name, level, bool(negative[k]), size)))
        assert torch.equal(ours[k], theirs), (name, level, k)


def test_timm_randaugment_draws_as_the_release(monkeypatch):
    """Per sample and layer: op uniform over the 15 (with replacement), applied with probability ½, level
    N(m, mstd) clipped to 0…10, signed ops negated with probability ½."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    monkeypatch.setattr(O, "apply_grouped", lambda u, op, v, pre, sem: seen.append((op.numpy(), v.numpy())) or u)
    fused = FusedTimmRandom(32, 2, 10.0, 0.5, O.PILLOW)
    fused.run(_images(20000, 2), torch.Generator().manual_seed(0), False)
    assert len(seen) == 2  # n = 2 layers
    op, value = np.concatenate([s[0] for s in seen]), np.concatenate([s[1] for s in seen])
    applied = op >= 0
    assert applied.mean() == pytest.approx(0.5, abs=0.01)
    counts = np.bincount([fused.op_index.tolist().index(o) for o in op[applied]], minlength=15)
    assert counts.min() / counts.max() > 0.85  # uniform over the 15 ops
    rot = op == O.NAMES.index("rotate")
    level = np.abs(value[rot]) / 30 * MAX_LEVEL
    assert level.max() <= 10.0 + 1e-9 and (level == 10.0).mean() == pytest.approx(0.5, abs=0.05)  # clipped half
    assert np.std(level[level < 10]) == pytest.approx(0.5 * 0.6, abs=0.05)  # a half-normal's spread (σ·0.60)
    assert (value[rot] < 0).mean() == pytest.approx(0.5, abs=0.05)
    exact = FusedTimmRandom(32, 1, 7.0, 0.0, O.PILLOW)
    seen.clear()
    exact.run(_images(2000, 2), torch.Generator().manual_seed(1), False)
    op, value = seen[0]
    assert np.allclose(np.abs(value[op == O.NAMES.index("rotate")]), 21.0)  # mstd 0: exactly m


def test_timm_randaugment_fills_with_the_dataset_mean():
    mean = (0.485, 0.456, 0.406)
    assert mean_fill(mean) == FILL
    view = build_view("randaugment", {"scale": "timm", "n": 1, "m": 10}, 16, mean)
    out = view(torch.full((400, 3, 16, 16), 1.0), torch.Generator().manual_seed(0)).images
    # translated/sheared/rotated images show the fill at their borders; white never becomes the fill otherwise
    hit = (out * 255).round().to(torch.int64) == torch.tensor(FILL).view(1, 3, 1, 1)
    assert hit.all(1).any()
    grey = build_view("randaugment", {"scale": "timm", "n": 1, "m": 10, "ops": "release"}, 16, mean)
    assert grey.fused.semantics == O.RELEASE


def test_randaugment_scale_and_mstd_are_explicit():
    from kdlab.errors import ConfigError

    assert isinstance(build_view("randaugment", {"scale": "timm", "m": 10}, 16).fused, FusedTimmRandom)
    assert build_view("randaugment", {"m": 10}, 16).fused.bins == [10]  # torchvision's bin 10 of 0…30
    with pytest.raises(ConfigError, match="0 ≤ m ≤ 10"):
        build_view("randaugment", {"scale": "timm", "m": 11}, 16)
    with pytest.raises(ConfigError, match="scale=timm"):
        build_view("randaugment", {"mstd": 0.5}, 16)


# ---------------------------------------------------------------- torchvision's ColorJitter on Pillow images


def release_jitter(img: Image.Image, factors: np.ndarray, order: np.ndarray) -> Image.Image:
    """torchvision's ColorJitter on a PIL image with the drawn factors and order: F.adjust_brightness /
    adjust_contrast / adjust_saturation, which are ImageEnhance.Brightness / Contrast / Color."""
    enhance = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
    for j in order:
        img = enhance[j](img).enhance(float(factors[j]))
    return img


def test_color_jitter_matches_torchvision_on_pillow():
    u = _images(8, 12, seed=3)
    factors, order = jitter_draws(8, (0.4, 0.4, 0.4), torch.Generator().manual_seed(0), u.device, False)
    assert factors.min() >= 0.6 and factors.max() <= 1.4
    ours = color_jitter_u8(u.clone(), factors, order, torch.zeros(3, dtype=torch.bool))
    for k in range(8):
        assert torch.equal(ours[k], _tensor(release_jitter(_pil(u[k]), factors[k].numpy(), order[k].tolist())))


def test_color_jitter_draws_every_order_and_uniform_factors():
    factors, order = jitter_draws(6000, (0.4, 0.2, 0.0), torch.Generator().manual_seed(0), torch.device("cpu"), False)
    factors, order = factors.numpy(), order.numpy()
    orders = {tuple(o) for o in order.tolist()}
    assert len(orders) == 6  # all permutations of the three ops
    assert (
        factors[:, 0].min() >= 0.6 and factors[:, 0].max() <= 1.4 and factors[:, 0].mean() == pytest.approx(1, abs=0.01)
    )
    assert factors[:, 1].min() >= 0.8 and factors[:, 1].max() <= 1.2
    assert np.all(factors[:, 2] == 1.0)  # a spread of 0 leaves the op out
    assert JITTER_OPS == ("brightness", "contrast", "color")


# ---------------------------------------------------------------- the presets


def _parts(view: StandardView) -> list[object]:
    return [getattr(m, "view", m) for m in view.ops]  # type: ignore[union-attr]


def test_cifar_presets_are_the_released_cifar_transforms():
    strong = _parts(StandardView("strong", 32, mean=(0.5, 0.5, 0.5)))
    names = [type(p).__name__ for p in strong]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "AutoAugmentView", "Cutout"]
    crop, _, aa, cutout = strong
    assert crop._param_generator.scale == (0.2, 1.0) and "BICUBIC" in str(crop.flags["resample"]).upper()
    assert aa.policy_name == "cifar10" and aa.fused.semantics == O.PILLOW  # the Pillow CIFAR10Policy, grey fill
    assert cutout.params.ops == "pillow" and cutout.params.size == round(16 * 32 / 224)  # black, before Normalize
    weak = [type(p).__name__ for p in _parts(StandardView("weak", 32))]
    assert weak == ["RandomResizedCrop", "RandomHorizontalFlip", "RandomRotation"]


def test_imagenet_presets_are_the_released_imagenet_transforms():
    mean = (0.485, 0.456, 0.406)
    strong = _parts(StandardView("strong", 64, mean=mean))  # auto: > 32 px is the ImageNet family
    names = [type(p).__name__ for p in strong]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "RandAugmentView"]
    crop, _, jitter, ra = strong
    assert crop._param_generator.scale == (0.08, 1.0)
    assert (jitter.params.brightness, jitter.params.contrast, jitter.params.saturation) == (0.4, 0.4, 0.4)
    assert isinstance(ra.fused, FusedTimmRandom) and (ra.fused.n, ra.fused.m, ra.fused.mstd) == (2, 10.0, 0.5)
    assert ra.dataset_mean == mean
    weak = [type(p).__name__ for p in _parts(StandardView("weak", 32, family="imagenet"))]
    assert weak == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter"]


def test_preset_family_is_checked_and_runs_end_to_end():
    from kdlab.errors import ConfigError

    with pytest.raises(ConfigError, match="auto, cifar, imagenet"):
        StandardView("strong", 32, family="svhn")
    random.seed(0)
    torch.manual_seed(0)
    out = StandardView("strong", 32, family="imagenet", mean=(0.5, 0.5, 0.5)).train()(_images(8, 32))
    assert out.shape == (8, 3, 32, 32) and float(out.min()) >= 0 and float(out.max()) <= 1


# ---------------------------------------------------------------- the CIFAR10 AutoAugment policy of both releases

# (p1, op1, level1, p2, op2, level2): the CIFAR10Policy both Wang et al.'s and Guo et al.'s releases run
# (DataLoaderCIFAR.py), re-typed with kdlab's op names
RELEASE_CIFAR10 = [
    (0.1, "invert", 7, 0.2, "contrast", 6), (0.7, "rotate", 2, 0.3, "translate_x", 9),
    (0.8, "sharpness", 1, 0.9, "sharpness", 3), (0.5, "shear_y", 8, 0.7, "translate_y", 9),
    (0.5, "auto_contrast", 8, 0.9, "equalize", 2), (0.2, "shear_y", 7, 0.3, "posterize", 7),
    (0.4, "color", 3, 0.6, "brightness", 7), (0.3, "sharpness", 9, 0.7, "brightness", 9),
    (0.6, "equalize", 5, 0.5, "equalize", 1), (0.6, "contrast", 7, 0.6, "sharpness", 5),
    (0.7, "color", 7, 0.5, "translate_x", 8), (0.3, "equalize", 7, 0.4, "auto_contrast", 8),
    (0.4, "translate_y", 3, 0.2, "sharpness", 6), (0.9, "brightness", 6, 0.2, "color", 8),
    (0.5, "solarize", 2, 0.0, "invert", 3), (0.2, "equalize", 0, 0.6, "auto_contrast", 0),
    (0.2, "equalize", 8, 0.6, "equalize", 4), (0.9, "color", 9, 0.6, "equalize", 6),
    (0.8, "auto_contrast", 4, 0.2, "solarize", 8), (0.1, "brightness", 3, 0.7, "color", 0),
    (0.4, "solarize", 5, 0.9, "auto_contrast", 3), (0.9, "translate_y", 9, 0.7, "translate_y", 9),
    (0.9, "auto_contrast", 2, 0.8, "solarize", 3), (0.8, "equalize", 8, 0.1, "invert", 3),
    (0.7, "translate_y", 9, 0.9, "auto_contrast", 1),
]  # fmt: skip
RELEASE_RANGES = {  # SubPolicy's `ranges`: np.linspace over levels 0…9
    "shear_x": np.linspace(0, 0.3, 10), "shear_y": np.linspace(0, 0.3, 10),
    "translate_x": np.linspace(0, 150 / 331, 10), "translate_y": np.linspace(0, 150 / 331, 10),
    "rotate": np.linspace(0, 30, 10), "color": np.linspace(0.0, 0.9, 10),
    "posterize": np.round(np.linspace(8, 4, 10), 0).astype(np.int64), "solarize": np.linspace(256, 0, 10),
    "contrast": np.linspace(0.0, 0.9, 10), "sharpness": np.linspace(0.0, 0.9, 10),
    "brightness": np.linspace(0.0, 0.9, 10),
}  # fmt: skip


def test_cifar10_policy_is_the_released_table_with_its_magnitudes():
    view = build_view("autoaugment", {"policy": "cifar10", "ops": "pillow"}, 32)
    fused = view.fused
    assert fused.n_sub == len(RELEASE_CIFAR10)
    for s, (p1, n1, l1, p2, n2, l2) in enumerate(RELEASE_CIFAR10):
        for slot, (p, name, level) in enumerate([(p1, n1, l1), (p2, n2, l2)]):
            entry = (s * 2 + slot) * 2  # its positive-sign entry
            assert fused.entry_op[entry] == O.NAMES.index(name), (s, slot)
            assert fused.entry_prob[entry] == pytest.approx(p), (s, slot)
            if name in RELEASE_RANGES:
                expected = float(RELEASE_RANGES[name][level]) * (32 if name.startswith("translate") else 1)
                if name == "solarize":
                    expected = float(int(expected))
                if name in O.FACTOR_OPS:
                    expected += 1  # the release enhances by 1 ± magnitude
                assert fused.entry_value[entry] == pytest.approx(expected, abs=1e-6), (s, slot, name)


def test_kdlabs_autoaugment_tables_are_korniass_published_ones():
    tables = pytest.importorskip("kornia.augmentation.auto.autoaugment.autoaugment")
    from kdlab.views.autoaugment_policies import POLICIES

    for name, ours in POLICIES.items():
        theirs = [tuple(tuple(op) for op in sub) for sub in getattr(tables, f"{name}_policy")]
        assert theirs == ours, name
