"""The diagnostics as the code released with Guo et al., "Why does Knowledge Distillation work? Rethink its
attention and fidelity mechanism" (arXiv 2405.00739) computes them (trainer.py, ECE/calculate_ece.py), re-typed
here on small inputs, against kdlab's `release_batch_fidelity` and `ece_release`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.feature_selection import mutual_info_classif
from sklearn.metrics import mutual_info_score

from kdlab.metrics import ece_release, expected_calibration_error, release_batch_fidelity


def release_kl(model1_logits, model2_logits):  # type: ignore[no-untyped-def]
    probs2 = F.softmax(model2_logits, dim=1)
    log_probs1 = F.log_softmax(model1_logits, dim=1, dtype=torch.double)
    return (F.kl_div(log_probs1, probs2, reduction="batchmean", log_target=False) * 10).item()


def release_fidelity(model1_logits, model2_logits):  # type: ignore[no-untyped-def]
    p1, p2 = F.softmax(model1_logits, dim=1), F.softmax(model2_logits, dim=1)
    return torch.sum(torch.argmax(p1, dim=1) == torch.argmax(p2, dim=1)).item() / len(model1_logits)


def release_mi(model1_logits, model2_logits):  # type: ignore[no-untyped-def]
    _, pred1 = model1_logits.topk(1, 1, True, True)
    _, pred2 = model2_logits.topk(1, 1, True, True)
    return mutual_info_classif(pred2.cpu(), np.squeeze(pred1).cpu(), random_state=0)[0]  # release: unseeded


def release_mis(model1_logits, model2_logits):  # type: ignore[no-untyped-def]
    _, pred1 = model1_logits.topk(1, 1, True, True)
    _, pred2 = model2_logits.topk(1, 1, True, True)
    return mutual_info_score(np.squeeze(pred1).cpu(), np.squeeze(pred2).cpu())


def release_ece(predict_output, label, n_bins=10):  # type: ignore[no-untyped-def]
    predict_output = torch.nn.functional.softmax(predict_output, dim=1)
    predict_index = torch.argmax(predict_output, dim=1)
    predict_value = predict_output[torch.arange(len(predict_output)), predict_index]
    acc, conf = np.zeros(n_bins), np.zeros(n_bins)
    for m in range(n_bins):
        a, b = m / n_bins, (m + 1) / n_bins
        indices = (predict_value > a) & (predict_value <= b)
        bm = indices.sum().item()
        if bm != 0:
            acc[m] = (indices & (predict_index == label)).sum().item() / bm
            conf[m] = predict_value[indices].sum().item() / bm
    return np.abs(acc - conf).mean()


def test_batch_fidelity_matches_the_release_per_batch_average():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(300, 5, generator=g) * 2
    s = t + torch.randn(300, 5, generator=g) * 1.5
    ours = release_batch_fidelity(s, t, batch_size=128)
    batches = [(s[i : i + 128], t[i : i + 128]) for i in range(0, 300, 128)]  # 128, 128, 44
    n = len(batches)
    # the release's calls: KL_divergence(teacher, student), get_fidelity(teacher, student), get_mi(teacher, …)
    assert ours["kl_s_t_x10"] == pytest.approx(sum(release_kl(tb, sb) for sb, tb in batches) / n, rel=1e-6)
    assert ours["agreement"] == pytest.approx(sum(release_fidelity(tb, sb) for sb, tb in batches) / n)
    assert ours["mutual_information"] == pytest.approx(sum(release_mis(tb, sb) for sb, tb in batches) / n)
    knn = sum(release_mi(tb, sb) for sb, tb in batches) / n
    assert ours["mutual_information_knn"] == pytest.approx(knn, rel=1e-6)


def test_unweighted_ece_matches_the_release_and_differs_from_kdlabs():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(500, 10, generator=g) * 3
    labels = torch.randint(0, 10, (500,), generator=g)
    assert ece_release(logits, labels, 10) == pytest.approx(release_ece(logits, labels, 10) * 100, rel=1e-6)
    assert ece_release(logits, labels, 10) != pytest.approx(expected_calibration_error(logits, labels, 10))


def test_three_teachers_get_their_common_attention_iou():
    """T1∧T2∧T3 over T1∨T2∨T3 of the teachers' CAM masks (the release's `T_T` mode), beside the pairs."""
    from kdlab.commands.analysis import _run_models
    from kdlab.data.dataset import ImageSplit
    from kdlab.views import Normalize

    h = w = 4

    def predictor(cols: list[int]):  # type: ignore[no-untyped-def]
        def predict(x: torch.Tensor):  # type: ignore[no-untyped-def]
            summed = torch.zeros(len(x), h, w)
            summed[:, :, cols] = 1.0  # attention on these columns
            return torch.zeros(len(x), 3), summed

        return predict

    predictors = {"teacher0": predictor([0, 1]), "teacher1": predictor([1, 2]), "teacher2": predictor([1, 3]),
                  "student": predictor([1])}  # fmt: skip
    split = ImageSplit(torch.zeros(6, 1, h, w, dtype=torch.uint8), torch.zeros(6, dtype=torch.long))
    out = _run_models(predictors, split, Normalize([0.5], [0.5]), None, torch.Generator(), 4, torch.device("cpu"),
                      True, 0, 0.4)  # fmt: skip
    assert out.iou["teachers"] == pytest.approx(1 / 4)  # column 1 of columns 0–3
    assert out.iou["teacher0~teacher1"] == pytest.approx(1 / 3)
