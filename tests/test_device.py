"""The device-parametrised checks: run on the CPU in `make test`, and on a GPU by `benchmarks/gpu_check.sh`
(KDLAB_TEST_DEVICE=cuda). Views, every method's training step, CutMixPick, AutoAugment's ops, exact resume on the
same device, and the export round trip; against the CPU to stated tolerances where bitwise equality cannot hold
across devices (float reductions run in another order there)."""

from __future__ import annotations

import math
import os

import pytest
import torch
from conftest import digits_overrides, methods_for_any_student, metrics_without_timing

from kdlab.config import load_config
from kdlab.experiment import train
from kdlab.methods import METHODS, Teacher, build_method
from kdlab.models import create_model, model_taps
from kdlab.views import build_pipeline
from kdlab.views import image_ops as O

DEVICE = torch.device(os.environ.get("KDLAB_TEST_DEVICE", "cpu"))
if DEVICE.type == "cuda" and not torch.cuda.is_available():
    pytest.skip("KDLAB_TEST_DEVICE=cuda but no CUDA device", allow_module_level=True)
B, K, SHAPE = 8, 10, (3, 16, 16)


def _images(n: int = B, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *SHAPE), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", O.NAMES)
def test_image_ops_on_the_device_equal_the_cpu(name):
    """Every op with a parameter per sample: integer tables and gathers are exact; the float blends may differ
    by one 8-bit level on another device (fused multiply-add), on at most 1% of the values."""
    u = _images(16)
    op = torch.full((16,), O.NAMES.index(name))
    value = torch.linspace(0.2, 1.8, 16) if name in O.FACTOR_OPS else torch.linspace(-6.0, 6.0, 16)
    if name == "posterize":
        value = torch.arange(16) % 8 + 1.0
    if name in ("solarize", "solarize_add"):
        value = torch.linspace(0, 255, 16)
    cpu = O.apply_grouped(u.clone(), op, value.double(), None)
    dev = O.apply_grouped(u.clone().to(DEVICE), op, value.double(), None).cpu()
    diff = (cpu.int() - dev.int()).abs()
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) <= 0.01, name


# every view on a device; on the CPU two (test_method_contract covers the rest there: `make test` stays short)
ALL_VIEWS = [None, "autoaugment", "randaugment", "cutmix", "cutmix_pick", "color_jitter"]


@pytest.mark.parametrize("view", ALL_VIEWS if DEVICE.type != "cpu" else [None, "cutmix_pick"])
@pytest.mark.parametrize("name", methods_for_any_student())
def test_every_method_steps_on_the_device(name, view):
    _one_step(name, view, amp=False)


@pytest.mark.parametrize("name", methods_for_any_student())
def test_every_method_steps_under_bf16_autocast(name):
    """engine.amp=bf16 (the default where bf16 is native): every loss takes bf16 features and logits (SVDs,
    Gram matrices and softmaxes included) and gives a finite loss and gradients."""
    _one_step(name, "cutmix_pick" if METHODS.get(name).cls.needs_strong_view else None, amp=True)


def _one_step(name: str, view: str | None, amp: bool) -> None:
    """One training step of method `name` (resnet14 teacher → resnet8) on DEVICE: finite loss, gradients there."""
    cls = METHODS.get(name).cls
    if view == "cutmix_pick" and not cls.needs_teacher:
        pytest.skip("cutmix_pick scores with a teacher")
    if view is None and cls.needs_strong_view:
        pytest.skip("defined on x and x' together: a run without views.strong is refused")
    torch.manual_seed(0)
    teachers = [Teacher(create_model("resnet14", K), model_taps("resnet14"))] if cls.needs_teacher else []
    cfg = {"name": name, **({"nce_k": 16} if name == "crd" else {})}
    method = build_method(cfg, create_model("resnet8", K), teachers, model_taps("resnet8"), SHAPE).to(DEVICE)
    if method.needs_train_labels:
        method.attach_train_labels((torch.arange(64) % K).to(DEVICE), torch.Generator(DEVICE).manual_seed(0))
    method.train()
    pipeline = build_pipeline("crop_flip", view, {}, SHAPE[1], (0.5,) * 3, (0.25,) * 3, 2, True).to(DEVICE).train()
    if pipeline.needs_scores:
        pipeline.attach_scorer(method.score_candidates)
    g = torch.Generator(DEVICE).manual_seed(1)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=amp):
        batch = pipeline(_images().to(DEVICE), (torch.arange(B) % K).to(DEVICE), torch.arange(B, device=DEVICE), g)
        logits, terms = method.forward_train(batch)
        loss = sum(terms.values())
    assert logits.device.type == DEVICE.type and logits.shape == (B, K)
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    grads = [p.grad for p in method.student.parameters() if p.grad is not None]
    assert grads and all(g.device.type == DEVICE.type and bool(g.isfinite().all()) for g in grads)


