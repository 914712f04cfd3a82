"""The optimiser module (engine/optimizers.py): parameter groups against timm's weight-decay rule re-typed, AdamW
and clipping against a plain PyTorch loop of the same math, the one-line refusals, and a resumed AdamW run equal to
the uninterrupted one. Layer-wise lr decay needs timm's group_matcher: tests/test_vision_models.py checks it against
timm's own param_groups_layer_decay."""

from __future__ import annotations

import fnmatch

import pytest
import torch
from conftest import digits_overrides
from safetensors.torch import load_file
from torch import nn

from kdlab.config import OptimConfig, load_config
from kdlab.engine.optimizers import build_optimizer, parameter_groups
from kdlab.errors import ConfigError
from kdlab.experiment import train
from kdlab.methods.base import Teacher, build_method
from kdlab.models import create_model, model_taps

QUIET = {"log": lambda _: None}


class _TokenNet(nn.Module):
    """A toy student with a token and a position embedding that it declares, as timm's ViTs do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8, 8))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.fc = nn.Linear(4, 10)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv(x)) + self.pos_embed
        return self.fc(h.mean((2, 3)) + self.cls_token[:, 0])


def _release_no_decay(model: nn.Module) -> set[str]:
    """timm's param_groups_weight_decay (timm/optim/_param_groups.py), re-typed: the names it keeps out of decay."""
    patterns = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    return {
        n for n, p in model.named_parameters()
        if p.ndim <= 1 or n.endswith(".bias") or any(fnmatch.fnmatch(n, q) for q in patterns)
    }  # fmt: skip


def _method(name: str, student: nn.Module | None = None, **params: object):
    torch.manual_seed(0)
    teacher = Teacher(create_model("resnet14", 10, 1), model_taps("resnet14"))
    taps = model_taps("resnet8") if student is None else {"stage2": "norm", "feature": "norm", "classifier": "fc"}
    student = student if student is not None else create_model("resnet8", 10, 1)
    return build_method({"name": name, **params}, student, [teacher], taps, (1, 8, 8))


