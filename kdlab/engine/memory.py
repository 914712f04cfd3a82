"""Keep freed memory in the process for reuse, as tcmalloc or jemalloc would, with glibc's own malloc.

glibc serves every allocation above its mmap threshold with a fresh mmap and gives freed heap memory back to the
OS above its trim threshold. A training step allocates and frees the same few-MB tensors (activations, augmented
batches) every step, so each step pays page faults on fresh pages: a uint8 → float32 copy of a (128, 3, 32, 32)
batch took ≈ 400 µs instead of ≈ 30 µs on the development machine (docs/benchmarks.md). Raising the thresholds
keeps those pages mapped; the cost is that the process's resident size stays at its peak."""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_MAX = 32 << 20  # glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)


def retain_freed_memory(trim_mb: int = 1024) -> bool:
    """Serve allocations up to 32 MiB from the heap and keep up to `trim_mb` MiB of freed memory mapped (glibc
    mallopt). Returns whether it applied: False off Linux/glibc, where nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (musl and others have no such symbol: not glibc)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX) and mallopt(_M_TRIM_THRESHOLD, trim_mb << 20)
    return bool(done and mallopt(_M_TOP_PAD, 64 << 20))
