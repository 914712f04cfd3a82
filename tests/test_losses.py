import math

import pytest
import torch

from kdlab.losses import cross_entropy, kd
from kdlab.methods import Teacher, build_method
from kdlab.views import TrainBatch


def _softmax(v):
    e = [math.exp(a) for a in v]
    return [a / sum(e) for a in e]


def test_kd_against_hand_computation():
    s, t, T = [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], 2.0
    p_t = _softmax([a / T for a in t])
    p_s = _softmax([a / T for a in s])
    expected = T * T * sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s))
    assert kd(torch.tensor([s]), torch.tensor([t]), T).item() == pytest.approx(expected, rel=1e-6)
    # Batch mean: two copies of the same row give the same value.
    assert kd(torch.tensor([s, s]), torch.tensor([t, t]), T).item() == pytest.approx(expected, rel=1e-6)


def test_kd_limiting_cases():
    torch.manual_seed(0)
    a, b = torch.randn(8, 10), torch.randn(8, 10)
    assert kd(a, a, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd(a, b, 4.0).item() > 0
    assert kd(a, a + 5.0, 4.0).item() == pytest.approx(0.0, abs=1e-5)  # shift-invariant


def test_kd_method_combines_terms_with_weights():
    torch.manual_seed(0)
    student = torch.nn.Linear(4, 3)
    teacher = Teacher(torch.nn.Linear(4, 3), {})
    method = build_method({"name": "kd", "ce_weight": 0.3, "kd_weight": 0.7, "temperature": 2.0}, student, [teacher])
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    _, terms = method.forward_train(TrainBatch(x, y, torch.arange(5)))
    assert set(terms) == {"ce", "kd"}
    torch.testing.assert_close(terms["ce"], 0.3 * cross_entropy(student(x), y))
    torch.testing.assert_close(terms["kd"], 0.7 * kd(student(x), teacher(x), 2.0))
    terms["kd"].backward()
    assert student.weight.grad is not None and all(p.grad is None for p in teacher.parameters())


def test_ls_kd_standardizes_both_logits():
    from kdlab.losses import logit_standardize

    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(4, 3), Teacher(torch.nn.Linear(4, 3), {})
    method = build_method({"name": "kd", "logit_standardize": True, "temperature": 2.0}, student, [teacher])
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    _, terms = method.forward_train(TrainBatch(x, y, torch.arange(6)))
    expected = 0.9 * kd(logit_standardize(student(x)), logit_standardize(teacher(x)), 2.0)
    torch.testing.assert_close(terms["kd"], expected)
    # Standardisation makes the KD term invariant to a positive rescaling of the teacher's logits.
    teacher.model.weight.data *= 3
    teacher.model.bias.data *= 3
    _, scaled = method.forward_train(TrainBatch(x, y, torch.arange(6)))
    torch.testing.assert_close(scaled["kd"], expected)
