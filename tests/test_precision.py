"""engine.amp=auto and engine.channels_last=auto: what they resolve to on each kind of hardware, and what a run
with them does (engine/precision.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import digits_overrides

from kdlab.config import load_config
from kdlab.engine import precision
from kdlab.engine.precision import resolve_precision
from kdlab.errors import ConfigError
from kdlab.experiment import train

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.fixture
def detect(monkeypatch):
    """Hardware detection without the suite's KDLAB_NATIVE_BF16=0, with the CPU's answer and the GPU's compute
    capability given by the test."""
    monkeypatch.delenv("KDLAB_NATIVE_BF16", raising=False)

    def hardware(cpu_bf16: bool = False, capability: tuple[int, int] = (9, 0)) -> None:
        monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: cpu_bf16)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)

    return hardware


def test_the_defaults_are_auto():
    engine = load_config(None, []).engine
    assert engine.amp == "auto" and engine.channels_last == "auto"


@pytest.mark.parametrize(
    "capability, amp, channels_last",
    [
        ((9, 0), "bf16", True),
        ((8, 0), "bf16", True),
        ((8, 6), "bf16", True),
        ((7, 5), "none", False),
        ((6, 1), "none", False),
    ],
)
def test_cuda_runs_bf16_from_compute_capability_8(detect, capability, amp, channels_last):
    detect(capability=capability)
    p = resolve_precision("auto", "auto", CUDA)
    assert (p.amp, p.channels_last) == (amp, channels_last)
    assert f"{capability[0]}.{capability[1]}" in p.why


@pytest.mark.parametrize("native", [True, False])
def test_a_cpu_runs_bf16_only_with_amx_or_avx512_bf16_and_channels_last_with_onednn(detect, native):
    detect(cpu_bf16=native)
    p = resolve_precision("auto", "auto", CPU)
    assert p.amp == ("bf16" if native else "none")
    assert p.channels_last == torch.backends.mkldnn.is_available()
    assert ("emulated" in p.why) != native


def test_other_devices_stay_fp32(detect):
    detect(cpu_bf16=True)
    assert resolve_precision("auto", "auto", torch.device("mps")).amp == "none"


@pytest.mark.parametrize("amp", ["none", "bf16"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_an_explicit_setting_is_kept_whatever_the_hardware(detect, amp, channels_last):
    for native in (True, False):
        detect(cpu_bf16=native, capability=(9, 0) if native else (7, 0))
        for device in (CPU, CUDA):
            p = resolve_precision(amp, channels_last, device)
            assert (p.amp, p.channels_last, p.why) == (amp, channels_last, "as configured")


def test_the_environment_overrides_detection_and_a_bad_value_is_one_line(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: False)
    monkeypatch.setenv("KDLAB_NATIVE_BF16", "1")
    assert resolve_precision("auto", "auto", CPU).amp == "bf16"
    monkeypatch.setenv("KDLAB_NATIVE_BF16", "yes")
    with pytest.raises(ConfigError, match="KDLAB_NATIVE_BF16 must be 0 or 1"):
        resolve_precision("auto", "auto", CPU)


def test_the_real_cpu_check_agrees_with_pytorch(monkeypatch):
    """Without the override, the CPU answer is PyTorch's own feature check (cpuinfo), not a guess."""
    monkeypatch.delenv("KDLAB_NATIVE_BF16", raising=False)
    precision._cpu_native_bf16.cache_clear()
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert (resolve_precision("auto", False, CPU).amp == "bf16") == expected


@pytest.mark.parametrize("native", ["1", "0"])
def test_an_auto_run_logs_its_precision_and_trains_in_it(native, digits_teacher, tmp_path, monkeypatch):
    """A KD run with the defaults: bf16 autocast (student's forward in bf16) where bf16 is native, fp32 where
    not; either way it learns digits far above chance (10%) in 2 epochs."""
    monkeypatch.setenv("KDLAB_NATIVE_BF16", native)
    dtypes: list[torch.dtype] = []
    original = torch.nn.Linear.forward

    def recording(self, x):  # the student's and teacher's classifiers see the autocast dtype of their output
        out = original(self, x)
        dtypes.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Linear, "forward", recording)
    lines: list[str] = []
    started = 0

    def log(line: str) -> None:  # model building probes shapes in fp32 before the Trainer starts
        nonlocal started
        started = len(dtypes) if line.startswith("precision:") else started
        lines.append(line)

    cfg = load_config(None, [*digits_overrides(tmp_path, 2), "student.name=resnet8", "method.name=kd",
                             "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher}"])  # fmt: skip
    _, summary = train(cfg, log=log)
    trained = dtypes[started:]
    precision_line = next(x for x in lines if x.startswith("precision:"))
    if native == "1":
        assert precision_line.startswith("precision: bf16 autocast, channels_last")
        assert len(trained) > 50 and set(trained) == {torch.bfloat16}
    else:
        assert precision_line.startswith("precision: fp32")
        assert len(trained) > 50 and set(trained) == {torch.float32}
    assert summary["last_epoch_test_acc"] > 60
