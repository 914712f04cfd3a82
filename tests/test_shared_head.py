"""SimKD and ATSC as the code released with SimKD (Chen et al., CVPR 2022) and ATSC (Jang et al., arXiv
2406.08528) compute them: one code path, the released order of pooling and projecting, CutMixPick scored
through the shared head, old checkpoints still readable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdlab.methods import Teacher, build_method
from kdlab.models import create_model, model_taps
from kdlab.views import ScoreRequest, TrainBatch

SHAPE = (3, 16, 16)


def _method(name: str, teacher: str = "vgg8", student: str = "resnet8", **params: object):
    torch.manual_seed(0)
    t = Teacher(create_model(teacher, 10), model_taps(teacher))
    return build_method({"name": name, **params}, create_model(student, 10), [t], model_taps(student), SHAPE)


def _batch(n: int = 6, strong: bool = True) -> TrainBatch:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, *SHAPE, generator=g)
    return TrainBatch(x, torch.arange(n) % 10, torch.arange(n), torch.randn(n, *SHAPE, generator=g) if strong else None)


def release_simkd(feat_s, feat_t, transfer, cls_t):  # type: ignore[no-untyped-def]
    """Re-typed from the SimKD release (models/util.py, SimKD.forward): spatial alignment first — the student's
    map pooled to the teacher's size when larger, else the teacher's pooled to the student's — then the
    projector, then the teacher's classifier on the pooled projection."""
    s_h, t_h = feat_s.shape[2], feat_t.shape[2]
    if s_h > t_h:
        source, target = F.adaptive_avg_pool2d(feat_s, (t_h, t_h)), feat_t
    else:
        source, target = feat_s, F.adaptive_avg_pool2d(feat_t, (s_h, s_h))
    trans = transfer(source)
    return trans, target, cls_t(F.adaptive_avg_pool2d(trans, 1).flatten(1))


@pytest.mark.parametrize(("teacher", "student"), [("vgg8", "resnet8"), ("resnet8", "vgg8")])
def test_simkd_pools_and_projects_in_the_released_order(teacher, student):
    """Student map larger than the teacher's (resnet8 4×4 vs vgg8 2×2 at 16 px), and the other way round."""
    m = _method("simkd", teacher, student).eval()
    batch = _batch(strong=False)
    _, terms = m.forward_train(batch)
    f_s, _ = m._student_map_and_logits(batch.x)
    _, f_t = m._teacher_map(m.teacher(0), batch.x)
    assert f_s.shape[-1] != f_t.shape[-1]
    trans, target, pred = release_simkd(f_s, f_t, m.projectors[0], m.classifier(0))
    torch.testing.assert_close(terms["feat"], F.mse_loss(trans, target))
    torch.testing.assert_close(m.predict(batch.x), pred)


def test_atsc_without_adaptation_is_simkd_with_a_strong_view():
    """The additive form on both: β·MSE(x) + β·MSE(x'), the student running each view on its own."""
    batch = _batch()
    simkd = _method("simkd").train()
    atsc = _method("atsc", adapt=False).train()
    logits_a, terms_a = simkd.forward_train(batch)
    logits_b, terms_b = atsc.forward_train(batch)
    assert list(terms_a) == list(terms_b) == ["feat", "feat_strong"]
    for k in terms_a:
        torch.testing.assert_close(terms_a[k], terms_b[k], rtol=0, atol=0)
    torch.testing.assert_close(logits_a, logits_b, rtol=0, atol=0)
    # each view's term is that view's MSE alone (not one MSE over x‖x')
    m = _method("simkd").train()
    _, only_x = m.forward_train(TrainBatch(batch.x, batch.y, batch.index))
    torch.testing.assert_close(only_x["feat"], terms_a["feat"])


@pytest.mark.parametrize("name", ["simkd", "atsc"])
def test_cutmix_pick_scores_through_the_shared_head(name):
    """score = KL(softmax(t/τ) ‖ softmax(predict(x)/τ)) per sample, with the prediction path of the method
    (projector + the teacher's classifier), not the student's own, untrained classifier."""
    m = _method(name).train()
    x = _batch().x
    scores, t_logits = m.score_candidates(x, ScoreRequest("kld", 4.0, False))
    m.eval()
    with torch.no_grad():
        t = m.teacher(0).model(x)
        log_pt = F.log_softmax(t / 4.0, 1)
        expected = (log_pt.exp() * (log_pt - F.log_softmax(m.predict(x) / 4.0, 1))).sum(1)
        own_head = (log_pt.exp() * (log_pt - F.log_softmax(m.student(x) / 4.0, 1))).sum(1)
    torch.testing.assert_close(scores, expected)
    assert not torch.allclose(scores, own_head)
    assert t_logits is not None
    torch.testing.assert_close(t_logits[0], t)


def test_scoring_leaves_the_adaptive_teachers_and_the_student_statistics_alone():
    m = _method("atsc").train()
    assert m.teacher(0).model.training  # adaptive: trains with the student

    def stats():  # type: ignore[no-untyped-def]
        return [b.clone() for name, b in m.named_buffers() if "running" in name]

    before = stats()
    m.score_candidates(_batch().x, ScoreRequest("kld", 4.0, False))
    assert all(torch.equal(a, b) for a, b in zip(before, stats()))
    assert m.teacher(0).model.training and m.student.training  # modes restored
    m.score_candidates(_batch().x, ScoreRequest("kld", 4.0, True))  # the released train-mode scoring
    after = stats()
    student_stats = [b for name, b in m.named_buffers() if "running" in name and name.startswith("student.")]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    assert student_stats


def test_a_simkd_checkpoint_written_before_the_shared_code_path_loads():
    m = _method("simkd")
    old = {f"student.{k}": v for k, v in m.student.state_dict().items()}
    old.update({f"head.projector.{k}": torch.full_like(v, 0.5) if v.is_floating_point() else v
                for k, v in m.projectors[0].state_dict().items()})  # fmt: skip
    old.update({f"head.classifier.{k}": v for k, v in m.classifier(0).state_dict().items()})
    m.load_checkpoint_state(old)
    assert torch.all(m.projectors[0].net[0].weight == 0.5)
    assert set(m.checkpoint_state()) >= {"projectors.0.net.0.weight", "classifiers.0.weight"}
