"""`kdlab analyze RUN_DIR`: why did distillation work? Fidelity, mutual information, calibration, attention
IoU, generalisation and affinity of a trained student and its teacher(s)
(Guo et al., "Why does Knowledge Distillation work? Rethink its attention and fidelity mechanism", arXiv 2405.00739).

Writes into RUN_DIR/analysis (or RUN_DIR/analysis-<split> for other splits):
    analysis.json      every number below
    reliability.png    reliability diagrams (student, teachers)
    attention.png      example images with each model's class-agnostic CAM mask
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kdlab.config import teacher_configs
from kdlab.data import load_dataset
from kdlab.data.dataset import ImageSplit
from kdlab.data.streaming import StreamingDataset
from kdlab.errors import ConfigError
from kdlab.io import atomic_write_json
from kdlab.methods.base import Teacher, model_class_map
from kdlab.metrics import (
    batch_iou,
    ece_release,
    expected_calibration_error,
    fidelity_report,
    iou,
    iou_counts,
    mean_entropy,
    normalize_cam,
    release_batch_fidelity,
    reliability_bins,
    top_k_accuracy,
)
from kdlab.views import (
    REFERENCE_VIEW,
    STANDARD_VIEWS,
    VIEWS,
    Normalize,
    PresetView,
    StrongView,
    ViewOutput,
    build_view,
    to_unit,
)

# test, train: clean; test_aug: test images through a chosen view (--view); train_aug, val_aug: train and test
# images through the run's own training view (Guo et al.'s release measures "train" and "val_aug" so)
SPLITS = ("test", "train", "test_aug", "train_aug", "val_aug")
AUGMENTED = {"test_aug": "test", "train_aug": "train", "val_aug": "test"}  # split → the images it augments
Predictor = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# Guo et al.'s IoU scripts: mask = min–max CAM > 0.5, IoU pooled per batch of 128, batches weighted by size
RELEASE_IOU_THRESHOLD = 0.5
RELEASE_BATCH = 128
STREAMED_SAMPLES = 10_000  # a streamed dataset is analysed on this many images per split (or --max-samples)


@dataclass
class SplitOutputs:
    """Logits (N, K) of every model on one split, attention IoUs averaged over batches (kdlab's and the
    release's definitions), example masks."""

    labels: torch.Tensor
    logits: dict[str, torch.Tensor]
    iou: dict[str, float]
    iou_release: dict[str, float]
    example_images: torch.Tensor  # (E, C, H, W) in [0, 1]
    example_masks: dict[str, torch.Tensor]  # name → (E, H, W) bool
    example_labels: torch.Tensor  # (E,) class indices


class RunTrainingView(torch.nn.Module):
    """The run's own training view on float [0, 1] images (B, C, H, W): its standard view x in training mode,
    then its strong view x' where it has one (a scoring view by its unscored stand-in) → ViewOutput."""

    def __init__(self, standard: torch.nn.Module, strong: StrongView | None):
        super().__init__()
        self.standard, self.strong = standard, strong

    def forward(self, x: torch.Tensor, g: torch.Generator | None = None) -> ViewOutput:
        x = self.standard.train()(x, g)
        return self.strong(x, g) if self.strong is not None else ViewOutput(x)


def analysis_dir(run_dir: Path, split: str) -> Path:
    return run_dir / ("analysis" if split == "test" else f"analysis-{split}")


def analyze_run(
    run_dir: str | Path,
    dataset: str | None = None,
    split: str = "test",
    view: str | None = None,
    which: str = "last",
    max_samples: int | None = None,
    examples: int = 8,
    threshold: float = 0.4,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Analyse a finished (or partly trained) run folder; returns the analysis dict and writes its files.

    `split`: where fidelity, MI, ECE and attention are measured — test, train (the images the student
    trained on, clean), test_aug (test images through `view`, default the run's strong view or autoaugment),
    train_aug / val_aug (train / test images through the run's own training view, RunTrainingView). Accuracy
    and loss on every split are always reported (generalisation gap, affinity)."""
    from kdlab.assembly import views_for
    from kdlab.experiment import build_teacher, check_same_data, load_trained, resolve_device
    from kdlab.report.plots import plot_attention_grid, plot_reliability

    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    run_path = Path(run_dir)
    method, cfg, meta = load_trained(run_path, which)
    spec = dataset or cfg.data.dataset
    d = cfg.data
    data = load_dataset(
        spec, d.cache_dir, d.train_per_class, d.test_per_class if dataset is None else None, d.stream,
        d.memory_budget_gb, d.image_size,
    )  # fmt: skip
    if isinstance(data, StreamingDataset):  # decoded into memory: a spread-out sample of each split
        data = data.decoded(max_samples or STREAMED_SAMPLES)
    check_same_data(meta["data"], data, spec)
    device = resolve_device(cfg.engine.device)
    teachers: list[Teacher]
    if method.adaptive_teachers or not teacher_configs(cfg):
        teachers = [method.teacher(i) for i in range(len(method.teachers))]  # adapted weights come from the run
    else:
        stats = (meta["data"]["mean"], meta["data"]["std"])  # what the inputs are normalised with below
        teachers = [build_teacher(t, data, f"teacher{i}", stats) for i, t in enumerate(teacher_configs(cfg))]
    method.to(device).eval()
    predictors: dict[str, Predictor] = {}
    for i, t in enumerate(teachers):
        t.to(device).eval()
        predictors[f"teacher{i}"] = _teacher_predictor(t)
    predictors["student"] = method.predict_with_class_map
    normalize = Normalize(meta["data"]["mean"], meta["data"]["std"]).to(device)
    aug_view = view or cfg.views.strong or REFERENCE_VIEW
    size, mean = data.image_shape[1], meta["data"]["mean"]
    augment: torch.nn.Module
    if aug_view in STANDARD_VIEWS and aug_view not in VIEWS:  # a standard preset (weak, strong) as the view
        augment = PresetView(aug_view, size, mean, cfg.views.preset_family)
    else:
        aug_view = _unscored(aug_view)  # a scoring view needs a training student: its stand-in
        augment = build_view(aug_view, {}, size, mean)
    own = views_for(cfg, data)  # the run's own views, as its training built them
    own_strong = own.strong
    if own_strong is not None and own_strong.needs_scores and own_strong.unscored_stand_in:
        own_strong = build_view(own_strong.unscored_stand_in, {}, size, mean)  # the stand-in takes its defaults
    views: dict[str, torch.nn.Module] = {"test_aug": augment, "train_aug": RunTrainingView(own.standard, own_strong)}
    views["val_aug"] = views["train_aug"]
    for v in views.values():
        v.to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    def split_images(name: str) -> ImageSplit:
        s = data.train if AUGMENTED.get(name, name) == "train" else data.test
        return s if max_samples is None or len(s) <= max_samples else _spread(s, max_samples)

    own_name = cfg.views.standard + (f" + {cfg.views.strong}" if cfg.views.strong else "")
    log(f"analysing {run_path} on {spec} ({split}, {len(teachers)} teacher(s), test_aug: {aug_view}, own: {own_name})")
    outputs = {}
    for name in SPLITS:
        log(f"  {name}: {len(split_images(name))} images × {len(predictors)} models")
        with_masks = name == split
        outputs[name] = _run_models(
            predictors, split_images(name), normalize, views.get(name), gen,
            cfg.data.eval_batch_size, device, with_masks, examples, threshold,
        )  # fmt: skip
    main = outputs[split]
    names = list(predictors)
    report: dict[str, Any] = {
        "run": run_path.name,
        "checkpoint": which,
        "epoch": meta["epoch"],
        "dataset": spec,
        "split": split,
        "samples": int(main.labels.numel()),
        "test_aug_view": aug_view,
        "training_view": own_name,
        "models": {},
        "fidelity": {},
        "attention_iou": main.iou,
    }
    ensemble = None
    # The released code's definitions beside kdlab's (docs/fidelity.md): per batch of 128, KL × 10, ECE unweighted
    release: dict[str, Any] = {"fidelity": {}, "ece_10_unweighted": {}, "attention_iou": main.iou_release}
    if teachers:
        ensemble = torch.stack([main.logits[f"teacher{i}"] for i in range(len(teachers))]).mean(0)
        report["fidelity"]["ensemble"] = fidelity_report(main.logits["student"], ensemble, data.num_classes)
        release["fidelity"]["ensemble"] = release_batch_fidelity(main.logits["student"], ensemble)
        if len(teachers) > 1:
            for i in range(len(teachers)):
                t_logits = main.logits[f"teacher{i}"]
                report["fidelity"][f"teacher{i}"] = fidelity_report(main.logits["student"], t_logits, data.num_classes)
                release["fidelity"][f"teacher{i}"] = release_batch_fidelity(main.logits["student"], t_logits)
            report["models"]["ensemble"] = _model_numbers(ensemble, main.labels, outputs, None)
    for n in names:
        report["models"][n] = _model_numbers(main.logits[n], main.labels, outputs, n)
        release["ece_10_unweighted"][n] = ece_release(main.logits[n], main.labels, 10)
    report["release_definitions"] = release
    out_dir = analysis_dir(run_path, split)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = {n: reliability_bins(main.logits[n], main.labels, 15) for n in names}
    if ensemble is not None and len(teachers) > 1:
        curves["ensemble"] = reliability_bins(ensemble, main.labels, 15)
    report["reliability_15"] = curves
    plot_reliability(curves, out_dir / "reliability.png")
    classes = meta["data"].get("classes") or [str(i) for i in range(data.num_classes)]
    captions = [str(classes[int(k)]) for k in main.example_labels]
    plot_attention_grid(main.example_images, main.example_masks, out_dir / "attention.png", captions, threshold)
    atomic_write_json(out_dir / "analysis.json", report)
    log(f"written: {out_dir / 'analysis.json'}, reliability.png, attention.png")
    return report


def _unscored(view: str) -> str:
    """A view that scores with the training student (CutMixPick) by its unscored stand-in; others as they are."""
    cls = VIEWS.get(view)
    return cls.unscored_stand_in if cls.needs_scores and cls.unscored_stand_in else view


def _teacher_predictor(t: Teacher) -> Predictor:
    return lambda x: model_class_map(t.model, t.taps, x)


def _spread(split: ImageSplit, n: int) -> ImageSplit:
    """n images evenly spaced over `split` (splits are stored class by class: the first n would be a few
    classes)."""
    idx = torch.linspace(0, len(split) - 1, n).round().long().unique()
    return ImageSplit(split.images[idx], split.labels[idx])


def _model_numbers(
    logits: torch.Tensor, labels: torch.Tensor, outputs: dict[str, SplitOutputs], name: str | None
) -> dict[str, float]:
    """Accuracy, ECE (15 and 10 bins), entropy on the analysed split; train/test/test_aug accuracy and loss,
    the generalisation gap (train − test accuracy) and affinity (test_aug / test accuracy)."""

    def acc_loss(split: str) -> tuple[float, float]:
        o = outputs[split]
        if name is None:  # the teacher ensemble: mean of the teachers' logits
            lg = torch.stack([v for k, v in o.logits.items() if k.startswith("teacher")]).mean(0)
        else:
            lg = o.logits[name]
        return top_k_accuracy(lg, o.labels), float(F.cross_entropy(lg.double(), o.labels))

    numbers = {
        "accuracy": top_k_accuracy(logits, labels),
        "ece_15": expected_calibration_error(logits, labels, 15),
        "ece_10": expected_calibration_error(logits, labels, 10),
        "entropy": mean_entropy(logits),
    }
    for split in SPLITS:
        numbers[f"{split}_acc"], numbers[f"{split}_loss"] = acc_loss(split)
    numbers["generalization_gap"] = numbers["train_acc"] - numbers["test_acc"]
    numbers["affinity"] = numbers["test_aug_acc"] / numbers["test_acc"] if numbers["test_acc"] > 0 else math.nan
    return numbers


@torch.no_grad()
def _run_models(
    predictors: dict[str, Predictor],
    split: ImageSplit,
    normalize: Normalize,
    augment: torch.nn.Module | None,
    gen: torch.Generator,
    batch_size: int,
    device: torch.device,
    with_masks: bool,
    examples: int,
    threshold: float,
) -> SplitOutputs:
    """Every model over the split in fixed order; with masks: CAM IoU (teacher pairs, each teacher with the
    student, all models together) pooled per batch and averaged over batches — kdlab's (masks ≥ `threshold`,
    the eval batches, plain mean) and the release's (masks > 0.5, batches of 128 weighted by size) — and the
    masks of `examples` images."""
    logits: dict[str, list[torch.Tensor]] = {n: [] for n in predictors}
    labels_out, ious = [], {}
    teachers = [n for n in predictors if n.startswith("teacher")]
    pairs = {f"{a}~{b}": (a, b) for a, b in combinations(teachers, 2)}
    pairs.update({f"{t}~student": (t, "student") for t in teachers})
    if len(teachers) >= 3:  # the teachers' common attention, T1∧T2∧… (Guo et al.'s triple IoU)
        pairs["teachers"] = tuple(teachers)  # type: ignore[assignment]
    if len(predictors) >= 3:
        pairs["all"] = tuple(predictors)  # type: ignore[assignment]
    per_batch: dict[str, list[float]] = {k: [] for k in pairs}
    counts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {k: [] for k in pairs}  # release: per image
    ex_images: list[torch.Tensor] = []
    ex_labels: list[torch.Tensor] = []
    ex_masks: dict[str, list[torch.Tensor]] = {n: [] for n in predictors}
    ex_index = torch.linspace(0, len(split) - 1, examples).round().long().unique() if examples else torch.empty(0)
    for start in range(0, len(split), batch_size):
        images = split.images[start : start + batch_size].to(device)
        labels = split.labels[start : start + batch_size].to(device)
        x01 = to_unit(images)
        if augment is not None:
            out = augment(x01, gen)
            x01 = out.images
            if out.mix is not None:  # a mixed image is labelled by its larger part
                src, partner = labels[out.mix.src], labels[out.mix.partner]
                labels = torch.where(out.mix.lam >= 0.5, src, partner)
        x = normalize(x01)
        masks, release_masks = {}, {}
        for n, predict in predictors.items():
            lg, summed = predict(x)
            logits[n].append(lg.float().cpu())
            if with_masks:
                cam = normalize_cam(summed, (x.shape[-2], x.shape[-1]), None).cpu()
                masks[n], release_masks[n] = cam >= threshold, cam > RELEASE_IOU_THRESHOLD
        labels_out.append(labels.cpu())
        if with_masks:
            for key, members in pairs.items():
                per_batch[key].append(iou(*[masks[m] for m in members]))
                counts[key].append(iou_counts(*[release_masks[m] for m in members]))
            take = ex_index[(ex_index >= start) & (ex_index < start + x01.shape[0])] - start
            if take.numel():  # examples spread evenly over the split (test sets are often sorted by class)
                ex_images.append(x01.cpu()[take].float())
                ex_labels.append(labels.cpu()[take])
                for n in predictors:
                    ex_masks[n].append(masks[n][take])
    ious = {k: sum(v) / len(v) for k, v in per_batch.items() if v}
    release = {
        k: batch_iou(torch.cat([i for i, _ in v]), torch.cat([u for _, u in v]), RELEASE_BATCH, weighted=True)
        for k, v in counts.items()
        if v
    }
    return SplitOutputs(
        torch.cat(labels_out),
        {n: torch.cat(v) for n, v in logits.items()},
        ious,
        release,
        torch.cat(ex_images) if ex_images else torch.empty(0),
        {n: torch.cat(v) for n, v in ex_masks.items() if v},
        torch.cat(ex_labels) if ex_labels else torch.empty(0, dtype=torch.long),
    )


def analysis_summary(report: dict[str, Any]) -> dict[str, float]:
    """The flat numbers a sweep table needs from an analysis.json (NaN where not applicable)."""
    student = report["models"]["student"]
    fid = report["fidelity"].get("ensemble", {})
    tt = [v for k, v in report["attention_iou"].items() if k.count("teacher") == 2]
    ts = [v for k, v in report["attention_iou"].items() if k.endswith("~student")]
    return {
        "student_train_acc": student["train_acc"],
        "student_test_acc": student["test_acc"],
        "student_gap": student["generalization_gap"],
        "student_affinity": student["affinity"],
        "student_ece_15": student["ece_15"],
        "agreement": fid.get("agreement", math.nan),
        "kl_s_t": fid.get("kl_s_t", math.nan),
        "mutual_information": fid.get("mutual_information", math.nan),
        "mutual_information_knn": fid.get("mutual_information_knn", math.nan),
        "iou_teacher_teacher": sum(tt) / len(tt) if tt else math.nan,
        "iou_teacher_student": sum(ts) / len(ts) if ts else math.nan,
        "iou_all": report["attention_iou"].get("all", math.nan),
    }
