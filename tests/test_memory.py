"""engine.retain_memory: freed tensors' pages stay mapped, so the next step's tensors of the same size do not
fault fresh pages in (measured as minor page faults in a fresh interpreter)."""

import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from kdlab.engine.memory import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
def step():  # a step's worth of tensors alive together (1.5, 3, 6, 12 MiB: 5760 pages), then all freed
    alive = [torch.empty(3 << (17 + k)).fill_(1) for k in range(4)]
    del alive
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    applied, count = out.split()
    return applied, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_retained_memory_is_reused_without_page_faults():
    applied, retained = faults("retain")
    _, default = faults("default")
    assert applied == "True"
    # glibc's default trims freed memory and faults it back in, step after step (≈ 9k of 57.6k pages here);
    # retained, the pages come back from the heap (≈ 400, the interpreter's own)
    assert default > 2000 and retained * 10 < default
