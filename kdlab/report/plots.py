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


ATTENDED = "#ff7f0e"  # the attended region's tint (and its legend patch)


def _attended_cmap() -> Any:
    from matplotlib.colors import ListedColormap

    return ListedColormap([ATTENDED])


def plot_attention_grid(
    images: torch.Tensor, masks: dict[str, torch.Tensor], path: Path, captions: Sequence[str] | None = None,
    threshold: float = 0.4,
) -> None:  # fmt: skip
    """Rows: example images (E, C, H, W) in [0, 1], each captioned (e.g. its class) when `captions` are given;
    columns: the image, then each model's class-agnostic CAM mask (E, H, W) tinted over it, with a legend."""
    plt = _pyplot()
    e = images.shape[0]
    if e == 0:
        return
    cols = 1 + len(masks)
    fig, axes = plt.subplots(e, cols, figsize=(1.7 * cols, 1.7 * e + 0.6), squeeze=False)
    shown = images.permute(0, 2, 3, 1).clamp(0, 1).numpy()
    if shown.shape[-1] == 1:
        shown = shown[..., 0]
    for i in range(e):
        axes[i][0].imshow(shown[i], cmap="gray" if shown.ndim == 3 else None)
        if captions is not None:
            axes[i][0].text(-0.08, 0.5, captions[i], transform=axes[i][0].transAxes, ha="right", va="center",
                            fontsize=8)  # fmt: skip
        for j, (name, m) in enumerate(masks.items(), start=1):
            axes[i][j].imshow(shown[i], cmap="gray" if shown.ndim == 3 else None)
            mask = m[i].numpy()
            axes[i][j].imshow(np.ma.masked_where(~mask, mask), cmap=_attended_cmap(), alpha=0.5, vmin=0, vmax=1)
            if i == 0:
                axes[i][j].set_title(name, fontsize=8)
        if i == 0:
            axes[i][0].set_title("image", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=ATTENDED, alpha=0.5, label=f"attended: class-agnostic CAM ≥ {threshold}")],
               loc="lower center", fontsize=8, frameon=False)  # fmt: skip
    _save(fig, path)


def plot_training_curves(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Four panels per epoch from metrics.jsonl records: training loss, test loss (own axes: their scales
    differ), accuracy (train, test, agreement with the teacher when present) and the learning rate."""
    plt = _pyplot()
    fig, (ax_train, ax_test, ax_acc, ax_lr) = plt.subplots(1, 4, figsize=(14, 3.2))
    epochs = [r["epoch"] for r in records]
    ax_train.plot(epochs, [r["train_loss"] for r in records], marker=".", color="#4c72b0")
    test = [(r["epoch"], r["test_loss"]) for r in records if "test_loss" in r]
    if test:
        ax_test.plot(*zip(*test, strict=True), marker=".", color="#c44e52")
    ax_acc.plot(epochs, [r["train_acc"] for r in records], label="train")
    for key, label in (("test_acc", "test"), ("agreement", "agreement with teacher")):
        pts = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
        if pts:
            ax_acc.plot(*zip(*pts, strict=True), label=label)
    ax_lr.plot(epochs, [r["lr"] for r in records], drawstyle="steps-post", color="#55a868")
    ax_train.set(xlabel="epoch", ylabel="loss (sum of terms)", title="training loss")
    ax_test.set(xlabel="epoch", ylabel="cross-entropy (nats)", title="test loss")
    ax_acc.set(xlabel="epoch", ylabel="%", title="accuracy")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate (epoch start)")
    ax_acc.legend(fontsize=8)
    for ax in (ax_train, ax_test, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def plot_metric_vs_axis(
    rows: Sequence[dict[str, Any]], axis: str, metrics: Sequence[str], path: Path, group: str | None = None
) -> None:
    """One panel per metric: mean ± std over seeds (error bars; n per point in the tick labels) of `metric`
    against the sweep axis `axis`. A categorical axis (view names, methods) is drawn as categories — points,
    no lines between them; a numeric one as a line over its values. One series per value of `group` if set,
    side by side. The y range spans at least a few units of the metric, so seed noise is not blown up."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.8 * len(metrics), 3.4), squeeze=False)
    xs = list(dict.fromkeys(str(r[axis]) for r in rows))
    numeric = all(_finite(x) for x in xs)
    positions = [float(x) for x in xs] if numeric else list(range(len(xs)))
    groups = list(dict.fromkeys(str(r.get(group, "")) for r in rows)) if group else [""]
    for ax, metric in zip(axes[0], metrics, strict=True):
        lows, highs, counts = [], [], [0] * len(xs)
        for gi, gval in enumerate(groups):
            means, stds = [], []
            for xi, x in enumerate(xs):
                vals = [
                    float(r[metric])
                    for r in rows
                    if str(r[axis]) == x and (not group or str(r.get(group, "")) == gval) and _finite(r.get(metric))
                ]
                counts[xi] = max(counts[xi], len(vals))
                means.append(sum(vals) / len(vals) if vals else float("nan"))
                stds.append(_std(vals))
            shift = 0.0 if numeric or len(groups) == 1 else (gi - (len(groups) - 1) / 2) * 0.12
            ax.errorbar([p + shift for p in positions], means, yerr=stds, marker="o", capsize=3,
                        linestyle="-" if numeric else "none", label=gval or None)  # fmt: skip
            lows += [m - s for m, s in zip(means, stds, strict=True) if _finite(m)]
            highs += [m + s for m, s in zip(means, stds, strict=True) if _finite(m)]
        if lows:
            lo, hi = min(lows), max(highs)
            span = max(hi - lo, _min_span(metric, (lo + hi) / 2))
            mid = (lo + hi) / 2
            ax.set_ylim(mid - 0.6 * span, mid + 0.6 * span)
        labels = [f"{x}\n(n={n})" if n > 1 else x for x, n in zip(xs, counts, strict=True)]
        if numeric:
            ax.set_xticks(positions, labels, fontsize=8)
        else:
            ax.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
            ax.set_xlim(-0.5, len(xs) - 0.5)
        ax.set(title=metric.replace("_", " "), xlabel=axis)
        ax.grid(axis="y", alpha=0.3)
        if group:
            ax.legend(fontsize=7, title=group, title_fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _min_span(metric: str, centre: float) -> float:
    """The smallest y span for a panel: 5 points for percentages, else 10 % of the value (or 0.1)."""
    if metric.endswith(("_acc", "agreement", "_gap", "accuracy")) or "acc" in metric:
        return 5.0
    return max(0.1 * abs(centre), 0.1)


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
