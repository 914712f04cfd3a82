"""The 14 AutoAugment image operations (and timm's solarize_add) as batched tensor code on 8-bit images, with a
parameter per sample.

Every op takes uint8 images u (N, C, H, W) (C = 3, or 1 for grey) and per-sample parameters v (N,), and returns
uint8 images of the same shape equal to Pillow's (ImageOps / ImageEnhance / Image.transform, the library the
AutoAugment reference code used), bit for bit. Pillow's arithmetic is copied: an enhance op is Image.blend,
trunc(d + α·(u − d)) in float32, with its "degenerate" image d; grey is convert("L")'s integer luma;
posterize/solarize/equalize/autocontrast are Pillow's lookup tables; geometric ops read the pixel at the floor
of the inverse map, computed in Pillow's 16.16 fixed point, grey (128) outside.

Eight ops are per-channel lookup tables over the 256 values (contrast, brightness, posterize, solarize,
auto_contrast, equalize, invert, solarize_add). `apply_grouped` runs all table ops drawn in a slot as one
gather, the five geometric ops as one resampling, color and sharpness once each: a fixed handful of batched
calls per slot, since on small images the call count, not the pixel arithmetic, bounds the speed."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# convert("L")'s weights over 2¹⁶: every product with an 8-bit value and every partial sum (+ ½) is a multiple
# of 2⁻¹⁶ below 256, so float32 holds them exactly and the floor below is Pillow's integer shift
_LUMA = torch.tensor([19595, 38470, 7471], dtype=torch.float32).div_(65536).view(1, 3, 1, 1)


_DEVICE_COPIES: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def on_device(table: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A constant host table on `device`, copied once per (table, device) and kept (shared: do not modify).
    A step on a GPU then copies nothing from the host: such a copy waits for the device, and in a step captured
    as a CUDA graph it would replay the capture's stale bytes."""
    if table.device == device or device.type == "cpu":
        return table
    key = (id(table), str(device))
    if key not in _DEVICE_COPIES:
        _DEVICE_COPIES[key] = (table, table.to(device))  # the table kept alive: its id stays its own
    return _DEVICE_COPIES[key][1]


