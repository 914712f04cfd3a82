"""T. stddev as the code released with Wang et al., "Knowledge Distillation Thrives on Data Augmentation"
(arXiv 2012.02909) computes it (helper/loops.py, `check_ce_var`), re-typed here, against kdlab's."""

from __future__ import annotations

import pytest
import torch
from conftest import digits_overrides

from kdlab.config import load_config
from kdlab.errors import ConfigError
from kdlab.metrics import t_stddev_chunks


def release_tstddev(steps: list[list[torch.Tensor]], with_mix: bool) -> float:
    """Per step the release appends softmax(t(x)) and, with a mixing view, softmax(t(x')) to a list; once the
    list holds 10 chunks (5 without x') it concatenates them, keeps their mean probability vector and empties
    the list. It prints the mean over classes of the (unbiased) std over the kept vectors; the last print is
    the result."""
    num = 10 if with_mix else 5
    prob: list[torch.Tensor] = []
    all_avg: list[torch.Tensor] = []
    value = float("nan")
    for chunks in steps:
        prob += chunks
        if len(prob) >= num:
            all_avg.append(torch.cat(prob, 0).mean(0))
            prob = []
            if len(all_avg) > 1:  # (the release prints nan for the first group)
                value = torch.stack(all_avg, 0).std(0).mean().item()
    return value


def _steps(n_steps: int, batch: int, last: int, with_mix: bool, k: int = 7) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n_steps):
        b = last if (i + 1) % 12 == 0 else batch  # an epoch of 12 steps whose last batch is partial
        chunks = [torch.randn(b, k, generator=g).softmax(1)]
        if with_mix:
            chunks.append(torch.randn(b, k, generator=g).softmax(1))
        out.append(chunks)
    return out


@pytest.mark.parametrize("with_mix", [True, False])
@pytest.mark.parametrize(("batch", "last"), [(64, 64), (50, 17), (7, 3)])
def test_grouping_matches_the_release(with_mix, batch, last):
    steps = _steps(36, batch, last, with_mix)
    chunks = [c for step in steps for c in step]
    ours = t_stddev_chunks(chunks, 10 if with_mix else 5)
    assert ours == pytest.approx(release_tstddev(steps, with_mix), rel=1e-5)


def test_tstddev_measures_cutmix_pick_and_runs_without_a_strong_view(digits_teacher, tmp_path):
    from kdlab.commands.tstddev import measure_tstddev

    cfg = load_config(
        None,
        [*digits_overrides(tmp_path, 1), "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher}",
         "data.batch_size=50"],
    )  # fmt: skip
    specs = ["none", "cutmix", "cutmix_pick:score=teacher_entropy", "cutmix_pick:score=student_entropy"]
    results = measure_tstddev(cfg, specs, epochs=1, student=str(digits_teacher), log=lambda _: None)
    assert set(results) == set(specs) and all(v > 0 for v in results.values())
    assert results["cutmix_pick:score=teacher_entropy"] != results["cutmix"]  # picking changes the stream
    with pytest.raises(ConfigError, match="--student"):
        measure_tstddev(cfg, ["cutmix_pick"], epochs=1, log=lambda _: None)