def _names(method, group) -> set[str]:
    ids = {id(p) for p in group["params"]}
    modules = method.trainable_modules().items()
    return {f"{m}.{n}" for m, mod in modules for n, p in mod.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("name", ["kd", "fitnet", "atsc"])
def test_without_filtering_the_groups_are_the_methods_own(name):
    method = _method(name)
    groups = parameter_groups(method, OptimConfig())
    own = method.param_groups()
    assert [[id(p) for p in g["params"]] for g in groups] == [[id(p) for p in g["params"]] for g in own]
    assert [g["lr_scale"] for g in groups] == [g.get("lr_scale", 1.0) for g in own]  # ATSC's teachers keep theirs
    assert all(g["weight_decay"] == 5e-4 for g in groups)


def test_decay_filter_keeps_what_timm_keeps_out_of_decay():
    method = _method("fitnet", _TokenNet())  # its regressor: an extra module
    groups = parameter_groups(method, OptimConfig(name="adamw", weight_decay=0.05))  # adamw: filtered by default
    no_decay = set().union(*(_names(method, g) for g in groups if g["weight_decay"] == 0.0))
    decay = set().union(*(_names(method, g) for g in groups if g["weight_decay"] == 0.05))
    expected = {f"student.{n}" for n in _release_no_decay(method.student)}
    expected |= {f"{m}.{n}" for m, mod in method.trainable_modules().items() if m != "student"
                 for n in _release_no_decay(mod)}  # fmt: skip
    assert no_decay == expected and {"student.pos_embed", "student.cls_token", "student.norm.weight"} <= no_decay
    assert "student.conv.weight" in decay and not decay & no_decay
    assert len(decay | no_decay) == sum(1 for m in method.trainable_modules().values() for _ in m.parameters())
    sgd = parameter_groups(method, OptimConfig(decay_filter=True))
    assert {frozenset(_names(method, g)) for g in sgd} == {frozenset(_names(method, g)) for g in groups}


def _run_steps(optimizer, model, clip: float | None, steps: int = 3) -> None:
    torch.manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(torch.randn(6, 1, 8, 8)).logsumexp(1).mean() * 50  # large gradients: clipping bites
        loss.backward()
        if clip is not None:  # the plain loop clips by hand: g · min(1, c / (‖g‖ + 1e-6))
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            for g in grads:
                g.mul_(torch.clamp(clip / (total + 1e-6), max=1.0))
        optimizer.step()


@pytest.mark.parametrize("clip", [None, 0.5])
def test_adamw_and_clipping_equal_a_plain_pytorch_loop(clip):
    """kdlab's AdamW (filtered decay, clip by norm) steps a CE student exactly as torch.optim.AdamW on the same two
    groups with hand clipping does."""
    method = _method("ce", _TokenNet())
    plain = _TokenNet()
    plain.load_state_dict(method.student.state_dict())
    overrides = ["optim.name=adamw", "optim.lr=0.01", "optim.weight_decay=0.05"]
    cfg = load_config(None, [*overrides, *([f"optim.clip_grad={clip}"] if clip else [])])
    ours = build_optimizer(cfg, method, 0.01, torch.device("cpu"))
    no_decay = _release_no_decay(plain)
    reference = torch.optim.AdamW(
        [{"params": [p for n, p in plain.named_parameters() if n not in no_decay], "weight_decay": 0.05},
         {"params": [p for n, p in plain.named_parameters() if n in no_decay], "weight_decay": 0.0}], lr=0.01,
    )  # fmt: skip
    _run_steps(ours, method.student, None)  # the hook clips inside step()
    _run_steps(reference, plain, clip)
    for (n, a), b in zip(method.student.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)


def test_clip_by_value_bounds_every_entry():
    method = _method("ce", _TokenNet())
    cfg = load_config(None, ["optim.clip_grad=0.01", "optim.clip_mode=value", "optim.lr=1", "optim.momentum=0"])
    optimizer = build_optimizer(cfg, method, 1.0, torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in method.student.named_parameters()}
    _run_steps(optimizer, method.student, None, steps=1)
    for n, p in method.student.named_parameters():  # lr 1, no momentum: the step is the clipped gradient (+ decay)
        assert float((p.detach() - before[n]).abs().max()) <= 0.01 + 5e-4 * float(before[n].abs().max()) + 1e-7, n


def test_bad_optimiser_settings_are_one_line_errors():
    for overrides, match in [
        (["optim.name=adamw", "optim.nesterov=true"], "Nesterov"),
        (["optim.betas=[0.9]"], "betas"),
        (["optim.name=dot", "optim.clip_grad=1"], "clip_grad"),
        (["optim.layer_decay=1.5"], "layer_decay"),
        (["optim.clip_mode=agc"], "clip_mode"),
    ]:
        with pytest.raises(ConfigError, match=match) as err:
            load_config(None, overrides)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="group_matcher") as err:  # kdlab's CIFAR nets declare no layer order
        parameter_groups(_method("kd"), OptimConfig(layer_decay=0.75), "resnet8")
    assert "\n" not in str(err.value)


def test_adamw_run_with_clipping_resumes_exactly(tmp_path):
    overrides = [*digits_overrides(tmp_path, 3), "student.name=resnet8", "optim.name=adamw", "optim.lr=0.003",
                 "optim.weight_decay=0.05", "optim.clip_grad=1.0", "schedule.warmup_epochs=1"]  # fmt: skip
    full_dir, full = train(load_config(None, [*overrides, "name=full"]), **QUIET)
    part_dir, _ = train(load_config(None, [*overrides, "name=part"]), stop_after_epoch=1, **QUIET)
    _, resumed = train(None, resume_dir=part_dir, **QUIET)  # type: ignore[arg-type]
    a = load_file(str(full_dir / "checkpoints" / "last.safetensors"))
    b = load_file(str(part_dir / "checkpoints" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # AdamW's moments came back with the checkpoint
    assert full["last_epoch_test_acc"] == resumed["last_epoch_test_acc"] > 50  # 10 classes: chance is 10 %