def device_values(values: Sequence[float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Constant `values` (n,) as a tensor of `dtype` on `device`, made once per (values, dtype, device) and kept
    (shared: do not modify): a per-channel fill, a view's fixed parameters."""
    return on_device(_host_values(tuple(values), dtype), device)


@functools.cache
def _host_values(values: tuple[float, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


@functools.cache
def _levels(device: torch.device) -> torch.Tensor:
    """The 256 8-bit values as float32, (256,) (shared: do not modify)."""
    return torch.arange(256, dtype=torch.float32, device=device)


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    """Float values in [0, 255] truncated to uint8. Through int32: the direct float → uint8 conversion is ~3×
    slower on CPUs."""
    return x.to(torch.int32).to(torch.uint8)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Pillow's convert("L") of 8-bit values given as float32 x (N, C, H, W): (19595·R + 38470·G + 7471·B + 2¹⁵)
    >> 16, exact, float32 (N, 1, H, W); a one-channel x is its own grey."""
    if x.shape[1] == 1:
        return x
    return (x * on_device(_LUMA, x.device)).sum(1, keepdim=True).add_(0.5).floor_()


def _blend(degenerate: torch.Tensor, image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Pillow's Image.blend(degenerate, image, α) on 8-bit values given as float32 tensors (broadcastable, the
    leading dim N): d + α·(u − d) clipped to 0…255, evaluated in float32 in Pillow's order, not yet truncated
    (the uint8 conversion truncates, as Pillow's). factor (N,)."""
    diff = image - degenerate
    if factor.device != diff.device or factor.dtype != torch.float32:
        factor = factor.to(diff.device, torch.float32)
    alpha = factor.view(-1, *([1] * (diff.dim() - 1)))
    return diff.mul_(alpha).add_(degenerate).clamp_(0, 255)


def apply_lut(u: torch.Tensor, lut: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """out[n, c, y, x] = lut[n, c, u[n, c, y, x]]: u uint8 (N, C, H, W), lut (N, C or 1, 256) of values in 0…255
    (a float lut is truncated); out: a contiguous uint8 (N, C, H, W) to write into (u itself may be it), else a
    new tensor."""
    n, c, h, w = u.shape
    table = (lut if lut.dtype == torch.uint8 else _to_u8(lut)).expand(n, c, 256)
    index = u.reshape(n, c, h * w).to(torch.int64)
    if out is None:
        return table.gather(2, index).view(n, c, h, w)
    torch.gather(table, 2, index, out=out.view(n, c, h * w))
    return out


def _contrast_lut(u: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # ImageEnhance.Contrast: blend with a flat image of int(mean of the grey image + 0.5)
    h, w = u.shape[-2:]
    total = _grey(u.to(torch.float32)).sum((1, 2, 3), dtype=torch.float64)
    mean = total.div_(h * w).add_(0.5).floor_().to(torch.float32).view(-1, 1, 1)
    return _blend(mean, _levels(u.device), factor)


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


def _solarize_add_lut(u: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    # timm's solarize_add: every value below 128 raised by `add` (0…110), capped at 255
    i = _levels(u.device).view(1, 1, 256)
    return torch.where(i < 128, (i + add.to(u.device, torch.float32).view(-1, 1, 1)).clamp_(max=255), i)


def _invert_lut(u: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    return (255 - _levels(u.device)).expand(len(u), 1, 256)


def _auto_contrast_lut(u: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    # ImageOps.autocontrast (cutoff 0): each channel's range stretched to 0…255 as Pillow computes it,
    # int(i·scale + offset) with scale = 255 / (hi − lo), offset = −lo·scale in double precision (truncated, not
    # rounded); a one-level channel stays
    flat = u.view(*u.shape[:2], -1)
    lo, hi = flat.amin(2, keepdim=True).double(), flat.amax(2, keepdim=True).double()  # (N, C, 1)
    levels = _levels(u.device).double()
    scale = 255.0 / (hi - lo).clamp_min(1)
    lut = (levels * scale - lo * scale).floor_().clamp_(0, 255)
    # a one-level channel keeps its values (lerp by exactly 0 or 1 is exact, and cheaper than torch.where)
    return torch.lerp(levels, lut, (hi > lo).double()).float()


def _ones_i32(rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """A contiguous int32 (rows, cols) of ones, sliced from a cached buffer (scatter_add_ of a contiguous
    source runs ~1.7× faster than of an expanded scalar)."""
    key = (cols, device)
    have = _ONES.get(key)
    if have is None or len(have) < rows:
        have = _ONES[key] = torch.ones(
            max(rows, 2 * len(have) if have is not None else rows), cols, dtype=torch.int32, device=device
        )
    return have[:rows]


_ONES: dict[tuple[int, torch.device], torch.Tensor] = {}


def _equalize_lut(u: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    # ImageOps.equalize per channel from the 256-bin histogram, Pillow's integer arithmetic: step = (n − count of
    # the last non-empty bin) // 255 = (count below the top value) // 255, lut[i] = (count below i + step // 2) //
    # step; a channel with step 0 stays as it is. After the integer histogram, float32: every value is an
    # integer < 2²⁴ (images under 16 M pixels), so it is exact, and a floored quotient of two such is exact.
    n, c, h, w = u.shape
    flat = u.reshape(n * c, h * w)
    counts = torch.zeros(n * c, 257, dtype=torch.int32, device=u.device)  # column k + 1 counts value k
    counts.narrow(1, 1, 256).scatter_add_(1, flat.to(torch.int64), _ones_i32(n * c, h * w, u.device))
    below = counts.cumsum(1, dtype=torch.int32)  # below[:, i]: the pixels of value < i
    step = below.gather(1, flat.amax(1, keepdim=True).to(torch.int64)).to(torch.float32).div_(255).floor_()
    lut = below.narrow(1, 0, 256).to(torch.float32).add_(step.div(2).floor_()).div_(step.clamp_min(1)).floor_()
    # step 0: the identity (lerp by exactly 0 or 1 is exact; torch.where with a broadcast mask costs 5× more);
    # values past 255 only where no pixel is, but they must fit the uint8 table
    return torch.lerp(_levels(u.device), lut, (step > 0).to(torch.float32)).clamp_(max=255).view(n, c, 256)


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
solarize_add = _table_op(_solarize_add_lut, "timm's solarize_add: values below 128 raised by v (N,), capped at 255.")


def color(u: torch.Tensor, factor: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """ImageEnhance.Color by factor (N,): blend with the grey image. out: a uint8 tensor of u's shape to write
    into (u itself may be it), else a new tensor."""
    x = u.to(torch.float32)
    blended = _blend(_grey(x), x, factor).to(torch.int32)  # truncated; int32 → uint8 is the fast conversion
    return blended.to(torch.uint8) if out is None else out.copy_(blended)


def sharpness(u: torch.Tensor, factor: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """ImageEnhance.Sharpness by factor (N,): blend with the SMOOTH-filtered image ([[1,1,1],[1,5,1],[1,1,1]] / 13,
    rounded; the border pixels are the original ones, so they come out unchanged). out: a uint8 tensor of u's
    shape to write into (u itself may be it), else a new tensor."""
    h, w = u.shape[-2:]
    if h < 3 or w < 3:  # no interior: every pixel is a border pixel
        return u.clone() if out is None else out.copy_(u)
    x = u.to(torch.float32)
    # the 3×3 box is separable: row sums, then column sums, plus 4 × the centre (exact integers in float32);
    # narrow, not x[..., a:b], which costs more than the addition on small images
    rows = x.narrow(3, 0, w - 2) + x.narrow(3, 1, w - 2)
    rows += x.narrow(3, 2, w - 2)
    inner = x.narrow(2, 1, h - 2).narrow(3, 1, w - 2)
    total = rows.narrow(2, 0, h - 2) + rows.narrow(2, 1, h - 2)
    total += rows.narrow(2, 2, h - 2)
    smooth = total.add_(inner, alpha=4).add_(6.5).div_(13).floor_()  # floor(total / 13 + ½)
    blended = _blend(smooth, inner, factor).to(torch.int32)  # truncated
    if out is None:
        out = u.clone()
    elif out is not u:
        out.copy_(u)
    out.narrow(2, 1, h - 2).narrow(3, 1, w - 2).copy_(blended)
    return out


def affine_index(matrices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Where each output pixel reads from under Image.transform(AFFINE), nearest neighbour: (N, H·W) int64 flat
    indices into the image framed by one pixel of fill, (H + 2, W + 2). matrices (N, 2, 3): Pillow's (a, b, c, d,
    e, f), mapping each output pixel centre (x + ½, y + ½) to the input point (a·x + b·y + c, d·x + e·y + f) in
    pixels, whose floor is the pixel read; size (H, W).

    Computed as Pillow computes it (Geometry.c), so that ties fall the same way: a pure shift/scale (b = d = 0)
    in double precision; any other map in 16.16 fixed point, each coefficient rounded to 1/65536 first."""
    h, w = size
    n, dev = len(matrices), matrices.device
    m = matrices.to(torch.float64).view(n, 6)
    xs = torch.arange(w, device=dev, dtype=torch.float64)
    ys = torch.arange(h, device=dev, dtype=torch.float64).view(h, 1)
    a, b, c, d, e, f = (m[:, k].view(n, 1, 1) for k in range(6))
    px = (c + a * 0.5 + a * xs).floor() + 0 * ys  # (N, H, W)
    py = (f + e * 0.5 + e * ys).floor() + 0 * xs
    skew = ((b != 0) | (d != 0)).view(n, 1, 1)  # both forms for every sample, then a select: no host sync

    def fix(v: torch.Tensor) -> torch.Tensor:  # Pillow's FIX(v) = floor(v·65536 + ½)
        return (v * 65536.0 + 0.5).floor().to(torch.int64)

    fa, fb, fd, fe = (fix(m[:, k]).view(n, 1, 1) for k in (0, 1, 3, 4))
    fc = fix(m[:, 2] + m[:, 0] * 0.5 + m[:, 1] * 0.5).view(n, 1, 1)
    ff = fix(m[:, 5] + m[:, 3] * 0.5 + m[:, 4] * 0.5).view(n, 1, 1)
    xi, yi = xs.to(torch.int64), ys.to(torch.int64)
    fixed_x = torch.div(fc + fb * yi + fa * xi, 65536, rounding_mode="floor").to(torch.float64)
    fixed_y = torch.div(ff + fe * yi + fd * xi, 65536, rounding_mode="floor").to(torch.float64)
    px = torch.where(skew, fixed_x, px)
    py = torch.where(skew, fixed_y, py)
    # a point outside clamps onto the one-pixel frame of fill (hence the +1), so no mask
    px = px.add_(1).clamp_(0, w + 1)
    py = py.add_(1).clamp_(0, h + 1)
    return px.add_(py, alpha=w + 2).to(torch.int64).view(n, h * w)


Fill = int | tuple[int, ...]


def _framed(u: torch.Tensor, fill: Fill) -> torch.Tensor:
    """u (N, C, H, W) in a one-pixel frame of `fill` (one value, or one per channel), (N, C, H + 2, W + 2)."""
    if isinstance(fill, int):
        return F.pad(u, (1, 1, 1, 1), value=fill)
    framed = F.pad(u, (1, 1, 1, 1))
    value = device_values(fill, u.dtype, u.device)
    if len(fill) != u.shape[1]:  # e.g. an RGB mean on grey images: their grey level
        value = value.float().mean().round().to(u.dtype).expand(u.shape[1])
    for edge in (framed[:, :, 0], framed[:, :, -1]):  # (N, C, W + 2)
        edge.copy_(value.view(1, -1, 1).expand_as(edge))
    for edge in (framed[:, :, :, 0], framed[:, :, :, -1]):  # (N, C, H + 2)
        edge.copy_(value.view(1, -1, 1).expand_as(edge))
    return framed


def resample(u: torch.Tensor, index: torch.Tensor, fill: Fill = 128, out: torch.Tensor | None = None) -> torch.Tensor:
    """out[n, c].flat[p] = framed(u)[n, c].flat[index[n, p]]: u uint8 (N, C, H, W), index (N, H·W) from
    affine_index, framed(u) = u in a one-pixel frame of `fill` (one 8-bit value, or one per channel); out: a
    contiguous uint8 (N, C, H, W) to write into (u itself may be it), else a new tensor."""
    n, c, h, w = u.shape
    framed = _framed(u, fill).view(n, c, (h + 2) * (w + 2))
    index = index.view(n, 1, h * w).expand(n, c, h * w)
    if out is None:
        return framed.gather(2, index).view(n, c, h, w)
    torch.gather(framed, 2, index, out=out.view(n, c, h * w))
    return out


def affine(u: torch.Tensor, matrices: torch.Tensor, fill: Fill = 128, out: torch.Tensor | None = None) -> torch.Tensor:
    """Image.transform(AFFINE) per sample, nearest neighbour, `fill` outside. u uint8 (N, C, H, W); matrices
    (N, 2, 3) as in affine_index; out as in resample."""
    return resample(u, affine_index(matrices.to(u.device), (u.shape[-2], u.shape[-1])), fill, out)


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
    "solarize_add": (solarize_add, (0.0, 110.0), False),  # timm's RandAugment only
}
# Ops that are one lookup table per sample (built per sample, applied in one gather), by name.
_TABLE_BUILDERS = {
    "contrast": _contrast_lut,
    "brightness": _brightness_lut,
    "posterize": _posterize_lut,
    "solarize": _solarize_lut,
    "auto_contrast": _auto_contrast_lut,
    "equalize": _equalize_lut,
    "invert": _invert_lut,
    "solarize_add": _solarize_add_lut,
}
GEOMETRIC_OPS = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")  # resampled together
STATIC_TABLE_OPS = ("brightness", "posterize", "solarize", "invert", "solarize_add")  # tables that ignore the image
FACTOR_OPS = ("color", "contrast", "sharpness", "brightness")
NAMES = list(OPS)


def _span(names: Sequence[str]) -> range:
    """The op indices of `names`, which must be consecutive in OPS (ops are grouped by index range)."""
    first = NAMES.index(names[0])
    if [NAMES.index(n) for n in names] != list(range(first, first + len(names))):
        raise AssertionError(f"ops {names} must be consecutive in OPS")
    return range(first, first + len(names))


GEOMETRIC = _span(GEOMETRIC_OPS)
TABLES = _span(list(_TABLE_BUILDERS))
STATIC_TABLES = tuple(NAMES.index(n) for n in STATIC_TABLE_OPS)
SIGNED = torch.tensor([OPS[n][2] for n in NAMES])
FACTOR = torch.tensor([n in FACTOR_OPS for n in NAMES])
# RandAugment / TrivialAugmentWide op space (torchvision's, besides identity): no invert, no solarize_add.
RANDOM_SPACE = [n for n in NAMES if n not in ("invert", "solarize_add")]
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


@dataclass(frozen=True)
class Semantics:
    """Where implementations of the geometric ops differ. Pillow (the TensorFlow/PIL AutoAugment, timm): grey
    fill 128, translations by the fractional pixel count, shears about the top-left corner. The release of
    Wang et al. (arXiv 2012.02909) ran torchvision's AutoAugment on uint8 tensors (torchvision 0.10/0.11): black
    fill, translations truncated to whole pixels (`int(magnitude)`), shears about the image centre."""

    fill: Fill = 128  # one 8-bit value, or one per channel (timm fills with the dataset mean)
    shear_about_centre: bool = False
    whole_pixel_translate: bool = False


PILLOW = Semantics()
RELEASE = Semantics(fill=0, shear_about_centre=True, whole_pixel_translate=True)
SEMANTICS = {"pillow": PILLOW, "release": RELEASE}


def geometric_matrices(
    op: torch.Tensor, v: torch.Tensor, size: tuple[int, int], semantics: Semantics = PILLOW
) -> torch.Tensor:
    """Pillow's inverse maps (N, 2, 3), float64 on op's device (no host round trip), of the five geometric ops:
    sample i gets NAMES[op[i]] (op in 0…4: shear_x, shear_y, translate_x, translate_y, rotate) with parameter
    v[i] (shear factor, pixels, or degrees counter-clockwise about the centre, as Pillow's rotate); samples whose
    op is not geometric get the identity; size (H, W); `semantics` as above."""
    h, w = size
    val = v.detach().to(op.device, torch.float64)
    if semantics.whole_pixel_translate:
        val = torch.where((op == 2) | (op == 3), val.trunc(), val)
    zero, one = torch.zeros_like(val), torch.ones_like(val)
    b = torch.where(op == 0, val, zero)
    d = torch.where(op == 1, val, zero)
    c = torch.where(op == 2, val, zero)
    f = torch.where(op == 3, val, zero)
    if semantics.shear_about_centre:
        c = c - b * (h / 2)
        f = f - d * (w / 2)
    t = -val * (math.pi / 180)
    cos, sin = t.cos(), t.sin()
    cx, cy = w / 2, h / 2
    rot = op == 4
    m = torch.stack([
        torch.where(rot, cos, one), torch.where(rot, sin, b), torch.where(rot, cx - cos * cx - sin * cy, c),
        torch.where(rot, -sin, d), torch.where(rot, cos, one), torch.where(rot, cy + sin * cx - cos * cy, f),
    ], 1)  # fmt: skip
    return m.view(-1, 2, 3)


def geometric(
    x: torch.Tensor,
    op: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor | None = None,
    semantics: Semantics = PILLOW,
) -> torch.Tensor:
    """The five geometric ops in one affine resampling of uint8 images x (N, C, H, W): sample i gets NAMES[op[i]]
    with parameter v[i], as in geometric_matrices; out as in resample."""
    matrices = geometric_matrices(op, v, (x.shape[-2], x.shape[-1]), semantics)
    return affine(x, matrices, fill=semantics.fill, out=out)


class PrecomputedOps:
    """What a fixed table of K (op, parameter) entries needs that does not depend on the image, computed once:
    a policy whose magnitudes are discrete looks its samples' entries up instead of rebuilding per batch.
    - luts (K, 256) uint8: the lookup table of every image-independent table op (brightness, posterize,
      solarize, invert), the identity for the other entries;
    - maps (G, H·W) int32 or None: the resampling indices (affine_index) of the G geometric entries, entry k's
      row map_row[k]; None when G·H·W > 2²⁴ (64 MB), the geometric ops then build theirs per batch (a batch of
      128 spends ≈ 0.2 ms on that on a CPU)."""

    def __init__(self, op: torch.Tensor, v: torch.Tensor, size: tuple[int, int], semantics: Semantics = PILLOW):
        """op, v (K,): op indexes NAMES (entries with op < 0 get identities); size (H, W) of the images the
        maps are for; `semantics` of the geometric ops."""
        self.size = size
        self.semantics = semantics
        self.luts = torch.arange(256, dtype=torch.uint8).repeat(len(op), 1)
        for k in STATIC_TABLES:
            rows = (op == k).nonzero().view(-1)
            if len(rows):
                dummy = torch.empty(len(rows), 1, 1, 1, dtype=torch.uint8)
                self.luts[rows] = _to_u8(_TABLE_BUILDERS[NAMES[k]](dummy, v[rows]).view(-1, 256))
        geo = ((op >= GEOMETRIC.start) & (op < GEOMETRIC.stop)).numpy()
        self.map_row = np.where(geo, np.cumsum(geo) - 1, -1)
        self.maps = None
        if geo.sum() * size[0] * size[1] <= 2**24:
            matrices = geometric_matrices(op[geo], v[geo], size, semantics)
            self.maps = affine_index(matrices, size).to(torch.int32)  # int32 halves the memory
        self._on: dict[tuple[str, torch.device], torch.Tensor] = {}

    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, device)
        if key not in self._on:
            self._on[key] = getattr(self, name).to(device)
        return self._on[key]

    def map_rows(self, ids: np.ndarray, device: torch.device) -> torch.Tensor:
        """The resampling indices of geometric entries ids (n,) as int64 (n, H·W) on device (maps must exist)."""
        rows = torch.from_numpy(self.map_row[ids]).to(device)
        return self._table("maps", device).index_select(0, rows).to(torch.int64)

    def lut_rows(self, ids: np.ndarray, device: torch.device) -> torch.Tensor:
        """The lookup tables of entries ids (n,), uint8 (n, 1, 256) on device."""
        return self._table("luts", device).index_select(0, torch.from_numpy(ids).to(device)).unsqueeze(1)


def apply_grouped(
    u: torch.Tensor,
    op: torch.Tensor,
    v: torch.Tensor,
    pre: tuple[PrecomputedOps, torch.Tensor] | None = None,
    semantics: Semantics = PILLOW,
) -> torch.Tensor:
    """u[i] ← OPS[NAMES[op[i]]](u[i], v[i]) in place, for every i with op[i] ≥ 0; returns u. u: uint8 (N, C, H, W);
    op, v: CPU tensors (N,). The batch is gathered once in op order, then four batched groups run on contiguous
    slices of that copy whatever was drawn: the geometric ops (one resampling), the table ops (one gather
    through per-sample tables), color, sharpness; one gather by the inverse order writes it back. One host sync (the op
    counts). pre = (table, ids (N,)): sample i is entry ids[i] of the table (which must hold (op[i], v[i])); its
    image-independent lookup table and, for images of the table's size, its resampling indices are looked up.
    The bookkeeping is NumPy on the host: on small images the number of tensor calls bounds the speed.
    `semantics` of the geometric ops (a precomputed table must have been built with the same)."""
    o, values = op.numpy(), v.numpy()
    order = np.argsort(o, kind="stable")
    # op k's samples are order[bounds[k] : bounds[k + 1]]; bounds[0] counts the untouched ones (op = −1)
    bounds = np.bincount(o + 1, minlength=len(NAMES) + 1).cumsum().tolist()
    if bounds[0] == len(o):
        return u
    n, c, h, w = u.shape
    dev = u.device
    # Samples move as whole rows; a uint8 row read as int64 words moves 8× fewer elements (same bytes). All rows
    # move, untouched ones too: gathering back with the inverse permutation is cheaper than an index_copy_.
    wide = u.is_contiguous() and (c * h * w) % 8 == 0
    words = u.view(n, -1).view(torch.int64) if wide else u
    rows = words.index_select(0, torch.from_numpy(order).to(dev))
    work = rows.view(torch.uint8).view(n, c, h, w) if wide else rows  # sorted by op; the groups work on its slices
    inverse = np.empty_like(order)
    inverse[order] = np.arange(n)
    table, ids = (pre[0], pre[1].numpy()) if pre is not None else (None, np.empty(0, dtype=np.int64))

    def members(k0: int, k1: int) -> np.ndarray:  # the batch rows of ops k0 … k1 − 1
        return order[bounds[k0] : bounds[k1]]

    def param(m: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values[m])

    if table is not None and table.semantics != semantics:
        raise ValueError("the precomputed table was built for other op semantics")
    a, b = bounds[GEOMETRIC.start], bounds[GEOMETRIC.stop]
    if b > a:
        m = members(GEOMETRIC.start, GEOMETRIC.stop)
        if table is None or table.maps is None or table.size != (h, w):  # no table for this size: build them
            geometric(work[a:b], torch.from_numpy(o[m]), param(m), out=work[a:b], semantics=semantics)
        else:
            resample(work[a:b], table.map_rows(ids[m], dev), fill=semantics.fill, out=work[a:b])
    for k, fn in ((NAMES.index("color"), color), (NAMES.index("sharpness"), sharpness)):
        a, b = bounds[k], bounds[k + 1]
        if b > a:
            fn(work[a:b], param(members(k, k + 1)), out=work[a:b])
    a, b = bounds[TABLES.start], bounds[TABLES.stop]
    if b > a:
        looked_up = table.lut_rows(ids[members(TABLES.start, TABLES.stop)], dev) if table is not None else None
        built = [k for k in TABLES if bounds[k + 1] > bounds[k] and (table is None or k not in STATIC_TABLES)]
        if looked_up is not None and not built:
            lut = looked_up
        else:
            lut = (
                torch.empty(b - a, c, 256, dtype=torch.uint8, device=dev)
                if looked_up is None
                else looked_up.repeat(1, c, 1)
            )
            for k in built:
                i, j = bounds[k], bounds[k + 1]
                lut[i - a : j - a] = _TABLE_BUILDERS[NAMES[k]](work[i:j], param(members(k, k + 1)))
        apply_lut(work[a:b], lut, out=work[a:b])
    back = torch.from_numpy(inverse).to(dev)
    if wide:
        torch.index_select(rows, 0, back, out=words)
    else:
        u.copy_(rows.index_select(0, back))
    return u


def apply(
    u: torch.Tensor,
    op: torch.Tensor,
    v: torch.Tensor,
    pre: tuple[PrecomputedOps, torch.Tensor] | None = None,
    semantics: Semantics = PILLOW,
) -> torch.Tensor:
    """u[i] ← OPS[NAMES[op[i]]](u[i], v[i]) in place, the fastest way for u's device: grouped by op on the CPU
    (apply_grouped; `pre` used there), masked on an accelerator (apply_masked: no host sync). Returns u."""
    if u.device.type == "cpu":
        return apply_grouped(u, op.cpu(), v.cpu(), pre, semantics)
    return apply_masked(u, op.to(u.device), v.to(u.device), semantics)


def apply_masked(u: torch.Tensor, op: torch.Tensor, v: torch.Tensor, semantics: Semantics = PILLOW) -> torch.Tensor:
    """apply_grouped without a host sync, for accelerators: op (N,) int64 and v (N,) float on u's device. Every
    group of ops runs on the whole batch and each sample keeps its own op's result (one resampling for the
    geometric ops, one gather through per-sample tables, color and sharpness once each) — more arithmetic than
    grouping, but no op counts on the host. Equal to apply_grouped bit for bit. Returns u, written in place."""
    n, c, h, w = u.shape
    geo = (op >= GEOMETRIC.start) & (op < GEOMETRIC.stop)
    out = resample(u, affine_index(geometric_matrices(op, v, (h, w), semantics), (h, w)), semantics.fill)
    out = torch.where(geo.view(n, 1, 1, 1), out, u)
    lut = _levels(u.device).to(torch.float32).view(1, 1, 256).expand(n, c, 256)
    for k in TABLES:
        built = _TABLE_BUILDERS[NAMES[k]](u, v).to(torch.float32)
        lut = torch.where((op == k).view(n, 1, 1), built.expand(n, c, 256) if built.shape[1] == 1 else built, lut)
    out = apply_lut(out, lut)
    for k, fn in ((NAMES.index("color"), color), (NAMES.index("sharpness"), sharpness)):
        out = torch.where((op == k).view(n, 1, 1, 1), fn(u, v), out)
    return u.copy_(out)