def test_a_run_resumes_bitwise_on_the_device_and_agrees_with_the_cpu(tmp_path):
    device = ["engine.device=" + str(DEVICE)]
    common = [*digits_overrides(tmp_path, 2), "views.strong=autoaugment", "method.name=ce", *device]
    full_dir, full = train(load_config(None, [*common, "name=full"]), log=lambda _: None)
    part_dir, _ = train(load_config(None, [*common, "name=part"]), stop_after_epoch=1, log=lambda _: None)
    _, resumed = train(None, resume_dir=part_dir, log=lambda _: None)  # type: ignore[arg-type]
    assert (
        metrics_without_timing(full_dir) == metrics_without_timing(part_dir)
        and resumed["last_epoch_test_acc"] == full["last_epoch_test_acc"]
    )
    if DEVICE.type != "cpu":  # the same recipe on the CPU learns as much (not bitwise: other kernels, other RNG)
        _, cpu = train(load_config(None, [*common[:-1], "engine.device=cpu", "name=cpu"]), log=lambda _: None)
        assert abs(cpu["last_epoch_test_acc"] - full["last_epoch_test_acc"]) < 10


def test_export_round_trip_of_a_device_run(tmp_path):
    from kdlab.commands.export import export_run
    from kdlab.data import load_dataset
    from kdlab.experiment import load_trained
    from kdlab.views import Normalize, to_unit

    run_dir, _ = train(load_config(None, [*digits_overrides(tmp_path, 1), f"engine.device={DEVICE}"]),
                       log=lambda _: None)  # fmt: skip
    export_run(run_dir, tmp_path / "export")
    program = torch.export.load(str(tmp_path / "export" / "model.pt2")).module()
    method, _, meta = load_trained(run_dir)
    images = load_dataset("digits").test.images[:32]
    with torch.no_grad():
        expected = method.to(DEVICE).predict(
            Normalize(meta["data"]["mean"], meta["data"]["std"]).to(DEVICE)(to_unit(images.to(DEVICE)))
        )
    torch.testing.assert_close(program(images), expected.cpu(), rtol=1e-4, atol=1e-4)


class _NoHostSync:
    """A step must not wait for the device. On CUDA: torch's sync debug mode set to error. On the CPU, the
    honest proxy: every Tensor method that brings a value to the host (item, tolist, numpy, bool/float/int/index
    conversions) raises while the step runs."""

    NAMES = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.monkeypatch = monkeypatch

    def __enter__(self) -> None:
        if DEVICE.type == "cuda":
            torch.cuda.set_sync_debug_mode("error")
            return

        def refuse(*_args: object, **_kwargs: object) -> None:
            raise AssertionError("a host sync inside the training step")

        for name in self.NAMES:
            self.monkeypatch.setattr(torch.Tensor, name, refuse)

    def __exit__(self, *exc: object) -> None:
        if DEVICE.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
        else:
            self.monkeypatch.undo()


# The views whose per-sample randomness stays on the device. The policy views group samples by op on the host
# on the CPU (faster there); on an accelerator they run image_ops.apply_masked, sync-free.
SYNC_FREE_VIEWS = [None, "cutmix", "mixup", "cutmix_pick", "cutout", "flip"]
if DEVICE.type != "cpu":
    SYNC_FREE_VIEWS += ["autoaugment", "randaugment", "trivialaugment", "color_jitter"]


