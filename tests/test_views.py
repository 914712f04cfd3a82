import torch

from kdlab.views import Normalize, StandardView, random_crop_flip


def _offsets_matching(out: torch.Tensor, padded: torch.Tensor, size: int, flipped: bool) -> list[tuple[int, int]]:
    found = []
    for oy in range(padded.shape[1] - size + 1):
        for ox in range(padded.shape[2] - size + 1):
            crop = padded[:, oy : oy + size, ox : ox + size]
            if torch.equal(crop.flip(2) if flipped else crop, out):
                found.append((oy, ox))
    return found


def test_crop_flip_is_a_per_sample_crop_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (32, 3, 8, 8), dtype=torch.uint8, generator=g)
    out = random_crop_flip(x, padding=2, flip=True, generator=g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    params = set()
    for i in range(len(x)):
        plain = _offsets_matching(out[i], padded[i], 8, flipped=False)
        mirrored = _offsets_matching(out[i], padded[i], 8, flipped=True)
        assert plain or mirrored, f"sample {i} is not a crop (or mirrored crop) of its padded input"
        params.add((bool(mirrored) and not plain, (plain or mirrored)[0]))
    # Per-sample randomness: many distinct (flip, offset) draws in one batch, both flip states present.
    assert len(params) > 10 and {f for f, _ in params} == {False, True}


def test_flip_only_and_identity():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8, generator=g)
    out = random_crop_flip(x, padding=0, flip=True, generator=g)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54
    assert random_crop_flip(x, 0, False) is x


def test_normalize_and_eval_mode_is_deterministic():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    expected = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(Normalize(mean, std)(x.float() / 255), expected)
    view = StandardView("crop_flip", 4, padding=4).eval()
    torch.testing.assert_close(view(x), x.float() / 255)  # no augmentation in eval mode
