"""The 14 AutoAugment image operations as batched tensor code on 8-bit images, with a parameter per sample.

Every op takes uint8 images u (N, C, H, W) (C = 3, or 1 for grey) and per-sample parameters v (N,), and returns
uint8 images of the same shape equal to Pillow's (ImageOps / ImageEnhance / Image.transform, the library the
AutoAugment reference code used) — for every op but rotate, whose nearest-neighbour sampling differs at a few
tied pixels. Pillow's arithmetic is copied: an enhance op is Image.blend, trunc(d + α·(u − d)) in float32, with
its "degenerate" image d; grey is convert("L")'s integer luma; posterize/solarize/equalize/autocontrast are
Pillow's lookup tables; geometric ops read the pixel at the floor of the inverse map, grey (128) outside.

Seven ops are per-channel lookup tables over the 256 values (contrast, brightness, posterize, solarize,
auto_contrast, equalize, invert). `apply_grouped` runs all table ops drawn in a slot as one gather, the five
geometric ops as one resampling, color and sharpness once each: a fixed handful of batched calls per slot, since
on small images the call count, not the pixel arithmetic, bounds the speed."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

_LUMA = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(1, 3, 1, 1)


def _levels(device: torch.device) -> torch.Tensor:
    """The 256 8-bit values as float32, (256,)."""
    return torch.arange(256, dtype=torch.float32, device=device)


def _grey(u: torch.Tensor) -> torch.Tensor:
    """Pillow's convert("L"): (19595·R + 38470·G + 7471·B + 2¹⁵) >> 16, int32 (N, 1, H, W)."""
    if u.shape[1] == 1:
        return u.to(torch.int32)
    weighted = (u.to(torch.int32) * _LUMA.to(u.device)).sum(1, keepdim=True, dtype=torch.int32)
    return weighted.add_(32768).bitwise_right_shift_(16)


def _blend(degenerate: torch.Tensor, image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's Image.blend(degenerate, image, α) on 8-bit values given as float32 tensors (broadcastable, the
    leading dim N): trunc(d + α·(u − d)) clipped to 0…255, evaluated in float32 in Pillow's order. factor (N,)."""
    alpha = factor.to(image.device, torch.float32).view(-1, *([1] * (image.dim() - 1)))
    return (degenerate + alpha * (image - degenerate)).clamp_(0, 255).floor_()


