"""The diagnostics of Guo et al., arXiv 2405.00739 (fidelity, MI, ECE, CAM attention IoU), ensemble KD modes,
analyze, sweep and report."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess

import pytest
import torch
from conftest import digits_overrides

from kdlab.config import load_config
from kdlab.errors import ConfigError
from kdlab.experiment import train
from kdlab.losses import kd, logit_mse
from kdlab.methods.base import ensemble_loss, model_class_map
from kdlab.metrics import (
    agreement,
    class_agnostic_cam,
    class_summed_map,
    expected_calibration_error,
    iou,
    kl_divergence,
    label_entropy,
    mutual_information,
    reliability_bins,
)
from kdlab.models import create_model, model_taps


def test_agreement_of_identical_logits_is_100_and_mi_equals_the_label_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=g)
    labels = logits.argmax(1)
    assert agreement(logits, logits) == 100.0
    assert kl_divergence(logits, logits) == pytest.approx(0.0, abs=1e-12)
    assert mutual_information(labels, labels, 10) == pytest.approx(label_entropy(labels, 10), rel=1e-12)
    assert label_entropy(labels, 10) > 2.0  # ~log 10 = 2.30 for roughly uniform labels


def test_mutual_information_hand_case():
    # Joint of (a, b): (0,0)×2, (1,1)×1, (1,0)×1 → p(a)=(.5,.5), p(b)=(.75,.25).
    a, b = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 0])
    expected = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.25))
    expected += 0.25 * math.log(0.25 / (0.5 * 0.75))
    assert mutual_information(a, b, 2) == pytest.approx(expected, rel=1e-12)
    # Independent labels carry no information: a × b balanced over all 4 cells.
    assert mutual_information(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]), 2) == pytest.approx(0.0)


def test_ece_against_a_hand_computed_case():
    # Confidences 0.85 (correct), 0.85 (wrong), 0.65 (correct); 10 bins of width 0.1.
    p = torch.tensor([[0.85, 0.15], [0.85, 0.15], [0.65, 0.35]], dtype=torch.float64)
    logits, labels = p.log(), torch.tensor([0, 1, 0])
    # bin 0.8–0.9: conf 0.85, acc 0.5, n 2; bin 0.6–0.7: conf 0.65, acc 1, n 1 → (2·0.35 + 1·0.35) / 3.
    assert expected_calibration_error(logits, labels, 10) == pytest.approx(35.0, rel=1e-9)
    bins = reliability_bins(logits, labels, 10)
    assert bins["count"][8] == 2 and bins["count"][6] == 1 and sum(bins["count"]) == 3
    # Count-weighted, not the unweighted mean over bins (the released code's): 0.85 wrong ×1, 0.65 right ×3
    # → weighted (0.85 + 3·0.35) / 4 = 47.5%, unweighted (0.85 + 0.35) / 2 = 60%.
    p = torch.tensor([[0.85, 0.15], [0.65, 0.35], [0.65, 0.35], [0.65, 0.35]], dtype=torch.float64)
    ece = expected_calibration_error(p.log(), torch.tensor([1, 0, 0, 0]), 10)
    assert ece == pytest.approx(47.5, rel=1e-9)


def test_cam_of_a_linear_head_equals_the_explicit_weighted_sum():
    g = torch.Generator().manual_seed(1)
    fmap, weight = torch.randn(3, 4, 5, 5, generator=g), torch.randn(7, 4, generator=g)
    explicit = sum(
        sum(weight[k, c] * fmap[:, c] for c in range(4))  # the class-k map of a 1×1 convolution
        for k in range(7)
    )
    assert torch.allclose(class_summed_map(fmap, weight), explicit, atol=1e-5)
    # On a zoo model the spatial mean of the summed map + Σ bias is the sum of the logits (GAP commutes).
    model = create_model("resnet8", 10).eval()
    x = torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        logits, summed = model_class_map(model, model_taps("resnet8"), x)
    assert torch.allclose(summed.mean((1, 2)) + model.fc.bias.sum(), logits.sum(1), atol=1e-4)
    cam = class_agnostic_cam(fmap, weight, (20, 20), threshold=None)
    assert cam.shape == (3, 20, 20) and cam.min() == 0 and cam.max() == pytest.approx(1.0)


def test_iou_of_a_mask_with_itself_is_1_and_a_hand_case():
    g = torch.Generator().manual_seed(2)
    mask = class_agnostic_cam(torch.randn(4, 8, 4, 4, generator=g), torch.randn(5, 8, generator=g), (16, 16))
    assert 0 < mask.float().mean() < 1
    assert iou(mask, mask) == 1.0 and iou(mask, mask, mask) == 1.0
    a = torch.tensor([[[True, True, False, False]]])
    b = torch.tensor([[[False, True, True, False]]])
    c = torch.tensor([[[False, True, True, True]]])
    assert iou(a, b) == pytest.approx(1 / 3) and iou(a, b, c) == pytest.approx(1 / 4)


def test_ensemble_modes_and_logit_mse_against_hand_values():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t1, t2 = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    per_teacher = ensemble_loss(lambda a, b: kd(a, b, 4.0), s, [t1, t2], "per_teacher")
    mean_logits = ensemble_loss(lambda a, b: kd(a, b, 4.0), s, [t1, t2], "mean_logits")
    assert per_teacher == pytest.approx(float((kd(s, t1) + kd(s, t2)) / 2))
    assert mean_logits == pytest.approx(float(kd(s, torch.tensor([[1.0, 1.0, 0.0]]))))
    assert per_teacher > mean_logits  # KL is convex in the target: averaging targets first loses less
    assert float(logit_mse(s, t1)) == pytest.approx((1 + 0 + 1) / 3)


def test_unknown_ensemble_mode_is_a_config_error():
    from kdlab.methods.base import resolve_method_params

    with pytest.raises(ConfigError, match="per_teacher, mean_logits"):
        resolve_method_params({"name": "dkd", "ensemble": "average"})


@pytest.fixture(scope="module")
def ensemble_run(digits_teacher, tmp_path_factory):
    """KD from the same digits teacher given twice (so teacher–teacher agreement and IoU must be 1),
    mean-logits ensemble with the logit-MSE control term, an AutoAugment strong view, 3 epochs."""
    tmp = tmp_path_factory.mktemp("ensemble")
    t = f"{{name: resnet14, checkpoint: {digits_teacher}}}"
    overrides = [*digits_overrides(tmp, 3), "method.name=kd", "student.name=resnet8", f"teachers=[{t}, {t}]",
                 "method.ensemble=mean_logits", "method.mse_weight=0.01", "views.strong=autoaugment"]  # fmt: skip
    run_dir, summary = train(load_config(None, overrides), log=lambda _: None)
    return run_dir, summary


def test_analyze_a_two_teacher_run(ensemble_run):
    from kdlab.commands.analysis import analysis_summary, analyze_run

    run_dir, summary = ensemble_run
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["train_logit_mse"] > 0 and records[-1]["train_kd_strong"] > 0
    report = analyze_run(run_dir, log=lambda _: None)
    out = run_dir / "analysis"
    assert {"analysis.json", "reliability.png", "attention.png"} <= {p.name for p in out.iterdir()}
    assert report["attention_iou"]["teacher0~teacher1"] == 1.0  # the same teacher twice
    assert report["fidelity"]["teacher0"] == report["fidelity"]["teacher1"] == report["fidelity"]["ensemble"]
    student = report["models"]["student"]
    assert student["test_acc"] == pytest.approx(summary["last_epoch_test_acc"], abs=1e-6)
    assert student["generalization_gap"] == pytest.approx(student["train_acc"] - student["test_acc"])
    assert student["affinity"] == pytest.approx(student["test_aug_acc"] / student["test_acc"])
    fid = report["fidelity"]["ensemble"]
    assert 50 < fid["agreement"] <= 100 and 0 < fid["mutual_information"] <= fid["teacher_label_entropy"] + 1e-9
    assert 0 <= report["attention_iou"]["all"] <= report["attention_iou"]["teacher0~student"] <= 1
    flat = analysis_summary(json.loads((out / "analysis.json").read_text()))
    assert flat["iou_teacher_teacher"] == 1.0 and flat["agreement"] == fid["agreement"]
    # the released definitions beside kdlab's: per-batch agreement as a fraction of kdlab's whole-split %
    release = report["release_definitions"]
    assert release["fidelity"]["ensemble"]["agreement"] * 100 == pytest.approx(fid["agreement"], abs=5)
    assert set(release["ece_10_unweighted"]) == {"teacher0", "teacher1", "student"}
    assert set(release["attention_iou"]) == set(report["attention_iou"])  # masks > 0.5, batches of 128
    # the run's own training view (crop + flip, then its AutoAugment x') on the train and test images
    assert report["training_view"] == "crop_flip + autoaugment"
    assert student["val_aug_acc"] < student["test_acc"] and student["train_aug_acc"] < student["train_acc"]
    # a standard preset as the augmented view; metrics measured on val_aug, as the release's scripts do
    strong = analyze_run(run_dir, view="strong", split="val_aug", max_samples=200, log=lambda _: None)
    assert strong["test_aug_view"] == "strong" and 0 <= strong["models"]["student"]["test_aug_acc"] <= 100
    assert strong["split"] == "val_aug" and (run_dir / "analysis-val_aug" / "analysis.json").is_file()


def test_report_of_a_run_is_self_contained_and_renders_in_chromium(ensemble_run, tmp_path):
    from kdlab.report.html import write_report

    run_dir, _ = ensemble_run
    page = write_report(run_dir).read_text()
    assert "data:image/png;base64," in page and "Training curves" in page
    made = json.loads((run_dir / "provenance.json").read_text())
    assert f"started {made['started']}" in page and f"kdlab {made['kdlab_version']}" in page and "commit " in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (apt install chromium); the HTML checks above ran")
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400", f"--screenshot={shot}",
           (run_dir / "report.html").as_uri()]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("chromium did not finish within 120 s on this machine; the HTML checks above ran")
    assert done.returncode == 0, done.stderr[-2000:]
    from PIL import Image

    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    assert img.size == (1000, 1400) and hi - lo > 100  # not a blank page


def _figure_of(monkeypatch, plot, *args):  # type: ignore[no-untyped-def]
    """The matplotlib figure a plot function would save."""
    import kdlab.report.plots as plots

    seen = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: seen.append(fig))
    plot(*args)
    return seen[0]


def test_sweep_plot_draws_categories_as_points_with_seed_error_bars(monkeypatch, tmp_path):
    from kdlab.report.plots import plot_metric_vs_axis

    rows = [{"views.strong": v, "seed": s, "last_epoch_test_acc": 70 + i + 0.1 * s}
            for i, v in enumerate(["identity", "cutmix", "autoaugment"]) for s in (0, 1)]  # fmt: skip
    ax = _figure_of(
        monkeypatch, plot_metric_vs_axis, rows, "views.strong", ["last_epoch_test_acc"], tmp_path / "p"
    ).axes[0]
    (series,) = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert series.get_linestyle() == "None"  # categories: no line between them
    assert [t.get_text() for t in ax.get_xticklabels()] == ["identity\n(n=2)", "cutmix\n(n=2)", "autoaugment\n(n=2)"]
    lo, hi = ax.get_ylim()
    assert hi - lo >= 5  # 0.07-point seed noise is not magnified to fill the panel
    numeric = [{"optim.lr": lr, "seed": 0, "last_epoch_test_acc": 70 + lr} for lr in (0.01, 0.05, 0.1)]
    ax = _figure_of(
        monkeypatch, plot_metric_vs_axis, numeric, "optim.lr", ["last_epoch_test_acc"], tmp_path / "p"
    ).axes[0]
    (series,) = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert series.get_linestyle() == "-" and list(series.get_xdata()) == [0.01, 0.05, 0.1]  # a numeric axis


def test_run_curves_put_each_loss_on_its_own_axes_with_the_learning_rate(monkeypatch, tmp_path):
    from kdlab.report.plots import plot_training_curves

    records = [{"epoch": e, "lr": 0.1 / e, "train_loss": 3.0 / e, "train_acc": 10.0 * e, "test_loss": 1.0 / e,
                "test_acc": 9.0 * e} for e in (1, 2, 3)]  # fmt: skip
    fig = _figure_of(monkeypatch, plot_training_curves, records, tmp_path / "c")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["training loss", "test loss", "accuracy", "learning rate (epoch start)"]
    assert list(fig.axes[3].get_lines()[0].get_ydata()) == [0.1, 0.05, 0.1 / 3]


def test_attention_grid_has_class_captions_and_a_legend(monkeypatch, tmp_path):
    from kdlab.report.plots import plot_attention_grid

    images, masks = torch.rand(2, 3, 8, 8), {"teacher0": torch.rand(2, 8, 8) > 0.5}
    fig = _figure_of(monkeypatch, plot_attention_grid, images, masks, tmp_path / "a", ["cat", "dog"], 0.4)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["cat", "dog"] and "CAM ≥ 0.4" in fig.legends[0].get_texts()[0].get_text()


def test_sweep_page_links_each_run_to_its_page(tmp_path):
    from kdlab.report.html import write_report

    root = tmp_path / "sw"
    (root / "a").mkdir(parents=True)
    (root / "a" / "report.html").write_text("<html></html>")
    (root / "sweep.json").write_text(json.dumps({"config": "c.yaml", "grid": [["seed", [0, 1]]], "overrides": []}))
    (root / "sweep.csv").write_text("run,seed,state\na,0,finished\nb,1,failed\n")
    page = write_report(root).read_text()
    assert "<a href='a/report.html'>a</a>" in page and "<a href='b/'>b</a>" in page


def test_parse_grid_and_point_names():
    from kdlab.commands.sweep import grid_points, parse_grid, point_name

    axes = parse_grid("views.strong=[identity, cutmix] seed=[0,1] optim.lr=0.1")
    assert axes == [("views.strong", ["identity", "cutmix"]), ("seed", [0, 1]), ("optim.lr", [0.1])]
    points = grid_points(axes)
    assert len(points) == 4 and points[1] == {"views.strong": "identity", "seed": 1, "optim.lr": 0.1}
    assert point_name(points[1]) == "strong-identity_seed-1_lr-0.1"
    for bad in ("views.strong", "seed=[]", "seed=[0] seed=[1]"):
        with pytest.raises(ConfigError):
            parse_grid(bad)


def test_sweep_records_a_failure_continues_and_resume_reruns_only_unfinished(tmp_path):
    from kdlab.cli import main
    from kdlab.commands.sweep import Sweep

    config = tmp_path / "ce.yaml"
    config.write_text("data: {dataset: digits, crop_padding: 1, flip: false}\nstudent: {name: resnet8}\n"
                      "method: {name: ce}\nschedule: {epochs: 1}\n")  # fmt: skip
    out = tmp_path / "sweep"
    # lr 1e9 diverges to a non-finite loss: that run fails with kdlab's NaN error, the other finishes.
    rc = main(["sweep", "--config", str(config), "--grid", "optim.lr=[0.05, 1.0e9]", "--out", str(out),
               "--jobs", "2", "--max-samples", "300", "engine.progress=false"])  # fmt: skip
    assert rc == 1
    sweep = Sweep(out)
    assert [sweep.run_state(n) for n in sweep.names] == ["finished", "failed"]
    assert "non-finite" in sweep.status["lr-1.0e9"]["error"]
    md = (out / "sweep.md").read_text()
    assert "| 0.05 | 1/1 |" in md and "lr-1.0e9`: failed" in md
    assert (out / "sweep.csv").read_text().count("\n") == 3 and (out / "plots" / "metrics.png").is_file()
    finished_log = (out / "lr-0.05.log").read_text()
    assert main(["sweep", "--resume", str(out)]) == 1  # the diverging run fails again…
    assert (out / "lr-0.05.log").read_text() == finished_log  # …and the finished one was not rerun
    (out / ".sweep.lock").write_text(str(os.getpid()))  # as if another live `kdlab sweep` were running it
    assert main(["sweep", "--resume", str(out)]) == 2
    (out / ".sweep.lock").write_text("999999999")  # a dead one's lock is taken over
    assert main(["sweep", "--resume", str(out)]) == 1 and not (out / ".sweep.lock").exists()
    # A resumed sweep analyses as it was started (here on 300 images), without repeating the options.
    shutil.rmtree(out / "lr-0.05")
    (out / "lr-0.05.log").unlink()
    json_path = out / "status.json"
    json_path.write_text(json.dumps({k: v for k, v in json.loads(json_path.read_text()).items() if k != "lr-0.05"}))
    assert main(["sweep", "--resume", str(out)]) == 1
    assert "kdlab analyze " + str(out / "lr-0.05") + " --max-samples 300" in (out / "lr-0.05.log").read_text()
    assert main(["sweep", "--config", str(config)]) == 2  # a new sweep needs --grid
    assert main(["sweep", "--config", str(config), "--grid", "seed=[0]", "--out", str(out)]) == 2  # exists


def test_a_run_writes_its_report_by_default(tmp_path):
    cfg = load_config(None, [*digits_overrides(tmp_path, 1), "student.name=resnet8", "engine.report=true"])
    run_dir, _ = train(cfg, log=lambda _: None)
    page = (run_dir / "report.html").read_text()
    assert "Training curves" in page and "last_epoch_test_acc" in page


def test_analyze_goes_through_the_shared_head_of_simkd(digits_teacher, tmp_path):
    from kdlab.commands.analysis import analyze_run

    cfg = load_config(None, [*digits_overrides(tmp_path, 2), "student.name=resnet8", "method.name=simkd",
                             "teacher.name=resnet14", f"teacher.checkpoint={digits_teacher}"])  # fmt: skip
    run_dir, summary = train(cfg, log=lambda _: None)
    report = analyze_run(run_dir, log=lambda _: None)
    # The student's numbers are those of its prediction path (projector + teacher classifier) …
    assert report["models"]["student"]["test_acc"] == pytest.approx(summary["last_epoch_test_acc"], abs=1e-6)
    # … and so is its attention map: the teacher's classifier applied to the projected student map.
    assert 0 < report["attention_iou"]["teacher0~student"] <= 1


def test_sweep_runs_sharing_one_gpu_get_a_share_of_its_memory(monkeypatch):
    from kdlab.commands.sweep import MEMORY_FRACTION, child_env

    monkeypatch.delenv(MEMORY_FRACTION, raising=False)
    assert child_env(2, 4)[MEMORY_FRACTION] == "0.2375" and child_env(2, 4)["OMP_NUM_THREADS"] == "2"
    assert MEMORY_FRACTION not in child_env(None, 1)  # one run at a time: the whole device
    from kdlab.experiment import share_device_memory

    monkeypatch.setenv(MEMORY_FRACTION, "0.25")
    share_device_memory(torch.device("cpu"))  # a no-op off CUDA


def test_max_samples_takes_images_from_every_class():
    """Splits are stored class by class; `--max-samples 10` of 10 classes × 10 images takes one of each."""
    from kdlab.commands.analysis import _spread
    from kdlab.data import ImageSplit

    split = ImageSplit(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), torch.arange(100) // 10)
    assert _spread(split, 10).labels.tolist() == list(range(10))
