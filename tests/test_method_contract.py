"""The fast contract tier of every registered method (no training): built from its defaults with one or two
untrained teachers, it takes one training forward with each kind of view — none, a per-sample policy, a
mixing view, CutMixPick — and returns the student logits and finite, named loss terms; teachers are run no
more than needed."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import methods_for_any_student

from kdlab.methods import METHODS, Teacher, build_method
from kdlab.models import create_model, model_taps
from kdlab.views import ViewPipeline, build_pipeline

B, K = 8, 10
SHAPE = (3, 16, 16)
NOT_ENSEMBLE = {
    "fitnet",
    "at",
    "sp",
    "rkd",
    "pkt",
    "vid",
    "crd",
    "simkd",
    "nst",
    "kdsvd",
    "ofd",
    "reviewkd",
}  # exactly one teacher


def _method(name: str, n_teachers: int = 1, **params: object):
    torch.manual_seed(0)
    student = create_model("resnet8", K)
    teachers = [Teacher(create_model("resnet14", K), model_taps("resnet14")) for _ in range(n_teachers)]
    cls = METHODS.get(name).cls
    cfg = {"name": name, **params, **({"nce_k": 16} if name == "crd" else {})}
    method = build_method(cfg, student, teachers if cls.needs_teacher else [], model_taps("resnet8"), SHAPE)
    if method.needs_train_labels:
        method.attach_train_labels(torch.arange(64) % K, torch.Generator().manual_seed(0))
    return method.train()


def _pipeline(view: str | None) -> ViewPipeline:
    return build_pipeline("crop_flip", view, {}, SHAPE[1], (0.5,) * 3, (0.25,) * 3, 2, True).train()


def _batch(pipeline: ViewPipeline, method):
    if pipeline.needs_scores:
        pipeline.attach_scorer(method.score_candidates)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (B, *SHAPE), dtype=torch.uint8, generator=g)
    return pipeline(images, torch.arange(B) % K, torch.arange(B), g)


class TeacherRows:
    """Counts the images every teacher forward sees."""

    def __init__(self, method):
        self.rows = 0
        for i in range(len(method.teachers)):
            method.teacher(i).model.register_forward_pre_hook(self._count)

    def _count(self, _module, args) -> None:
        self.rows += args[0].shape[0]


@pytest.mark.parametrize("view", [None, "autoaugment", "cutmix", "cutmix_pick"])
@pytest.mark.parametrize("name", methods_for_any_student())
def test_every_method_takes_every_view(name, view):
    if view == "cutmix_pick" and not METHODS.get(name).cls.needs_teacher:
        pytest.skip("cutmix_pick scores with a teacher")
    if view is None and METHODS.get(name).cls.needs_strong_view:
        pytest.skip("defined on x and x' together: a run without views.strong is refused (test_published_methods)")
    method = _method(name)
    batch = _batch(_pipeline(view), method)
    logits, terms = method.forward_train(batch)
    assert logits.shape == (B, K)
    assert terms and all(t.ndim == 0 and math.isfinite(float(t.detach())) for t in terms.values())
    if name not in ("atsc", "mlkd"):  # atsc: x‖x' jointly (train-mode BN); mlkd: terms mix x and x' (as released)
        assert (view is None) != any(k.endswith("_strong") for k in terms)  # x' gets its own, suffixed terms
    sum(terms.values()).backward()  # the terms reach trainable parameters
    assert any(p.grad is not None for p in method.student.parameters())


@pytest.mark.parametrize("name", [n for n in methods_for_any_student() if n not in NOT_ENSEMBLE | {"ce"}])
def test_methods_that_take_an_ensemble_take_two_teachers_with_cutmix_pick(name):
    method = _method(name, n_teachers=2)
    logits, terms = method.forward_train(_batch(_pipeline("cutmix_pick"), method))
    assert logits.shape == (B, K) and all(math.isfinite(float(t.detach())) for t in terms.values())


@pytest.mark.parametrize("name", ["kd", "dkd", "dist", "ttm", "crd"])
def test_cutmix_pick_teacher_logits_are_reused_not_recomputed(name):
    """Per step the teachers see the 2B-image pool once (scoring) and x once: 3B rows, not 4B."""
    method = _method(name)
    pipeline = _pipeline("cutmix_pick")
    counter = TeacherRows(method)
    batch = _batch(pipeline, method)
    assert counter.rows == 2 * B and batch.teacher_strong is not None
    method.forward_train(batch)
    assert counter.rows == 3 * B


@pytest.mark.parametrize("name", ["kd", "dkd", "dist", "ttm"])
def test_logit_methods_without_pick_run_the_teacher_once_over_both_views(name):
    method = _method(name)
    counter = TeacherRows(method)
    method.forward_train(_batch(_pipeline("cutmix"), method))
    assert counter.rows == 2 * B


def test_ttm_against_hand_computed_value():
    """Two classes: teacher logits (0, ln 4) → p_t = (0.2, 0.8); γ = 0.5 (τ = 2) → p̃ ∝ (√0.2, √0.8) = (1/3, 2/3).
    Student logits (0, 0) → q = (1/2, 1/2). KL(p̃ ‖ q) = 1/3·ln(2/3) + 2/3·ln(4/3)."""
    method = _method("ttm", temperature=2.0)
    s = torch.zeros(1, 2)
    t = torch.tensor([[0.0, math.log(4.0)]])
    expected = (1 / 3) * math.log(2 / 3) + (2 / 3) * math.log(4 / 3)
    assert float(method.loss(s, t, torch.tensor([0]))) == pytest.approx(expected, rel=1e-6)
    # γ = 1 is KD at τ = 1 without τ²; the loss is 0 when the student equals the transformed teacher
    method.params.temperature = 1.0
    assert float(method.loss(t, t, torch.tensor([0]))) == pytest.approx(0.0, abs=1e-7)
    assert _method("ttm").params.temperature == 10.0  # the release's l = 0.1


def test_the_strong_view_weight_has_one_name():
    """Every method with a term on x' weights it by `strong_weight` (an old run folder's `strong_kd_weight`
    is read as it)."""
    for name in METHODS.names():
        fields = set(METHODS.get(name).cls.Params.__dataclass_fields__)
        assert "strong_kd_weight" not in fields
    method = build_method(
        {"name": "fitnet", "strong_kd_weight": 0.9},
        create_model("resnet8", K),
        [Teacher(create_model("resnet14", K), model_taps("resnet14"))],
        model_taps("resnet8"),
        SHAPE,
    )
    assert method.params.strong_weight == 0.9


def test_mixed_label_baseline_weight_and_crds_kd_terms():
    """The mixed-label CE on x' weighs 1.0 by default and `strong_weight` when given (0.9 reproduces the
    release of Wang et al., arXiv 2012.02909); CRD adds KD on x' (0.9) but on x only with `kd_weight`."""
    from kdlab.methods.base import mixed_cross_entropy

    pipeline = _pipeline("cutmix")
    for weight, expected in ((None, 1.0), (0.9, 0.9)):
        params = {"strong_target": "labels"} | ({"strong_weight": weight} if weight is not None else {})
        method = _method("kd", **params).eval()
        batch = _batch(pipeline, method)
        _, terms = method.forward_train(batch)
        with torch.no_grad():
            ce = mixed_cross_entropy(method.student(batch.x_strong), batch.y, batch.mix)
        torch.testing.assert_close(terms["ce_strong"], expected * ce)
        assert "kd_strong" not in terms
    crd = _method("crd")
    _, terms = crd.forward_train(_batch(_pipeline("cutmix"), crd))
    assert "kd_strong" in terms and "kd" not in terms
    crd = _method("crd", kd_weight=0.9)
    _, terms = crd.forward_train(_batch(_pipeline("cutmix"), crd))
    assert "kd_strong" in terms and "kd" in terms


@pytest.mark.parametrize("name", [n for n in METHODS.names() if n not in methods_for_any_student()])
def test_a_method_that_needs_more_of_the_student_refuses_others_in_one_line(name):
    """e.g. deit on a CNN: a ConfigError (exit 2) naming what the student lacks, not an internal error."""
    from kdlab.errors import ConfigError

    with pytest.raises(ConfigError, match=METHODS.get(name).cls.student_requirement.split(" (")[0]) as err:
        teacher = Teacher(create_model("resnet14", K), model_taps("resnet14"))
        build_method({"name": name}, create_model("resnet8", K), [teacher], model_taps("resnet8"), SHAPE)
    assert "\n" not in str(err.value)
