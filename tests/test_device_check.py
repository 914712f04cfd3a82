"""The device check script (`benchmarks/gpu_check.sh`) in its CPU smoke mode, so it cannot rot between the
sessions that get a GPU: it must run end to end and write its files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_in_cpu_smoke_mode(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = {p.name for p in tmp_path.iterdir()}
    assert {"env.txt", "tests.txt", "throughput.md", "throughput.json", "profile.txt"} <= written
    assert len(list(tmp_path.iterdir())) <= 8  # what the device tool returns
    table = (tmp_path / "throughput.md").read_text()
    for row in ("KD resnet8 → resnet8", "CutMixPick vs TLCutMix", "AutoAugment vs crop+flip", "CRD vs KD",
                "2 concurrent runs", "prepared store → KD resnet8 → resnet8 at 32 px, data.decoder=auto"):  # fmt: skip
        assert row in table
    facts = json.loads((tmp_path / "throughput.json").read_text())
    assert facts["kd_resnet8_resnet8"]["fp32"] > 0 and facts["jobs_2"] > 0
    assert facts["prepared_32_auto"]["input"] > 0 and facts["prepared_32_auto"]["input_and_step"] > 0
    assert " passed" in (tmp_path / "tests.txt").read_text()
    assert "ms per step" in (tmp_path / "profile.txt").read_text()


def test_the_crd_protocol_script_runs_a_shortened_schedule(tmp_path):
    """benchmarks/crd_protocol_gpu.sh (teacher, then KD, then the table) on digits for one epoch, eager fp32."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MODE": "", "DATA": "digits"}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "crd_protocol_gpu.sh"), "1", str(tmp_path)],
        capture_output=True, text=True, timeout=900, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (tmp_path / "crd_protocol.md").read_text()
    assert "a shorter schedule" in table and "| teacher | " in table and "| kd | " in table
    assert "did not finish" not in table
