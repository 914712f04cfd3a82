"""The 14 AutoAugment image operations as batched tensor code with a parameter per sample.

Every function takes float images x (N, C, H, W) in [0, 1] (C = 3, or 1 for grey where the op allows it) and
a per-sample magnitude v (N,), and returns the same shape. Semantics follow Pillow (ImageOps / ImageEnhance /
Image.transform), the library the AutoAugment reference code used: colour ops blend with Pillow's
"degenerate" image, posterize/solarize/equalize/autocontrast work on the 8-bit values, geometric ops use
nearest-neighbour sampling with grey (128) fill."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


def _levels(x: torch.Tensor) -> torch.Tensor:
    """The 8-bit values 0…255 of [0, 1] images, as floats."""
    return (x * 255).round_()


def _u8(x: torch.Tensor) -> torch.Tensor:
    return _levels(x).to(torch.int64)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Pillow's L conversion (ITU-R 601-2 luma), (N, 1, H, W)."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1).to(x.dtype)
    return (degenerate + f * (x - degenerate)).clamp_(0, 1)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Brightness: blend with black."""
    return _blend(x, torch.zeros_like(x), factor)


def color(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Color: blend with the grey version."""
    return _blend(x, _grey(x).expand_as(x), factor)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Contrast: blend with the mean grey level (Pillow rounds it to an 8-bit value)."""
    mean = (_grey(x).mean((1, 2, 3), keepdim=True) * 255).round() / 255
    return _blend(x, mean.expand_as(x), factor)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Sharpness: blend with the SMOOTH-filtered image ([[1,1,1],[1,5,1],[1,1,1]] / 13), whose
    border pixels are the original ones."""
    # the 3×3 box is separable: row sums, then column sums, plus 4 × the centre (a grouped conv2d is ~5×
    # slower on small CPU batches)
    rows = x[..., :, :-2] + x[..., :, 1:-1] + x[..., :, 2:]
    smooth = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    smooth = smooth.add_(x[..., 1:-1, 1:-1], alpha=4).div_(13)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = (smooth * 255).round() / 255
    return _blend(x, degenerate, factor)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """ImageOps.posterize: keep the top `bits` (1…8, per sample) bits of each 8-bit value."""
    low = torch.bitwise_left_shift(torch.ones_like(bits, dtype=torch.int64), 8 - bits.to(torch.int64)) - 1
    mask = (255 - low).view(-1, 1, 1, 1).to(x.device)
    return (_u8(x) & mask).to(x.dtype) / 255


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """ImageOps.solarize: invert every 8-bit value ≥ threshold (0…256, per sample)."""
    u = _levels(x)
    flip = (u >= threshold.view(-1, 1, 1, 1).to(x.device, x.dtype)).to(x.dtype)
    # |u − 255·flip| is 255 − u where flipped and u elsewhere (torch.where is ~20× slower on CPU)
    return torch.sub(u, flip, alpha=255).abs_().div_(255)


def invert(x: torch.Tensor, _: torch.Tensor | None = None) -> torch.Tensor:
    return 1 - x


def auto_contrast(x: torch.Tensor, _: torch.Tensor | None = None) -> torch.Tensor:
    """ImageOps.autocontrast (cutoff 0): stretch each channel's 8-bit range to 0…255."""
    u = _levels(x)
    lo = u.amin((2, 3), keepdim=True)
    hi = u.amax((2, 3), keepdim=True)
    flat = hi <= lo  # a one-level channel stays as it is: lo → 0, scale → 1 (cheaper than a full-size where)
    scale = torch.where(flat, 1.0, 255 / (hi - lo).clamp_min(1))
    lo = torch.where(flat, 0.0, lo)
    return ((u - lo) * scale).round_().clamp_(0, 255).div_(255)  # Pillow's lut: (i − lo) · scale, rounded


def equalize(x: torch.Tensor, _: torch.Tensor | None = None) -> torch.Tensor:
    """ImageOps.equalize per image and channel, batched: Pillow's lut from the 256-bin histogram
    (step = (n − count of the last non-empty bin) // 255; lut[i] = (cumsum before i + step // 2) // step)."""
    n, c, h, w = x.shape
    u = _u8(x).reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.int64, device=x.device).scatter_add_(1, u, torch.ones_like(u))
    last = hist.gather(1, u.amax(1, keepdim=True))
    step = (h * w - last) // 255
    before = hist.cumsum(1) - hist
    lut = ((before + step // 2) // step.clamp_min(1)).clamp_(max=255)
    identity = torch.arange(256, device=x.device).expand_as(lut)
    lut = torch.where(step > 0, lut, identity)  # Pillow leaves a channel with step 0 as it is
    return lut.gather(1, u).view(n, c, h, w).to(x.dtype).div_(255)


def affine(x: torch.Tensor, matrices: torch.Tensor, fill: float = 128 / 255) -> torch.Tensor:
    """Image.transform(AFFINE) per sample, nearest neighbour, `fill` outside. matrices (N, 2, 3): Pillow's
    (a, b, c, d, e, f), mapping each output pixel centre (x + ½, y + ½) to the input point
    (a·x + b·y + c, d·x + e·y + f) in pixels, whose floor is the pixel read."""
    n, c, h, w = x.shape
    a, b, cc, d, e, f = matrices.to(x.device, torch.float32).view(n, 6, 1, 1).unbind(1)  # each (N, 1, 1)
    xs = torch.arange(w, device=x.device, dtype=torch.float32) + 0.5
    ys = torch.arange(h, device=x.device, dtype=torch.float32).view(h, 1) + 0.5
    # Read from the image framed by one pixel of `fill` (hence the +1): a point outside clamps onto the frame,
    # so no mask. A 1e-3 px nudge: the shears hit lattice points exactly, where float error must not decide
    # the floor.
    shift = 1 + 1e-3
    px = torch.add(a * xs + (cc + shift), b * ys).floor_().clamp_(0, w + 1)  # (N, H, W)
    py = torch.add(d * xs + (f + shift), e * ys).floor_().clamp_(0, h + 1)
    index = px.add_(py, alpha=w + 2).to(torch.int64).view(n, 1, h * w).expand(n, c, h * w)
    framed = F.pad(x, (1, 1, 1, 1), value=fill).view(n, c, (h + 2) * (w + 2))
    return framed.gather(2, index).view(n, c, h, w)


def _geometric_op(k: int, doc: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
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


def geometric(x: torch.Tensor, op: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The five geometric ops in one affine resampling: sample i gets NAMES[op[i]] (op in 0…4: shear_x,
    shear_y, translate_x, translate_y, rotate) with parameter v[i] (shear factor, pixels, or degrees
    counter-clockwise about the centre, as Pillow's rotate)."""
    h, w = x.shape[-2:]
    o, val = op.cpu().numpy(), v.detach().cpu().double().numpy()
    # Pillow's inverse maps (a, b, c, d, e, f), built in NumPy on the host: ~20 tiny tensor ops cost more
    m = np.tile(np.array([1.0, 0, 0, 0, 1, 0]), (len(o), 1))
    rows = np.arange(len(o))
    lin = o < 4  # shear_x → b, shear_y → d, translate_x → c, translate_y → f
    m[rows[lin], np.array([1, 3, 2, 5])[o[lin]]] = val[lin]
    t = -val[~lin] * (math.pi / 180)  # Pillow builds the rotation's inverse map from the negated angle
    cos, sin = np.cos(t), np.sin(t)
    cx, cy = w / 2, h / 2
    m[~lin] = np.stack([cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy], 1)
    return affine(x, torch.from_numpy(m).view(-1, 2, 3))


def apply_grouped(x: torch.Tensor, op: torch.Tensor, v: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """out[i] = OPS[NAMES[op[i]]](x[i], v[i]), or x[i] where op[i] = −1. op, v: CPU tensors (N,). The five
    geometric ops share one resampling (each call has a large fixed cost on small batches); every other drawn
    op runs once on the samples that drew it, read and written by index. One host sync (the op counts).
    inplace: write into x (safe: each group is read before it is written, and groups are disjoint)."""
    order = torch.argsort(op, stable=True)
    counts = torch.bincount(op + 1, minlength=len(NAMES) + 1).tolist()  # slot 0: the untouched samples
    if counts[0] == len(op):
        return x
    bounds = [counts[0]]
    for c in counts[1:]:
        bounds.append(bounds[-1] + c)  # ops k's samples are order[bounds[k] : bounds[k + 1]]
    dev, dt = x.device, x.dtype
    order_dev = order.to(dev)
    out = x if inplace else x.clone()

    def run(a: int, b: int, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], vals: torch.Tensor) -> None:
        if b > a:
            idx = order_dev[a:b]
            out.index_copy_(0, idx, fn(x.index_select(0, idx), vals).to(dt))

    geo = order[bounds[GEOMETRIC.start] : bounds[GEOMETRIC.stop]]
    run(bounds[GEOMETRIC.start], bounds[GEOMETRIC.stop], lambda xs, vals: geometric(xs, op[geo], vals), v[geo])
    for k in range(GEOMETRIC.stop, len(NAMES)):
        run(bounds[k], bounds[k + 1], OPS[NAMES[k]][0], v[order[bounds[k] : bounds[k + 1]]].to(dev, dt))
    return out
