"""The augmentation ops' two semantics (`views.params.ops=release|pillow`): the release of Wang et al.
(arXiv 2012.02909) ran torchvision's AutoAugment on uint8 tensors (black fill, whole-pixel translations, shears
about the centre) and a cutout on the normalised image (a hole at the dataset mean); Pillow / TensorFlow /
timm fill grey, translate by fractional pixels and shear about the corner. Hand cases here; torchvision's own
functions where torchvision imports."""

from __future__ import annotations

import math

import pytest
import torch

from kdlab.views import build_view
from kdlab.views import image_ops as O


def _ramp(h: int = 8, w: int = 8) -> torch.Tensor:
    """(1, 1, H, W) uint8 with pixel (y, x) = 1 + y·W + x (no zeros, all distinct)."""
    return (torch.arange(h * w, dtype=torch.int32) + 1).to(torch.uint8).view(1, 1, h, w)


def _op(name: str, u: torch.Tensor, v: float, semantics: O.Semantics) -> torch.Tensor:
    return O.geometric(u, torch.tensor([O.NAMES.index(name)]), torch.tensor([v]), semantics=semantics)


def test_release_translation_is_whole_pixels_and_fills_black():
    u = _ramp()
    release = _op("translate_x", u, 2.9, O.RELEASE)  # int(2.9) = 2 whole pixels
    pillow = _op("translate_x", u, 2.9, O.PILLOW)
    assert torch.equal(release[..., :6], u[..., 2:]) and torch.all(release[..., 6:] == 0)
    assert torch.equal(pillow[..., :5], u[..., 3:]) and torch.all(pillow[..., 5:] == 128)  # 3.4 → 3, grey
    negative = _op("translate_x", u, -2.9, O.RELEASE)  # truncated toward zero: −2
    assert torch.equal(negative[..., 2:], u[..., :6]) and torch.all(negative[..., :2] == 0)


def test_release_shear_keeps_the_centre_row_pillow_keeps_the_top_row():
    u = _ramp()
    release = _op("shear_x", u, 0.25, O.RELEASE)
    pillow = _op("shear_x", u, 0.25, O.PILLOW)
    assert torch.equal(release[..., 4, :], u[..., 4, :])  # x' = x + s·(y − 4): row 4 does not move
    assert torch.equal(pillow[..., 0, :], u[..., 0, :])  # x' = x + s·y: row 0 does not move
    assert not torch.equal(release, pillow)
    # row 7 (centre 7.5) reads 0.875 px (release) or 1.875 px (pillow) to the right: its last 1 or 2 pixels come from
    # outside the image
    assert release[0, 0, 7, 7] == 0 and release[0, 0, 7, 6] == u[0, 0, 7, 7] and torch.all(pillow[..., 7, 6:] == 128)


def test_policy_views_take_the_semantics_and_autoaugment_defaults_to_the_release():
    assert build_view("autoaugment", {}, 16).fused.semantics == O.RELEASE
    assert build_view("autoaugment", {"ops": "pillow"}, 16).fused.semantics == O.PILLOW
    assert build_view("randaugment", {}, 16).fused.semantics == O.PILLOW
    u = torch.randint(0, 256, (64, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    a = build_view("autoaugment", {}, 16).fused.run(u.clone(), torch.Generator().manual_seed(1), False)
    b = build_view("autoaugment", {"ops": "pillow"}, 16).fused.run(u.clone(), torch.Generator().manual_seed(1), False)
    assert not torch.equal(a, b)


def test_release_cutout_hole_is_the_dataset_mean():
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mean = (0.5071, 0.4865, 0.4409)
    release = build_view("cutout", {}, 32, mean)(x, torch.Generator().manual_seed(1)).images
    pillow = build_view("cutout", {"ops": "pillow"}, 32, mean)(x, torch.Generator().manual_seed(1)).images
    hole = (release != x).any(1, keepdim=True).expand_as(x)
    assert hole.any()
    filled = release[hole].view(-1)
    expected = torch.tensor(mean).view(1, 3, 1, 1).expand_as(x)[hole]
    torch.testing.assert_close(filled, expected)
    assert torch.all(pillow[hole] == 0)  # the same holes, black


def test_release_geometry_against_torchvision():
    """Where torchvision imports: F.affine / F.rotate on uint8 tensors, nearest, fill 0, about the centre —
    what the release's AutoAugment called. Ties of the nearest-neighbour rounding may differ; the rest not."""
    tvf = pytest.importorskip("torchvision.transforms.functional")
    from torchvision.transforms import InterpolationMode

    u = torch.randint(1, 256, (1, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    nearest = InterpolationMode.NEAREST
    cases = [
        ("shear_x", 0.3, lambda s: tvf.affine(u, 0.0, [0, 0], 1.0, [math.degrees(math.atan(s)), 0.0], nearest, [0])),
        ("shear_y", 0.3, lambda s: tvf.affine(u, 0.0, [0, 0], 1.0, [0.0, math.degrees(math.atan(s))], nearest, [0])),
        ("translate_x", 5.7, lambda t: tvf.affine(u, 0.0, [int(t), 0], 1.0, [0.0, 0.0], nearest, [0])),
        ("translate_y", 5.7, lambda t: tvf.affine(u, 0.0, [0, int(t)], 1.0, [0.0, 0.0], nearest, [0])),
        ("rotate", 20.0, lambda a: tvf.rotate(u, a, nearest, fill=[0])),
    ]
    for name, v, theirs in cases:
        ref = theirs(v)
        # the sign conventions of the two libraries differ by op; the policies draw both signs alike
        best = min((_op(name, u, s * v, O.RELEASE) != ref).float().mean().item() for s in (1, -1))
        assert best <= 0.05, (name, best)
