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


def release_iou(cams: list[torch.Tensor], batch: int = 128) -> float:
    """Guo et al.'s IoU scripts (IoU/calculate-IoU.py, calculate-IoU_3T.py), re-typed: per batch, each model's
    class-summed map (B, h, w) upsampled, min–max normalised per image (+1e-8), mask > 0.5; IoU = Σ∧ / Σ∨ over
    the batch, weighted by the batch's size."""
    total, count = 0.0, 0
    for start in range(0, len(cams[0]), batch):
        binary = []
        for cam in cams:
            c = cam[start : start + batch]
            r = F.interpolate(c.unsqueeze(0), size=(8, 8), mode="bilinear", align_corners=False).squeeze(0)
            n = torch.zeros_like(r)
            for i in range(len(c)):
                n[i] = (r[i] - r[i].min()) / (r[i].max() - r[i].min() + 1e-8)
            binary.append((n > 0.5).long())
        inter = torch.sum(torch.stack(binary).prod(0))
        union = torch.sum(torch.stack(binary).sum(0) > 0)
        total += (inter / union).item() * len(binary[0])
        count += len(binary[0])
    return total / count


def test_release_attention_iou_thresholds_at_half_and_weights_batches_by_size():
    from kdlab.commands.analysis import _run_models
    from kdlab.data.dataset import ImageSplit
    from kdlab.views import Normalize

    g = torch.Generator().manual_seed(0)
    n = 300  # batches of 128, 128, 44: weighting matters
    cams = {name: torch.rand(n, 4, 4, generator=g) for name in ("teacher0", "teacher1", "teacher2", "student")}

    def predictor(name: str):  # type: ignore[no-untyped-def]
        def predict(x: torch.Tensor):  # type: ignore[no-untyped-def]
            start = int(x[0, 0, 0, 0].round())  # the images carry their index
            return torch.zeros(len(x), 3), cams[name][start : start + len(x)]

        return predict

    images = torch.arange(n).view(n, 1, 1, 1).expand(n, 1, 8, 8).to(torch.uint8)
    split = ImageSplit(images, torch.zeros(n, dtype=torch.long))
    predictors = {k: predictor(k) for k in cams}
    out = _run_models(
        predictors, split, Normalize([0.0], [1 / 255]), None, torch.Generator(), 100, torch.device("cpu"), True, 0, 0.4
    )  # fmt: skip  (normalised x = the index)
    ours = out.iou_release
    assert ours["teacher0~student"] == pytest.approx(release_iou([cams["teacher0"], cams["student"]]), abs=1e-6)
    three = [cams["teacher0"], cams["teacher1"], cams["teacher2"]]
    assert ours["teachers"] == pytest.approx(release_iou(three), abs=1e-6)  # the release divides in float32
    assert ours["teacher0~student"] != pytest.approx(out.iou["teacher0~student"], abs=1e-3)  # 0.4 vs 0.5


def test_batch_iou_weighting_hand_case():
    from kdlab.metrics import batch_iou

    inter = torch.tensor([1, 1, 0])
    union = torch.tensor([1, 1, 2])
    # batches of 2: [2/2, 0/2] → plain mean ½, weighted (1·2 + 0·1) / 3
    assert batch_iou(inter, union, 2, weighted=False) == pytest.approx(0.5)
    assert batch_iou(inter, union, 2, weighted=True) == pytest.approx(2 / 3)