def apply_lut(u: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """out[n, c, y, x] = lut[n, c, u[n, c, y, x]]: u uint8 (N, C, H, W), lut (N, C or 1, 256) of 8-bit values."""
    n, c, h, w = u.shape
    table = lut.to(torch.uint8).expand(n, c, 256)
    return table.gather(2, u.view(n, c, h * w).to(torch.int64)).view(n, c, h, w)


def _contrast_lut(u: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # ImageEnhance.Contrast: blend with a flat image of int(mean of the grey image + 0.5)
    h, w = u.shape[-2:]
    mean = (_grey(u).sum((1, 2, 3), dtype=torch.float64) / (h * w) + 0.5).floor_()
    return _blend(mean.to(torch.float32).view(-1, 1, 1), _levels(u.device).view(1, 1, 256), factor)


def _brightness_lut(u: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # ImageEnhance.Brightness: blend with black
    return _blend(torch.zeros((), device=u.device), _levels(u.device).expand(len(u), 1, 256), factor)


def _posterize_lut(u: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    # ImageOps.posterize: keep the top `bits` (1…8) bits
    keep = 256 - torch.bitwise_left_shift(torch.ones_like(bits, dtype=torch.int64), 8 - bits.to(torch.int64))
    return torch.arange(256, device=u.device).view(1, 1, 256) & keep.to(u.device).view(-1, 1, 1)


def _solarize_lut(u: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    # ImageOps.solarize: invert every value ≥ threshold (0…256)
    i = _levels(u.device).view(1, 1, 256)
    return torch.where(i < threshold.to(u.device, torch.float32).view(-1, 1, 1), i, 255 - i)


def _invert_lut(u: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    return (255 - _levels(u.device)).expand(len(u), 1, 256)


def _auto_contrast_lut(u: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    # ImageOps.autocontrast (cutoff 0): each channel's range stretched to 0…255, rounded; a one-level channel stays
    lo = u.amin((2, 3)).to(torch.float32).unsqueeze(2)  # (N, C, 1)
    hi = u.amax((2, 3)).to(torch.float32).unsqueeze(2)
    flat = hi <= lo
    scale = torch.where(flat, 1.0, 255 / (hi - lo).clamp_min(1))
    lo = torch.where(flat, 0.0, lo)
    return ((_levels(u.device) - lo) * scale).round_().clamp_(0, 255)


def _equalize_lut(u: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    # ImageOps.equalize per channel from the 256-bin histogram: step = (n − count of the last non-empty bin) // 255,
    # lut[i] = (cumsum before i + step // 2) // step; a channel with step 0 stays as it is. In float64: the
    # counts are exact and a floored quotient of integers < 2²⁴ is exact.
    n, c, h, w = u.shape
    flat = u.reshape(n * c, h * w)
    v = flat.to(torch.int64)
    one = torch.ones((), dtype=torch.float64, device=u.device).expand(v.shape)
    hist = torch.zeros(n * c, 256, dtype=torch.float64, device=u.device).scatter_add_(1, v, one)
    last = hist.gather(1, flat.amax(1, keepdim=True).to(torch.int64))
    step = (h * w - last).div_(255).floor_()
    before = hist.cumsum(1).sub_(hist)
    lut = before.add_((step / 2).floor_()).div_(step.clamp_min(1)).floor_().clamp_(max=255)
    return torch.where(step > 0, lut, _levels(u.device)).view(n, c, 256)


Op = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _table_op(build: Op, doc: str) -> Op:
    def op(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return apply_lut(u, build(u, v))

    op.__doc__ = doc
    return op


contrast = _table_op(_contrast_lut, "ImageEnhance.Contrast by factor v (N,).")
brightness = _table_op(_brightness_lut, "ImageEnhance.Brightness by factor v (N,).")
posterize = _table_op(_posterize_lut, "ImageOps.posterize to v (N,) bits, 1…8.")
solarize = _table_op(_solarize_lut, "ImageOps.solarize above threshold v (N,), 0…256.")
auto_contrast = _table_op(_auto_contrast_lut, "ImageOps.autocontrast (v unused).")
equalize = _table_op(_equalize_lut, "ImageOps.equalize per channel (v unused).")
invert = _table_op(_invert_lut, "ImageOps.invert (v unused).")


def color(u: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Color by factor (N,): blend with the grey image."""
    return _blend(_grey(u).to(torch.float32), u.to(torch.float32), factor).to(torch.uint8)


def sharpness(u: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Sharpness by factor (N,): blend with the SMOOTH-filtered image ([[1,1,1],[1,5,1],[1,1,1]] / 13,
    rounded; the border pixels are the original ones)."""
    x = u.to(torch.float32)
    # the 3×3 box is separable: row sums, then column sums, plus 4 × the centre (exact integers in float32)
    rows = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]
    total = (rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]).add_(x[..., 1:-1, 1:-1], alpha=4)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = total.mul_(2).add_(13).div_(26).floor_()  # floor(total / 13 + ½)
    return _blend(degenerate, x, factor).to(torch.uint8)


def affine_index(matrices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Where each output pixel reads from under Image.transform(AFFINE), nearest neighbour: (N, H·W) int64 flat
    indices into the image framed by one pixel of fill, (H + 2, W + 2). matrices (N, 2, 3): Pillow's (a, b, c, d,
    e, f), mapping each output pixel centre (x + ½, y + ½) to the input point (a·x + b·y + c, d·x + e·y + f) in
    pixels, whose floor is the pixel read; size (H, W)."""
    h, w = size
    n, dev = len(matrices), matrices.device
    a, b, cc, d, e, f = matrices.to(torch.float32).view(n, 6, 1, 1).unbind(1)  # each (N, 1, 1)
    xs = torch.arange(w, device=dev, dtype=torch.float32) + 0.5
    ys = torch.arange(h, device=dev, dtype=torch.float32).view(h, 1) + 0.5
    # A point outside clamps onto the frame (hence the +1), so no mask. A 1e-3 px nudge: the shears hit lattice
    # points exactly, where float error must not decide the floor.
    shift = 1 + 1e-3
    px = torch.add(a * xs + (cc + shift), b * ys).floor_().clamp_(0, w + 1)  # (N, H, W)
    py = torch.add(d * xs + (f + shift), e * ys).floor_().clamp_(0, h + 1)
    return px.add_(py, alpha=w + 2).to(torch.int64).view(n, h * w)


def resample(u: torch.Tensor, index: torch.Tensor, fill: int = 128) -> torch.Tensor:
    """out[n, c].flat[p] = framed(u)[n, c].flat[index[n, p]]: u uint8 (N, C, H, W), index (N, H·W) from
    affine_index, framed(u) = u in a one-pixel frame of `fill`."""
    n, c, h, w = u.shape
    framed = F.pad(u, (1, 1, 1, 1), value=fill).view(n, c, (h + 2) * (w + 2))
    return framed.gather(2, index.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)


def affine(u: torch.Tensor, matrices: torch.Tensor, fill: int = 128) -> torch.Tensor:
    """Image.transform(AFFINE) per sample, nearest neighbour, `fill` outside. u uint8 (N, C, H, W); matrices
    (N, 2, 3) as in affine_index."""
    return resample(u, affine_index(matrices.to(u.device), (u.shape[-2], u.shape[-1])), fill)


def _geometric_op(k: int, doc: str) -> Op:
    def op(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return geometric(x, torch.full((len(v),), k, dtype=torch.long), v)

    op.__doc__ = doc
    return op


shear_x = _geometric_op(0, "Image.transform shear along x by factor v (N,).")
shear_y = _geometric_op(1, "Image.transform shear along y by factor v (N,).")
translate_x = _geometric_op(2, "Image.transform shift by v (N,) pixels along x.")
translate_y = _geometric_op(3, "Image.transform shift by v (N,) pixels along y.")
rotate = _geometric_op(4, "Image.rotate: counter-clockwise by v (N,) degrees about the centre.")


# name → (op, magnitude range over levels 0…9 as (at level 0, at level 9), signed: a random ± per sample).
# The geometric ops come first (0–4): `apply_grouped` resamples them together.
OPS = {
    "shear_x": (shear_x, (0.0, 0.3), True),
    "shear_y": (shear_y, (0.0, 0.3), True),
    "translate_x": (translate_x, (0.0, 150 / 331), True),  # × image width
    "translate_y": (translate_y, (0.0, 150 / 331), True),  # × image height
    "rotate": (rotate, (0.0, 30.0), True),
    "color": (color, (0.0, 0.9), True),  # factor 1 ± m
    "sharpness": (sharpness, (0.0, 0.9), True),
    "contrast": (contrast, (0.0, 0.9), True),
    "brightness": (brightness, (0.0, 0.9), True),
    "posterize": (posterize, (8.0, 4.0), False),  # bits, rounded
    "solarize": (solarize, (256.0, 0.0), False),  # threshold, truncated to an integer
    "auto_contrast": (auto_contrast, (0.0, 0.0), False),
    "equalize": (equalize, (0.0, 0.0), False),
    "invert": (invert, (0.0, 0.0), False),
}
GEOMETRIC = range(0, 5)
TABLES = range(7, 14)  # contrast … invert: lookup tables, built per sample and applied in one gather
_TABLE_BUILDERS = [_contrast_lut, _brightness_lut, _posterize_lut, _solarize_lut, _auto_contrast_lut, _equalize_lut,
                   _invert_lut]  # fmt: skip
FACTOR_OPS = ("color", "contrast", "sharpness", "brightness")
NAMES = list(OPS)
SIGNED = torch.tensor([OPS[n][2] for n in NAMES])
FACTOR = torch.tensor([n in FACTOR_OPS for n in NAMES])
# RandAugment / TrivialAugmentWide op space (torchvision's, besides identity): no invert.
RANDOM_SPACE = [n for n in NAMES if n != "invert"]
# (at bin 0, at bin 30) per op family for torchvision's 31-bin spaces; translate None: 150/331 of the image.
_RANGES: dict[str, dict[str, tuple[float, float] | None]] = {
    "standard": {"shear": (0.0, 0.3), "translate": None, "rotate": (0.0, 30.0), "enhance": (0.0, 0.9)},
    "wide": {"shear": (0.0, 0.99), "translate": (0.0, 32.0), "rotate": (0.0, 135.0), "enhance": (0.0, 0.99)},
}
_POSTERIZE_BITS = {"standard": 4, "wide": 6}  # posterize: 8 − round(bin / (30 / this))


def magnitude(name: str, level: int, size: tuple[int, int]) -> float:
    """The unsigned parameter of op `name` at `level` (0…9) for images of `size` (H, W)."""
    lo, hi = OPS[name][1]
    m = lo + (hi - lo) * level / 9
    if name == "translate_x":
        return m * size[1]
    if name == "translate_y":
        return m * size[0]
    if name == "posterize":
        return float(round(m))
    if name == "solarize":
        return float(int(m))
    return m


def bin_magnitude(name: str, b: int, space: str, image_size: int) -> float:
    """The unsigned parameter of op `name` at magnitude bin b (0…30) in torchvision's RandAugment ("standard")
    or TrivialAugmentWide ("wide") space for square images of `image_size` px."""
    r = _RANGES[space]

    def lin(lo_hi: tuple[float, float] | None) -> float:
        lo, hi = lo_hi if lo_hi is not None else (0.0, 150 / 331 * image_size)
        return lo + (hi - lo) * b / 30

    if name in ("shear_x", "shear_y"):
        return lin(r["shear"])
    if name in ("translate_x", "translate_y"):
        return lin(r["translate"])
    if name == "rotate":
        return lin(r["rotate"])
    if name in FACTOR_OPS:
        return lin(r["enhance"])
    if name == "posterize":
        return float(8 - round(b / (30 / _POSTERIZE_BITS[space])))
    if name == "solarize":
        return lin((255.0, 0.0))
    return 0.0


def geometric_matrices(op: torch.Tensor, v: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pillow's inverse maps (N, 2, 3), float64 on the CPU, of the five geometric ops: sample i gets NAMES[op[i]]
    (op in 0…4: shear_x, shear_y, translate_x, translate_y, rotate) with parameter v[i] (shear factor, pixels,
    or degrees counter-clockwise about the centre, as Pillow's rotate); size (H, W)."""
    h, w = size
    o, val = op.cpu().numpy(), v.detach().cpu().double().numpy()
    # built in NumPy on the host: ~20 tiny tensor ops cost more
    m = np.tile(np.array([1.0, 0, 0, 0, 1, 0]), (len(o), 1))
    rows = np.arange(len(o))
    lin = o < 4  # shear_x → b, shear_y → d, translate_x → c, translate_y → f
    m[rows[lin], np.array([1, 3, 2, 5])[o[lin]]] = val[lin]
    t = -val[~lin] * (math.pi / 180)  # Pillow builds the rotation's inverse map from the negated angle
    cos, sin = np.cos(t), np.sin(t)
    cx, cy = w / 2, h / 2
    m[~lin] = np.stack([cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy], 1)
    return torch.from_numpy(m).view(-1, 2, 3)


def geometric(x: torch.Tensor, op: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The five geometric ops in one affine resampling of uint8 images x (N, C, H, W): sample i gets NAMES[op[i]]
    with parameter v[i], as in geometric_matrices."""
    return affine(x, geometric_matrices(op, v, (x.shape[-2], x.shape[-1])))


class AffineMaps:
    """The resampling indices (affine_index) of a fixed table of K geometric (op, parameter) pairs, computed
    once: a policy whose magnitudes are discrete looks its samples' maps up instead of rebuilding them per batch
    (a batch of 128 spends ≈ 0.2 ms on building them on a CPU)."""

    def __init__(self, op: torch.Tensor, v: torch.Tensor, size: tuple[int, int]):
        """op, v (K,): entries with op outside 0…4 get the identity map; size (H, W)."""
        geo = (op >= 0) & (op < 5)
        matrices = geometric_matrices(torch.where(geo, op, 2), torch.where(geo, v, 0.0), size)
        self.size = size
        self.table = affine_index(matrices, size).to(torch.int32)  # (K, H·W): int32 halves the memory
        self._on: dict[torch.device, torch.Tensor] = {}

    def rows(self, ids: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The maps of table entries ids (n,) as int64 (n, H·W) on device."""
        if device not in self._on:
            self._on[device] = self.table.to(device)
        return self._on[device].index_select(0, ids.to(device)).to(torch.int64)


def apply_grouped(
    u: torch.Tensor, op: torch.Tensor, v: torch.Tensor, maps: tuple[AffineMaps, torch.Tensor] | None = None
) -> torch.Tensor:
    """u[i] ← OPS[NAMES[op[i]]](u[i], v[i]) in place, for every i with op[i] ≥ 0; returns u. u: uint8 (N, C, H, W);
    op, v: CPU tensors (N,). Four batched groups whatever was drawn: the geometric ops (one resampling), the
    table ops (one gather through per-sample tables), color, sharpness; each reads its samples by index before
    writing them, and the groups are disjoint. One host sync (the op counts). maps = (table, ids (N,)): the
    geometric samples' resampling indices are table entries ids[i] (which must hold (op[i], v[i])), not built."""
    order = torch.argsort(op, stable=True)
    counts = torch.bincount(op + 1, minlength=len(NAMES) + 1).tolist()  # slot 0: the untouched samples
    if counts[0] == len(op):
        return u
    bounds = [counts[0]]
    for c in counts[1:]:
        bounds.append(bounds[-1] + c)  # op k's samples are order[bounds[k] : bounds[k + 1]]
    order_dev = order.to(u.device)
    n, c, h, w = u.shape
    # Samples move as whole rows; a uint8 row read as int64 words moves 8× fewer elements (same bytes).
    wide = u.is_contiguous() and (c * h * w) % 8 == 0
    words = u.view(n, -1).view(torch.int64) if wide else u

    def group(ops: range, fn: Op) -> None:
        a, b = bounds[ops.start], bounds[ops.stop]
        if b > a:
            idx = order_dev[a:b]
            sub = words.index_select(0, idx)
            out = fn(sub.view(torch.uint8).view(b - a, c, h, w) if wide else sub, order[a:b])
            words.index_copy_(0, idx, out.contiguous().view(b - a, -1).view(torch.int64) if wide else out)

    def tables(sub: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        lut = torch.empty(len(sub), sub.shape[1], 256, dtype=torch.uint8, device=sub.device)
        first = bounds[TABLES.start]
        for k, build in zip(TABLES, _TABLE_BUILDERS):
            a, b = bounds[k] - first, bounds[k + 1] - first
            if b > a:
                lut[a:b] = build(sub[a:b], v[members[a:b]])
        return apply_lut(sub, lut)

    def resampled(sub: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        if maps is None or maps[0].size != (h, w):  # images of another size than the table's: build them
            return geometric(sub, op[members], v[members])
        return resample(sub, maps[0].rows(maps[1][members], sub.device))

    group(GEOMETRIC, resampled)
    group(range(5, 6), lambda sub, members: color(sub, v[members]))
    group(range(6, 7), lambda sub, members: sharpness(sub, v[members]))
    group(TABLES, tables)
    return u
