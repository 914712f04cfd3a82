import json

import numpy as np
import pytest
import torch
from conftest import digits_overrides

from kdlab.config import load_config
from kdlab.errors import ConfigError
from kdlab.experiment import train
from kdlab.methods.base import mixed_cross_entropy
from kdlab.metrics import t_stddev
from kdlab.views import VIEWS, MixInfo, Normalize, StandardView, ViewPipeline, build_view
from kdlab.views.base import derangement
from kdlab.views.pick import pick_top
from kdlab.views.policies import apply_per_sample

ALL = [v for v in VIEWS.names() if v != "cutmix_pick"]


def _batch(b=16, c=3, s=32, seed=0):
    return torch.rand(b, c, s, s, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", ALL)
def test_view_keeps_shape_dtype_and_range(name, channels):
    torch.manual_seed(0)
    x = _batch(c=channels)
    out = build_view(name, {}, 32)(x, torch.Generator().manual_seed(1))
    assert out.images.shape == x.shape and out.images.dtype == torch.float32
    assert float(out.images.min()) >= 0.0 and float(out.images.max()) <= 1.0
    if name == "identity":
        assert torch.equal(out.images, x)
    if name in ("autoaugment", "randaugment", "trivialaugment", "cutout", "crop_flip", "mixup", "cutmix"):
        assert not torch.equal(out.images, x)


def _constant_images(b, s=32):
    """Image i is filled with the value i/b, so every pixel tells which image it came from."""
    return (torch.arange(b, dtype=torch.float32) / b).view(b, 1, 1, 1).expand(b, 3, s, s).clone()


def test_cutmix_lambda_is_one_minus_box_area_and_partner_is_never_self():
    b = 64
    x = _constant_images(b)
    out = build_view("cutmix", {}, 32)(x, torch.Generator().manual_seed(3))
    mix = out.mix
    assert mix is not None and bool((mix.partner != torch.arange(b)).all())
    from_partner = (out.images[:, 0] == x[mix.partner][:, 0]).float().mean((1, 2))
    torch.testing.assert_close(mix.lam, 1 - from_partner)  # λ recomputed from the (clipped) box area
    assert len(set(mix.lam.tolist())) > 30  # per-sample λ


def test_mixup_is_the_convex_combination():
    x = _constant_images(8)
    out = build_view("mixup", {}, 32)(x, torch.Generator().manual_seed(0))
    mix = out.mix
    expected = mix.lam.view(-1, 1, 1, 1) * x + (1 - mix.lam.view(-1, 1, 1, 1)) * x[mix.partner]
    torch.testing.assert_close(out.images, expected)


@pytest.mark.parametrize("n", [2, 3, 5, 64, 128])
def test_derangement_has_no_fixed_points(n):
    g = torch.Generator().manual_seed(n)
    for _ in range(50):
        p = derangement(n, g, torch.device("cpu"))
        assert sorted(p.tolist()) == list(range(n)) and bool((p != torch.arange(n)).all())


@pytest.mark.parametrize("name", ["cutmix", "mixup", "cutout", "crop_flip", "flip"])
def test_per_sample_randomness_unless_per_batch_compat(name):
    b = 32
    x = _batch(b)

    def distinct_transforms(per_batch):
        out = build_view(name, {"per_batch_compat": per_batch}, 32)(x, torch.Generator().manual_seed(5))
        if out.mix is not None:
            return len(set(out.mix.lam.tolist()))
        # A transform is identified by where each output pixel came from: compare against x's own pixels.
        changed = (out.images != x).flatten(1)
        return len({tuple(row.nonzero().flatten()[:50].tolist()) for row in changed})

    assert distinct_transforms(False) > 1
    assert distinct_transforms(True) == 1


def test_policy_branches_are_chosen_per_sample():
    branches = [torch.nn.Identity(), *[_AddConst(j) for j in range(1, 5)]]
    x = torch.zeros(10, 1, 2, 2)
    choice = torch.tensor([0, 1, 2, 3, 4, 4, 3, 2, 1, 0])
    out = apply_per_sample(x, choice, branches)
    assert out[:, 0, 0, 0].tolist() == [float(c) for c in choice]


class _AddConst(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return x + self.c


def test_strength_zero_keeps_x_and_strength_is_a_probability():
    x = _batch(64)
    assert torch.equal(build_view("cutout", {"strength": 0.0}, 32)(x).images, x)
    out = build_view("cutout", {"strength": 0.5}, 32)(x, torch.Generator().manual_seed(0))
    untouched = (out.images == x).flatten(1).all(1).float().mean()
    assert 0.25 < float(untouched) < 0.75
    with pytest.raises(ConfigError, match="strength must be in"):
        build_view("cutout", {"strength": 1.5}, 32)


def test_unknown_view_and_param_are_clear_errors():
    with pytest.raises(ConfigError, match="did you mean: cutmix"):
        build_view("cutmx", {}, 32)
    with pytest.raises(ConfigError, match=r"did you mean: views\.params\.alpha\?"):
        build_view("mixup", {"alhpa": 2}, 32)


def test_cutmix_pick_keeps_exactly_the_top_scored_candidates():
    torch.manual_seed(0)
    b = 8
    x01 = _batch(b)
    pick = build_view("cutmix_pick", {"pool_factor": 3, "n_pick": 5}, 32)
    pipeline = ViewPipeline(StandardView("none", 32), Normalize((0.0,) * 3, (1.0,) * 3), pick).train()
    seen = {}

    def scorer(candidates, request):
        assert request.kind == "kld"
        seen["pool"] = candidates.clone()
        return candidates.mean((1, 2, 3)), [candidates.mean((2, 3))]  # score = mean pixel value

    assert pipeline.needs_scores
    pipeline.attach_scorer(scorer)
    u8 = (x01 * 255).round().to(torch.uint8)
    batch = pipeline(u8, torch.arange(b), torch.arange(b), torch.Generator().manual_seed(0))
    pool_scores = seen["pool"].mean((1, 2, 3))
    assert seen["pool"].shape[0] == 3 * b
    top = pool_scores.sort(descending=True).values[:5]
    torch.testing.assert_close(batch.x_strong.mean((1, 2, 3)), top)
    assert torch.equal(pick_top(pool_scores, 5), pool_scores.argsort(descending=True)[:5])
    assert batch.teacher_strong is not None and batch.teacher_strong[0].shape == (5, 3)
    stats = pipeline.pop_stats()
    assert stats["pick_ratio"] == pytest.approx(float(top.mean() / pool_scores.mean()), rel=1e-5)
    with pytest.raises(ConfigError, match="exceeds the pool"):
        build_view("cutmix_pick", {"n_pick": 17}, 32).n_pick(8)


def test_mixed_cross_entropy_against_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    y = torch.tensor([0, 2])
    mix = MixInfo(torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([0.75, 0.25]))
    logp = torch.log_softmax(logits, 1)
    expected = -(0.75 * logp[0, 0] + 0.25 * logp[0, 2] + 0.25 * logp[1, 2] + 0.75 * logp[1, 0]) / 2
    torch.testing.assert_close(mixed_cross_entropy(logits, y, mix), expected)


def test_t_stddev_equals_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(640 * 5 + 100, 7))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    groups = probs[: 640 * 5].reshape(5, 640, 7).mean(1)
    expected = groups.std(0, ddof=1).mean()
    assert t_stddev(torch.from_numpy(probs)) == pytest.approx(expected, rel=1e-12)
    constant = torch.full((1280, 4), 0.25)
    assert t_stddev(constant) == 0.0
    with pytest.raises(ValueError, match="at least 2 groups"):
        t_stddev(constant[:1000])


@pytest.mark.parametrize("kind", ["weak", "strong"])
def test_weak_and_strong_standard_presets(kind):
    torch.manual_seed(0)
    u8 = (torch.rand(8, 3, 32, 32) * 255).to(torch.uint8)
    out = StandardView(kind, 32).train()(u8)
    assert out.shape == (8, 3, 32, 32) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, u8.float() / 255)


