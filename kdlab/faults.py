"""Fault injection for the reliability tests: `KDLAB_CRASH_AT=POINT:N` makes the process SIGKILL itself the N-th
time it reaches POINT (`step` after an optimiser step, `eval` inside a test evaluation, `write` after a file's
temporary copy is written and before it is renamed into place). Unset, a call costs one comparison."""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("KDLAB_CRASH_AT", "")
_POINT, _, _N = _SPEC.partition(":")
_counts: dict[str, int] = {}


def crash_point(point: str) -> None:
    """SIGKILL this process if KDLAB_CRASH_AT names `point` and this is its N-th visit."""
    if point != _POINT:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == int(_N or 1):
        os.kill(os.getpid(), signal.SIGKILL)
