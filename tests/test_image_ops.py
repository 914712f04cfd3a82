"""kdlab's batched AutoAugment ops (uint8) against Pillow, the library the AutoAugment reference code used."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from kdlab.views import build_view
from kdlab.views import image_ops as O


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    arr[0] //= 3  # a low-contrast image, where autocontrast and equalize do most
    arr[1] = 17 + arr[1] % 200  # a range autocontrast stretches by a non-integer factor (Pillow truncates)
    return arr, torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _pil(arr, fn):
    return torch.from_numpy(np.stack([np.asarray(fn(Image.fromarray(a))) for a in arr])).permute(0, 3, 1, 2)


def _affine(m):
    return lambda img: img.transform(img.size, Image.Transform.AFFINE, m, fillcolor=(128, 128, 128))


def _enhance(kind, factor):
    return lambda img: kind(img).enhance(factor)


def _full(value):
    return torch.full((6,), value)


EXACT = [
    ("invert", lambda u: O.invert(u, _full(0.0)), ImageOps.invert),
    ("equalize", lambda u: O.equalize(u, _full(0.0)), ImageOps.equalize),
    ("auto_contrast", lambda u: O.auto_contrast(u, _full(0.0)), ImageOps.autocontrast),
    ("posterize", lambda u: O.posterize(u, _full(3)), lambda i: ImageOps.posterize(i, 3)),
    ("solarize", lambda u: O.solarize(u, _full(100.0)), lambda i: ImageOps.solarize(i, 100)),
    ("translate_x", lambda u: O.translate_x(u, _full(5.0)), _affine((1, 0, 5, 0, 1, 0))),
    ("translate_y", lambda u: O.translate_y(u, _full(-7.0)), _affine((1, 0, 0, 0, 1, -7))),
    ("shear_x", lambda u: O.shear_x(u, _full(0.3)), _affine((1, 0.3, 0, 0, 1, 0))),
    ("shear_y", lambda u: O.shear_y(u, _full(-0.2)), _affine((1, 0, 0, -0.2, 1, 0))),
] + [
    (f"{name}-{f}", lambda u, name=name, f=f: O.OPS[name][0](u, _full(f)), _enhance(kind, f))
    for name, kind in [("brightness", ImageEnhance.Brightness), ("color", ImageEnhance.Color),
                       ("contrast", ImageEnhance.Contrast), ("sharpness", ImageEnhance.Sharpness)]
    for f in (0.3, 1.0, 1.13, 1.7)
]  # fmt: skip


@pytest.mark.parametrize(("name", "ours", "ref"), EXACT, ids=[e[0] for e in EXACT])
def test_op_equals_pillow_exactly(images, name, ours, ref):
    arr, u = images
    out = ours(u)
    assert out.dtype == torch.uint8 and torch.equal(out, _pil(arr, ref))


@pytest.mark.parametrize("name", ["color", "sharpness"])
def test_blend_ops_write_in_place_as_they_return(images, name):
    """apply_grouped has color and sharpness write into the sorted batch (out=u): same bytes as a new tensor."""
    _, u = images
    fn, f = O.OPS[name][0], _full(1.7)
    expected = fn(u, f)
    inplace = u.clone()
    assert fn(inplace, f, out=inplace) is inplace and torch.equal(inplace, expected)
    other = torch.zeros_like(u)
    assert torch.equal(fn(u, f, out=other), expected) and not torch.equal(expected, u)


def test_sharpness_of_images_without_an_interior_is_pillows_identity():
    arr = np.random.default_rng(2).integers(0, 256, (3, 2, 5, 3), dtype=np.uint8)  # 2 × 5 px
    u = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    ref = torch.from_numpy(np.stack([np.asarray(ImageEnhance.Sharpness(Image.fromarray(a)).enhance(1.8)) for a in arr]))
    assert torch.equal(O.sharpness(u, torch.full((3,), 1.8)), ref.permute(0, 3, 1, 2)) and torch.equal(
        ref, torch.from_numpy(arr)
    )


@pytest.mark.parametrize("angle", [20.0, -7.5, 30.0, 90.0])
def test_rotate_equals_pillow_exactly(images, angle):
    """Pillow resamples rotations in 16.16 fixed point; affine_index does the same, so even ties agree."""
    arr, u = images
    assert torch.equal(O.rotate(u, _full(angle)), _pil(arr, lambda i: i.rotate(angle, fillcolor=(128, 128, 128))))


@pytest.mark.parametrize("factor", [0.111, 0.2, -0.3, 0.0333])
def test_shears_equal_pillow_exactly_where_a_float_nudge_would_not(images, factor):
    arr, u = images
    assert torch.equal(O.shear_x(u, _full(factor)), _pil(arr, _affine((1, factor, 0, 0, 1, 0))))
    assert torch.equal(O.shear_y(u, _full(factor)), _pil(arr, _affine((1, 0, 0, factor, 1, 0))))
    assert torch.equal(O.translate_x(u, _full(factor * 10)), _pil(arr, _affine((1, 0, factor * 10, 0, 1, 0))))


def test_grey_images_follow_pillows_L_mode():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (4, 16, 16), dtype=np.uint8)
    u = torch.from_numpy(arr).unsqueeze(1)
    for name, kind in [("contrast", ImageEnhance.Contrast), ("color", ImageEnhance.Color)]:
        ref = np.stack([np.asarray(kind(Image.fromarray(a)).enhance(1.6)) for a in arr])
        assert torch.equal(O.OPS[name][0](u, torch.full((4,), 1.6)), torch.from_numpy(ref).unsqueeze(1)), name
    ref = np.stack([np.asarray(ImageOps.equalize(Image.fromarray(a))) for a in arr])
    assert torch.equal(O.equalize(u, torch.zeros(4)), torch.from_numpy(ref).unsqueeze(1))


def test_fused_autoaugment_is_per_sample_deterministic_and_grey_safe():
    x = torch.randint(0, 256, (64, 3, 16, 16), generator=torch.Generator().manual_seed(0)).float() / 255
    view = build_view("autoaugment", {}, 16)
    a = view(x, torch.Generator().manual_seed(1)).images
    b = view(x, torch.Generator().manual_seed(1)).images
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    changed = (a - x).abs().flatten(1).amax(1) > 0
    assert 0.5 < changed.float().mean() < 1.0  # most samples changed, some drew gated-off ops
    grey = view(x[:, :1], torch.Generator().manual_seed(1)).images
    assert grey.shape == (64, 1, 16, 16)
    same = build_view("autoaugment", {"per_batch_compat": True}, 16)(x, torch.Generator().manual_seed(2)).images
    assert same.shape == x.shape


def test_random_policy_magnitudes_follow_torchvisions_31_bin_spaces():
    assert O.bin_magnitude("posterize", 30, "standard", 32) == 4 and O.bin_magnitude("posterize", 30, "wide", 32) == 2
    assert O.bin_magnitude("posterize", 0, "standard", 32) == 8
    assert O.bin_magnitude("translate_x", 30, "standard", 32) == pytest.approx(150 / 331 * 32)
    assert O.bin_magnitude("translate_x", 30, "wide", 32) == 32.0 and O.bin_magnitude("rotate", 15, "wide", 32) == 67.5
    assert O.bin_magnitude("solarize", 0, "standard", 32) == 255 and O.bin_magnitude("solarize", 30, "wide", 32) == 0
    assert O.bin_magnitude("sharpness", 10, "standard", 32) == pytest.approx(0.3)


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment"])
def test_fused_random_policies_are_deterministic_and_mostly_change_images(name):
    x = torch.randint(0, 256, (256, 3, 16, 16), generator=torch.Generator().manual_seed(0)).float() / 255
    view = build_view(name, {}, 16)
    a = view(x, torch.Generator().manual_seed(3)).images
    assert torch.equal(a, view(x, torch.Generator().manual_seed(3)).images)
    unchanged = ((a - x).abs().flatten(1).amax(1) == 0).float().mean()
    # identity is 1 of 14 choices per layer (RandAugment: 2 layers → ~1/196 untouched; TrivialAugment ~1/14,
    # plus ops that do nothing at their drawn magnitude, e.g. bin 0)
    assert unchanged < (0.05 if name == "randaugment" else 0.2)
    assert build_view(name, {"impl": "kornia"}, 16)(x[:8]).images.shape == (8, 3, 16, 16)


def test_grouped_ops_equal_the_ops_one_by_one():
    """apply_grouped (one resampling for the geometric ops, one gather for the table ops) gives what each op
    gives alone, bitwise."""
    g = torch.Generator().manual_seed(5)
    u = torch.randint(0, 256, (75, 3, 16, 16), generator=g, dtype=torch.uint8)
    op = torch.cat([torch.arange(14).repeat_interleave(5), torch.full((5,), -1)])[torch.randperm(75, generator=g)]
    params = {"posterize": 3.0, "solarize": 100.0, "translate_x": 3.0, "translate_y": -2.0, "rotate": 12.0,
              "shear_x": 0.2, "shear_y": -0.25}  # fmt: skip
    v = torch.tensor([params.get(O.NAMES[k], 1.4 if k % 2 else 0.6) for k in op.tolist()])
    grouped = O.apply_grouped(u.clone(), op, v)
    for i in range(75):
        k = int(op[i])
        alone = u[i : i + 1] if k < 0 else O.OPS[O.NAMES[k]][0](u[i : i + 1], v[i : i + 1])
        assert torch.equal(grouped[i : i + 1], alone), (i, k)


@pytest.mark.parametrize("name", ["autoaugment", "randaugment", "trivialaugment"])
def test_precomputed_tables_and_maps_give_the_images_of_those_built_per_batch(name):
    u = torch.randint(0, 256, (96, 3, 16, 16), generator=torch.Generator().manual_seed(8), dtype=torch.uint8)
    view = build_view(name, {}, 16)
    assert view.fused.pre is not None and view.fused.pre.maps is not None
    looked_up = view.fused.run(u.clone(), torch.Generator().manual_seed(9), False)
    view.fused.pre = None
    built = view.fused.run(u.clone(), torch.Generator().manual_seed(9), False)
    assert torch.equal(looked_up, built) and not torch.equal(built, u)
    other = build_view(name, {}, 16).fused.run(u[:, :, :12, :12].clone(), torch.Generator().manual_seed(9), False)
    assert other.shape == (96, 3, 12, 12)  # maps made for 16 px are not used on 12 px images


@pytest.mark.parametrize("name", ["autoaugment", "randaugment", "trivialaugment"])
def test_policy_views_give_the_same_images_from_uint8_as_from_float(name):
    """The training pipeline hands policy views the 8-bit crop (x_u8) to skip a conversion: same result."""
    u = torch.randint(0, 256, (32, 3, 16, 16), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    view = build_view(name, {"strength": 0.7}, 16)
    from_float = view(u.float() / 255, torch.Generator().manual_seed(7)).images
    from_u8 = view(u.float() / 255, torch.Generator().manual_seed(7), x_u8=u).images
    assert torch.equal(from_float, from_u8) and not torch.equal(from_u8, u.float() / 255)
    assert torch.equal(
        u, torch.randint(0, 256, (32, 3, 16, 16), generator=torch.Generator().manual_seed(4)).to(torch.uint8)
    )


@pytest.mark.parametrize("semantics", [O.PILLOW, O.RELEASE, O.Semantics(fill=(124, 116, 104))])
def test_apply_masked_equals_apply_grouped(semantics):
    """The accelerator path (every op group over the whole batch, no host sync) against the grouped one."""
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 256, (96, 3, 12, 12), generator=g, dtype=torch.uint8)
    op = torch.randint(-1, len(O.NAMES), (96,), generator=g)
    r = torch.rand(96, generator=g, dtype=torch.float64)
    value = torch.where(op < O.GEOMETRIC.stop, (r - 0.5) * 20, r * 2)  # shears/shifts/angles both ways, factors
    value = torch.where(op == O.NAMES.index("posterize"), (r * 8).floor() + 1, value)
    value = torch.where(op == O.NAMES.index("solarize"), r * 256, value)
    value = torch.where(op == O.NAMES.index("solarize_add"), (r * 110).floor(), value)
    assert torch.equal(
        O.apply_masked(u.clone(), op, value, semantics), O.apply_grouped(u.clone(), op, value, None, semantics)
    )
