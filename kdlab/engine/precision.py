"""What `engine.amp=auto` and `engine.channels_last=auto` become on a device.

bf16 autocast pays where the hardware computes in bf16: CUDA GPUs of compute capability ≥ 8.0 (Ampere, Hopper:
bf16 tensor cores) and x86 CPUs with AMX or avx512_bf16, whose oneDNN kernels run bf16 convolutions and GEMMs
natively. Elsewhere oneDNN emulates bf16 and a step runs several times *slower* than fp32 (on an AVX2-only AMD
EPYC, 2026-12-06: a resnet20 → resnet8 KD step 37 img/s in bf16 against 369 img/s in fp32), so `auto` stays fp32
there. channels_last follows bf16 on CUDA (tensor-core convolutions are NHWC); on a CPU with oneDNN it is
chosen in fp32 too, since oneDNN's convolutions run NHWC natively (docs/benchmarks.md: 1.13–1.15× a KD step).

`KDLAB_NATIVE_BF16=1|0` overrides the detection (e.g. a CPU the check does not know); the test suite sets it to
0 so that its numbers do not depend on the machine it runs on.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch

from kdlab.errors import ConfigError

ENV_OVERRIDE = "KDLAB_NATIVE_BF16"


@dataclass(frozen=True)
class Precision:
    """A run's resolved numerics: `amp` is the autocast dtype of forward passes ("bf16" or "none" = fp32),
    `channels_last` the memory format of models and inputs, `why` one line on how `auto` was decided."""

    amp: Literal["none", "bf16"]
    channels_last: bool
    why: str

    def describe(self) -> str:
        """One log line: `precision: bf16 autocast, channels_last (CUDA compute capability 9.0 runs bf16)`."""
        amp = "bf16 autocast" if self.amp == "bf16" else "fp32"
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"precision: {amp}, {layout} ({self.why})"


@functools.cache
def _cpu_native_bf16() -> bool:
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether `device` computes bf16 natively, and why (a phrase for the log). CUDA: compute capability ≥ 8.0;
    CPU: AMX tiles or avx512_bf16; anything else (MPS, XPU, …): no. `KDLAB_NATIVE_BF16` overrides."""
    forced = os.environ.get(ENV_OVERRIDE, "").strip()
    if forced:
        if forced not in ("0", "1"):
            raise ConfigError(f"{ENV_OVERRIDE} must be 0 or 1, got {forced!r}")
        return forced == "1", f"{ENV_OVERRIDE}={forced}"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        native = major >= 8
        return native, f"CUDA compute capability {major}.{minor} {'runs' if native else 'has no'} bf16"
    if device.type == "cpu":
        if _cpu_native_bf16():
            return True, "this CPU runs bf16 natively (AMX or avx512_bf16)"
        return False, "this CPU has neither AMX nor avx512_bf16: bf16 would be emulated, slower than fp32"
    return False, f"{device.type} devices stay fp32 under auto"


def resolve_precision(amp: str, channels_last: Any, device: torch.device) -> Precision:
    """`engine.amp` ("auto" | "none" | "bf16") and `engine.channels_last` (True | False | "auto") on `device`
    as a Precision. An explicit setting is kept as it is; `auto` follows native_bf16 (and oneDNN on a CPU)."""
    native, why = native_bf16(device) if "auto" in (amp, channels_last) else (False, "as configured")
    resolved_amp: Literal["none", "bf16"] = ("bf16" if native else "none") if amp == "auto" else amp  # type: ignore[assignment]
    if channels_last == "auto":
        if device.type == "cuda":
            layout = resolved_amp == "bf16"
        else:
            layout = device.type == "cpu" and torch.backends.mkldnn.is_available()
    else:
        layout = bool(channels_last)
    if amp != "auto" and channels_last != "auto":
        why = "as configured"
    return Precision(resolved_amp, layout, why)
