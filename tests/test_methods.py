"""Every method trains on digits from a real teacher, composes with strong views, and round-trips through
checkpoint → eval → export (the prediction path included: SimKD predicts through its shared head)."""

import json
import math

import pytest
import torch
from conftest import digits_overrides, methods_for_any_student

from kdlab.commands.export import export_run
from kdlab.config import load_config
from kdlab.experiment import evaluate_path, load_trained, train
from kdlab.methods import METHODS
from kdlab.models import create_model
from kdlab.views import Normalize

FEATURE_AND_LOGIT = ["dkd", "dist", "fitnet", "at", "sp", "rkd", "pkt", "vid", "simkd", "crd"]


def _cfg(tmp_path, teacher, method, epochs=2, *extra):
    crd = ["method.nce_k=256"] if method == "crd" else []  # digits has 1,348 training images
    if METHODS.get(method).cls.needs_strong_view and not any(e.startswith("views.strong=") for e in extra):
        extra = (*extra, "views.strong=randaugment")  # MLKD's release trains on weak + RandAugment views
    return load_config(
        None,
        [*digits_overrides(tmp_path, epochs), f"method.name={method}", "student.name=resnet8",
         "teacher.name=resnet14", f"teacher.checkpoint={teacher}", *crd, *extra],
    )  # fmt: skip


def test_all_methods_are_registered():
    assert set(FEATURE_AND_LOGIT) | {"ce", "kd"} <= set(METHODS.names())


# Four methods are slow to start on 8×8 digits (AT's and PKT's feature terms dominate the first epochs; SP;
# MLKD's strong views), and where they end after 3 epochs swings with float rounding. Seeds 0/1/2 on 2026-12-06,
# contiguous | channels_last: at 30.3 34.7 39.2 | 19.4 23.6 39.4; pkt 34.5 42.8 24.7 | 22.5 42.5 45.9; sp 46.8 44.3
# 45.0 | 43.9 48.3 29.2; mlkd 30.5 92.0 82.2 | 31.8 93.8 76.6 (%). Every other method ends at ≥ 62% (seed 0). Their
# floor is 15%: still 3.5 standard deviations above chance (10% ± 1.4 on 449 test images).
SLOW_ON_DIGITS = {"at": 15, "pkt": 15, "sp": 15, "mlkd": 15}


@pytest.mark.parametrize("method", methods_for_any_student())
def test_method_trains_and_reloads(method, digits_teacher, tmp_path):
    run_dir, summary = train(_cfg(tmp_path, digits_teacher, method, 3), log=lambda _: None)
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(v == v for v in record.values())  # no NaN
    assert summary["last_epoch_test_acc"] > SLOW_ON_DIGITS.get(method, 25)  # 10 classes, 3 short epochs
    # The best checkpoint, rebuilt without the teacher's weight file, reproduces the logged accuracy.
    assert evaluate_path(run_dir)["test_acc"] == pytest.approx(summary["best_test_acc"], abs=1e-6)


# Where a teacher pays on digits: 5 training images per class, 60 epochs. Seeds 0/1/2 (2026-12-05), last-epoch
# test accuracy: CE 78.4 / 82.4 / 85.1; kd 89.8 / 92.4 / 88.2; wttm 89.1 / 86.2 / 88.6; ctkd 85.1 / 93.3 / 88.4;
# mlkd 95.1 / 94.7 / 94.4; reviewkd 86.0 / 85.8 / 88.9. NST, KDSVD and OFD add only a feature term to CE, and on
# 8×8 digits resnet8's last maps are 4×4 and 2×2: they end within CE's seed spread (nst 80.4 / 80.4 / 74.8,
# kdsvd 79.3 / 82.6 / 84.9, ofd 81.1 / 83.5 / 86.2), so there they are only required to train (above).
# The numbers above are in the contiguous layout; 60 epochs on 50 images amplify rounding, and with channels_last
# on 2 threads (2026-12-06) kd ended at 81.5 and ctkd at 79.3: the recipe pins its layout.
FEW_SHOT = ["data.train_per_class=5", "engine.eval_every=20", "engine.channels_last=false"]  # last epoch: evaluated
BEATS_CE_ON_FEW_DIGITS = ["kd", "wttm", "ctkd", "mlkd", "reviewkd"]


