"""engine.retain_memory: freed tensors' pages stay mapped for the next step's tensors instead of going back to
the OS and being faulted in again (measured in a fresh interpreter: resident size after freeing)."""

import subprocess
import sys

import pytest

PROBE = """
import os, sys, torch
from kdlab.engine.memory import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
base = resident_mb()
alive = [torch.empty(4 << 20).fill_(1) for _ in range(4)]  # a step's tensors: 4 × 16 MiB, written
peak = resident_mb()
del alive
print(applied, round(peak - base), round(resident_mb() - base))
"""


def resident_growth(mode: str) -> tuple[str, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    applied, peak, after = out.split()
    return applied, int(peak), int(after)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_tensors_stay_mapped_only_when_retained():
    applied, peak, after = resident_growth("retain")
    assert applied == "True" and peak >= 60 and after >= 60  # freed, still resident for the next step
    _, peak, after = resident_growth("default")
    assert peak >= 60 and after < 8  # glibc's default: mmapped and unmapped on free, faulted in anew next time