def test_tl_cutmix_pick_run_on_digits_trains(digits_teacher, tmp_path):
    cfg = load_config(
        None,
        [*digits_overrides(tmp_path, 4), "method.name=kd", "student.name=resnet8", "teacher.name=resnet14",
         f"teacher.checkpoint={digits_teacher}", "views.strong=cutmix_pick"],
    )  # fmt: skip
    run_dir, summary = train(cfg, log=lambda _: None)
    assert summary["last_epoch_test_acc"] > 60  # 10 classes: chance is 10%
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("train_kd_strong" in r and r["pick_ratio"] > 1.0 for r in records)  # picked > pool mean


def test_cutmix_with_mixed_label_ce_baseline_runs(digits_teacher, tmp_path):
    cfg = load_config(
        None,
        [*digits_overrides(tmp_path, 2), "method.name=kd", "method.strong_target=labels", "student.name=resnet8",
         "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher}", "views.strong=cutmix"],
    )  # fmt: skip
    run_dir, summary = train(cfg, log=lambda _: None)
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train_ce_strong" in record and "train_kd_strong" not in record
    assert summary["last_epoch_test_acc"] > 30


def test_tstddev_command_on_digits(digits_teacher, tmp_path):
    from kdlab.commands.tstddev import run_tstddev

    cfg = load_config(
        None,
        [*digits_overrides(tmp_path, 1), "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher}"],
    )
    out, results = run_tstddev(cfg, ["identity", "cutmix", "mixup"], epochs=2, log=lambda _: None)
    assert set(results) == {"identity", "cutmix", "mixup"} and all(v > 0 for v in results.values())
    saved = json.loads((out / "tstddev.json").read_text())
    assert list(saved["views"]) == sorted(results, key=results.get)  # ranked, lowest first


@pytest.mark.parametrize("view", ["cutmix_pick", "autoaugment"])
def test_resume_is_exact_with_strong_views(digits_teacher, tmp_path, view):
    """Crop/λ/box/partner draws come from the data generator, kornia's from torch's global RNG: both are
    saved in last.safetensors, so a resumed run ends bitwise equal to an uninterrupted one."""
    from safetensors.torch import load_file

    base = [*digits_overrides(tmp_path, 3), "method.name=kd", "student.name=resnet8", "teacher.name=resnet14",
            f"teacher.checkpoint={digits_teacher}", f"views.strong={view}", "views.params={}"]  # fmt: skip
    if view == "autoaugment":
        base[-1] = "views.params={policy: cifar10}"
    full_dir, _ = train(load_config(None, [*base, "name=full"]), log=lambda _: None)
    part_dir, _ = train(load_config(None, [*base, "name=part"]), stop_after_epoch=1, log=lambda _: None)
    train(None, resume_dir=part_dir, log=lambda _: None)  # type: ignore[arg-type]
    a = load_file(str(full_dir / "checkpoints" / "last.safetensors"))
    b = load_file(str(part_dir / "checkpoints" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
