"""ATSC (Jang et al., arXiv 2406.08528): projector size, the anchor term, the bias-only step, shared-head
evaluation and export."""

import json

import pytest
import torch
from conftest import digits_overrides

from kdlab.commands.export import export_run
from kdlab.config import load_config
from kdlab.experiment import evaluate_path, train
from kdlab.methods import Teacher, build_method
from kdlab.methods.shared_head import Projector
from kdlab.models import create_model, model_taps
from kdlab.models.loading import read_weights
from kdlab.views import TrainBatch


def test_projector_parameter_count_resnet32x4_to_resnet8x4():
    # C_s = C_t = 256, f = 2: 256·128 + 128·128·9 + 128·256 conv weights + BN (128 + 128 + 256)·2
    assert sum(p.numel() for p in Projector(256, 256, 2).parameters()) == 214_016


def _atsc(n_teachers=1, **params):
    torch.manual_seed(0)
    teachers = [Teacher(create_model("resnet14", 10, 1), model_taps("resnet14")) for _ in range(n_teachers)]
    student = create_model("resnet8", 10, 1)
    return build_method({"name": "atsc", **params}, student, teachers, model_taps("resnet8"), (1, 8, 8))


def test_anchor_is_zero_at_start_and_covers_only_weights_with_ndim_above_one():
    m = _atsc()
    assert m.anchor().item() == 0.0
    t = m.teacher(0).model
    anchored = {id(p) for p, _ in m.anchor_pairs(0)}
    assert id(t.fc.weight) in anchored and id(t.conv1.weight) in anchored
    assert id(t.fc.bias) not in anchored and id(t.bn1.weight) not in anchored and id(t.bn1.bias) not in anchored
    with torch.no_grad():
        t.bn1.weight.add_(1.0)
        t.fc.bias.add_(1.0)
    assert m.anchor().item() == 0.0  # BN and bias changes are free
    with torch.no_grad():
        t.fc.weight[0, 0] += 0.5
    assert m.anchor().item() == pytest.approx(0.25)


def test_drift_guards_anchor_bn_scale_the_teacher_lr_and_freeze_teacher_bn():
    m = _atsc(anchor_bn=True, teacher_lr_scale=0.1, teacher_bn_eval=True)
    t = m.teacher(0).model
    anchored = {id(p) for p, _ in m.anchor_pairs(0)}
    assert id(t.bn1.weight) in anchored and id(t.bn1.bias) in anchored and id(t.fc.bias) not in anchored
    with torch.no_grad():
        t.bn1.weight[0] += 0.5
    assert m.anchor().item() == pytest.approx(0.25)
    own, theirs = m.param_groups()
    assert theirs["lr_scale"] == 0.1 and {id(p) for p in theirs["params"]} == {id(p) for p in t.parameters()}
    assert not {id(p) for p in own["params"]} & {id(p) for p in t.parameters()}
    m.train()
    assert t.conv1.weight.requires_grad and t.training and not t.bn1.training and m.student.training


def test_bias_only_step_changes_only_the_classifier_bias():
    m = _atsc()
    m.train()
    opt = torch.optim.SGD([p for mod in m.trainable_modules().values() for p in mod.parameters()], lr=0.1, momentum=0.9)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    batch = TrainBatch(torch.randn(8, 1, 8, 8), torch.arange(8) % 10, torch.arange(8))
    m.post_step(batch, opt)
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"teachers.0.model.fc.bias"}


def test_teachers_adapt_with_the_student_and_stay_frozen_without_adapt():
    for adapt in (True, False):
        m = _atsc(adapt=adapt)
        m.train()
        params = [p for mod in m.trainable_modules().values() for p in mod.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.05)
        w0 = m.teacher(0).model.conv1.weight.detach().clone()
        batch = TrainBatch(torch.randn(8, 1, 8, 8), torch.arange(8) % 10, torch.arange(8))
        _, terms = m.forward_train(batch)
        assert ("anchor" in terms) == adapt
        sum(terms.values()).backward()
        opt.step()
        assert torch.equal(m.teacher(0).model.conv1.weight, w0) != adapt


@pytest.mark.parametrize("n_teachers", [1, 2])
def test_atsc_on_digits_evaluates_and_exports_through_the_shared_head(digits_teacher, tmp_path, n_teachers):
    overrides = [*digits_overrides(tmp_path, 3), "method.name=atsc", "student.name=resnet8",
                 "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher}"]  # fmt: skip
    if n_teachers == 2:  # a second teacher of another architecture, trained here for 3 epochs
        second = load_config(None, [*digits_overrides(tmp_path, 3), "student.name=wrn_16_1", "name=t2"])
        t2_dir, _ = train(second, log=lambda _: None)
        overrides.append(f"teachers=[{{name: wrn_16_1, checkpoint: {t2_dir}}}]")
    run_dir, summary = train(load_config(None, overrides), log=lambda _: None)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("teacher0_drift" in r and len(r["teacher_test_acc"]) == n_teachers for r in records)
    assert all(records[-1][f"teacher{k}_drift"] > 0 for k in range(n_teachers))  # the teachers moved…
    assert summary["last_epoch_test_acc"] > 30  # …and the shared-head student learned (chance 10%)
    # Evaluation rebuilt from the checkpoint goes through projector + adapted classifier: same accuracy.
    assert evaluate_path(run_dir)["test_acc"] == pytest.approx(summary["best_test_acc"], abs=1e-6)
    # The checkpoint holds the adapted teacher, which differs from the pretrained one.
    state = read_weights(run_dir / "checkpoints" / "last.safetensors", prefix="model.teacher0.")
    pretrained = read_weights(digits_teacher)
    assert not torch.equal(state["fc.weight"], pretrained["fc.weight"])
    card = export_run(run_dir, tmp_path / "export")
    program = torch.export.load(str(tmp_path / "export" / "model.pt2"))
    from kdlab.experiment import load_trained
    from kdlab.views import Normalize

    method, _, meta = load_trained(run_dir)
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        expected = method.predict(Normalize(meta["data"]["mean"], meta["data"]["std"])(x.float() / 255))
    torch.testing.assert_close(program.module()(x), expected)
    # Student body + projector + the teacher's classifier — not the rest of the adapted teacher, and not the
    # student's own fc, which the shared-head prediction never reads: a modest increase over the student.
    proj = sum(p.numel() for p in method.projectors.parameters())
    fc = sum(p.numel() for k in range(n_teachers) for p in method.classifier(k).parameters())
    own_fc = sum(p.numel() for p in method.student.fc.parameters())
    assert card["exported_parameters"] == card["student_parameters"] - own_fc + proj + fc
    kind = torch.export.graph_signature.InputKind.PARAMETER
    lifted = [s.target for s in program.graph_signature.input_specs if s.kind == kind and s.target is not None]
    assert sum(program.state_dict[t].numel() for t in lifted) == card["exported_parameters"]  # nothing else inside
    assert all(t.startswith(("model.student.", "model.projectors.", "model.classifiers.")) for t in lifted)
    assert card["weights_load_into"] == "SharedHeadPredictor"