def _trainer(tmp_path, method: str, view: str | None):  # type: ignore[no-untyped-def]
    from kdlab.assembly import build_trainer
    from kdlab.data import load_dataset

    overrides = [*digits_overrides(tmp_path, 1), f"method.name={method}", f"engine.device={DEVICE}",
                 "data.batch_size=16", *([f"views.strong={view}"] if view else [])]  # fmt: skip
    if method == "crd":
        overrides.append("method.nce_k=64")
    cfg = load_config(None, overrides)
    data = load_dataset("digits")
    torch.manual_seed(0)
    teacher = Teacher(create_model("resnet14", 10, 1), model_taps("resnet14"))
    m = build_method(cfg.method, create_model("resnet8", 10, 1), [teacher], model_taps("resnet8"), data.image_shape)
    trainer = build_trainer(cfg, m, data, tmp_path, DEVICE, log=lambda _: None)
    return trainer, next(iter(trainer.train_loader))


@pytest.mark.parametrize("view", SYNC_FREE_VIEWS)
@pytest.mark.parametrize("method", ["kd", "dkd", "crd"])
def test_a_training_step_does_not_sync_with_the_host(tmp_path, monkeypatch, method, view):
    trainer, batch = _trainer(tmp_path, method, view)
    trainer.step_fn(batch.images, batch.labels, batch.index)  # first step outside: lazy set-up may sync once
    with _NoHostSync(monkeypatch):
        values, correct = trainer.step_fn(batch.images, batch.labels, batch.index)
    assert torch.isfinite(values).all() and int(correct) >= 0
    if DEVICE.type == "cpu":  # the trace also refuses what ATen reads on the host (one_hot, a boolean index)
        from kdlab.engine.graphed_step import TraceCapture

        TraceCapture()(lambda: trainer.step_fn(batch.images, batch.labels, batch.index))


def test_the_sync_guard_catches_a_step_that_syncs(tmp_path, monkeypatch):
    """On the CPU the policy views group samples by op on the host: the guard must see that."""
    if DEVICE.type != "cpu":
        pytest.skip("on an accelerator the policy views do not sync")
    trainer, batch = _trainer(tmp_path, "kd", "autoaugment")
    trainer.step_fn(batch.images, batch.labels, batch.index)
    with pytest.raises((AssertionError, RuntimeError)), _NoHostSync(monkeypatch):
        trainer.step_fn(batch.images, batch.labels, batch.index)


@pytest.mark.parametrize(("view", "params"), [("autoaugment", {}), ("autoaugment", {"ops": "pillow"}),
                                              ("randaugment", {}), ("trivialaugment", {})])  # fmt: skip
def test_the_policies_accelerator_path_is_the_cpu_path_without_a_sync(monkeypatch, view, params):
    """run_on_device (what a GPU runs) draws the same numbers and makes the same images as the CPU's grouped
    path, bit for bit, and brings nothing to the host on the way."""
    from kdlab.views import build_view

    fused = build_view(view, params, 16).fused
    u = _images(128)
    grouped = fused.run(u.clone(), torch.Generator().manual_seed(3), False)
    with _NoHostSync(monkeypatch):
        masked = fused.run_on_device(u.clone(), torch.Generator().manual_seed(3), False)
    assert torch.equal(grouped, masked)


@pytest.mark.parametrize(("view", "params"), [("randaugment", {"scale": "timm", "mstd": 0.5}), ("color_jitter", {})])
def test_views_that_draw_per_sample_values_are_sync_free_on_an_accelerator(monkeypatch, view, params):
    """timm's RandAugment and the colour jitter draw their values on the images' device; with the ops applied as
    an accelerator applies them (apply_masked), nothing reaches the host and the images are the CPU path's."""
    from kdlab.views import build_view

    v = build_view(view, params, 16, (0.5, 0.5, 0.5))
    x = _images(64).float() / 255
    grouped = v(x, torch.Generator().manual_seed(4)).images
    masked_like_a_gpu = lambda u, op, value, pre=None, semantics=O.PILLOW: O.apply_masked(u, op, value, semantics)  # noqa: E731
    monkeypatch.setattr(O, "apply_grouped", masked_like_a_gpu)
    with _NoHostSync(monkeypatch):
        masked = v(x, torch.Generator().manual_seed(4)).images
    assert torch.equal(grouped, masked)
