"""PNG plots with matplotlib's Agg backend (no display needed). Each function writes one file atomically."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.io import atomic_write_bytes


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_reliability(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    """One reliability diagram per model: accuracy per confidence bin (bars) against the diagonal.
    `curves[name]` has 'confidence', 'accuracy', 'count' per bin (`kdlab.metrics.reliability_bins`)."""
    plt = _pyplot()
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for ax, (name, r) in zip(axes[0], curves.items(), strict=True):
        bins = len(r["count"])
        width = 1.0 / bins
        centres = [(i + 0.5) * width for i in range(bins)]
        acc = [a if c > 0 else 0 for a, c in zip(r["accuracy"], r["count"], strict=True)]
        ax.bar(centres, acc, width=width * 0.95, color="#4c72b0", label="accuracy")
        gap = [f - a if c > 0 else 0 for f, a, c in zip(r["confidence"], acc, r["count"], strict=True)]
        ax.bar(centres, gap, bottom=acc, width=width * 0.95, color="#dd8452", alpha=0.5, label="gap")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=name)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(loc="upper left", fontsize=8)
    _save(fig, path)


def plot_attention_grid(images: torch.Tensor, masks: dict[str, torch.Tensor], path: Path) -> None:
    """Rows: example images (E, C, H, W) in [0, 1]; columns: the image, then each model's CAM mask (E, H, W)
    tinted over it (the attended region ≥ threshold in orange)."""
    plt = _pyplot()
    e = images.shape[0]
    if e == 0:
        return
    cols = 1 + len(masks)
    fig, axes = plt.subplots(e, cols, figsize=(1.6 * cols, 1.6 * e), squeeze=False)
    shown = images.permute(0, 2, 3, 1).clamp(0, 1).numpy()
    if shown.shape[-1] == 1:
        shown = shown[..., 0]
    for i in range(e):
        axes[i][0].imshow(shown[i], cmap="gray" if shown.ndim == 3 else None)
        for j, (name, m) in enumerate(masks.items(), start=1):
            axes[i][j].imshow(shown[i], cmap="gray" if shown.ndim == 3 else None)
            mask = m[i].numpy()
            axes[i][j].imshow(np.ma.masked_where(~mask, mask), cmap="autumn", alpha=0.5, vmin=0, vmax=1)
            if i == 0:
                axes[i][j].set_title(name, fontsize=8)
        if i == 0:
            axes[i][0].set_title("image", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    _save(fig, path)


def plot_training_curves(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch from metrics.jsonl records (train, test, agreement when present)."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    epochs = [r["epoch"] for r in records]
    ax_loss.plot(epochs, [r["train_loss"] for r in records], label="train loss")
    test = [(r["epoch"], r["test_loss"]) for r in records if "test_loss" in r]
    if test:
        ax_loss.plot(*zip(*test, strict=True), label="test loss")
    ax_acc.plot(epochs, [r["train_acc"] for r in records], label="train acc")
    for key in ("test_acc", "agreement"):
        pts = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
        if pts:
            ax_acc.plot(*zip(*pts, strict=True), label=key.replace("_", " "))
    ax_loss.set(xlabel="epoch", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="%", title="accuracy")
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=8)
    _save(fig, path)


def plot_metric_vs_axis(
    rows: Sequence[dict[str, Any]], axis: str, metrics: Sequence[str], path: Path, group: str | None = None
) -> None:
    """One panel per metric: mean ± std over seeds of `metric` against the sweep axis `axis` (categorical or
    numeric, in the order given), one line per value of `group` if set. Rows are flat dicts (sweep.csv rows)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.0), squeeze=False)
    xs = list(dict.fromkeys(str(r[axis]) for r in rows))
    groups = list(dict.fromkeys(str(r.get(group, "")) for r in rows)) if group else [""]
    for ax, metric in zip(axes[0], metrics, strict=True):
        for gval in groups:
            means, stds = [], []
            for x in xs:
                vals = [
                    float(r[metric])
                    for r in rows
                    if str(r[axis]) == x and (not group or str(r.get(group, "")) == gval) and _finite(r.get(metric))
                ]
                means.append(sum(vals) / len(vals) if vals else float("nan"))
                stds.append(_std(vals))
            ax.errorbar(range(len(xs)), means, yerr=stds, marker="o", capsize=3, label=gval or None)
        ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right", fontsize=8)
        ax.set(title=metric.replace("_", " "), xlabel=axis)
        if group:
            ax.legend(fontsize=7, title=group, title_fontsize=7)
    _save(fig, path)


def _finite(v: Any) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f and abs(f) != float("inf")


def _std(vals: list[float]) -> float:
    if len(vals) < 2:
        return 0.0
    m = sum(vals) / len(vals)
    return (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