@pytest.fixture(scope="module")
def few_shot_ce_accuracy(digits_teacher, tmp_path_factory):
    cfg = _cfg(tmp_path_factory.mktemp("ce"), digits_teacher, "ce", 60, *FEW_SHOT)
    return train(cfg, log=lambda _: None)[1]["last_epoch_test_acc"]


@pytest.mark.parametrize("method", BEATS_CE_ON_FEW_DIGITS)
def test_method_beats_the_ce_student_where_the_teacher_pays(method, digits_teacher, few_shot_ce_accuracy, tmp_path):
    _, summary = train(_cfg(tmp_path, digits_teacher, method, 60, *FEW_SHOT), log=lambda _: None)
    assert summary["last_epoch_test_acc"] > few_shot_ce_accuracy + 4  # seed 0: CE 78.4, these 85–95


@pytest.mark.parametrize("method", ["dkd", "fitnet", "simkd", "crd"])
def test_method_composes_with_cutmix_pick(method, digits_teacher, tmp_path):
    run_dir, _ = train(_cfg(tmp_path, digits_teacher, method, 1, "views.strong=cutmix_pick"), log=lambda _: None)
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert any(k.endswith("_strong") for k in record) and record["pick_ratio"] > 1.0


def test_simkd_predicts_through_the_shared_head_and_exports(digits_teacher, tmp_path):
    run_dir, _ = train(_cfg(tmp_path, digits_teacher, "simkd", 1), log=lambda _: None)
    method, _, meta = load_trained(run_dir)
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    normalize = Normalize(meta["data"]["mean"], meta["data"]["std"])
    with torch.no_grad():
        via_head = method.predict(normalize(x.float() / 255))
        own_head = method.student(normalize(x.float() / 255))
    assert not torch.allclose(via_head, own_head)  # not the student's untrained fc
    # The shared classifier is the teacher's, frozen: identical to the teacher checkpoint's fc.
    teacher = create_model("resnet14", 10, 1)
    from kdlab.models.loading import load_weights

    load_weights(teacher, digits_teacher)
    torch.testing.assert_close(method.classifier(0).weight, teacher.fc.weight)
    card = export_run(run_dir, tmp_path / "export")
    program = torch.export.load(str(tmp_path / "export" / "model.pt2"))
    torch.testing.assert_close(program.module()(x), via_head)
    assert card["exported_parameters"] > card["student_parameters"]


def test_crd_negatives_are_of_other_classes_and_uniform():
    from kdlab.methods.crd import ContrastMemory, nce_loss

    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    mem = ContrastMemory(8, labels, k=4000, temperature=0.07, momentum=0.5)
    y = torch.tensor([0, 2, 3])
    neg = mem.sample_negatives(y, torch.Generator().manual_seed(0))
    assert neg.shape == (3, 4000)
    for row, cls in zip(neg, y.tolist()):
        assert bool((labels[row] != cls).all())
        counts = torch.bincount(row, minlength=10).float()
        allowed = labels != cls
        assert bool((counts[~allowed] == 0).all())
        expected = 4000 / int(allowed.sum())
        assert float((counts[allowed] - expected).abs().max()) < 0.25 * expected  # uniform over the others
    # NCE loss by hand: one positive score p and one negative score q, K=1, N=10 → noise = 0.1
    p, q = 0.5, 0.2
    expected = -(math.log(p / (p + 0.1)) + math.log(0.1 / (q + 0.1)))
    assert nce_loss(torch.tensor([[p, q]]), 10).item() == pytest.approx(expected, rel=1e-5)


def test_feature_method_takes_teacher_labelled_kd_on_the_strong_view_only_when_asked(digits_teacher, tmp_path):
    run_dir, _ = train(_cfg(tmp_path, digits_teacher, "at", 1, "views.strong=cutmix", "method.strong_weight=0.9"),
                       log=lambda _: None)  # fmt: skip
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["train_kd_strong"] > 0 and "train_kd" not in record  # kd_weight stays 0 on x
    assert record["train_feat_strong"] > 0
