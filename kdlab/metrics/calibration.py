"""Accuracy and calibration: top-k accuracy, count-weighted expected calibration error, reliability bins."""

from __future__ import annotations

import torch


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """% of rows of logits (N, K) whose label (N,) is among their k largest (k capped at K): the exact count / N."""
    k = min(k, logits.shape[1])
    hits = (logits.argmax(1) == labels) if k == 1 else (logits.topk(k, 1).indices == labels[:, None]).any(1)
    return int(hits.sum()) / len(labels) * 100


def reliability_bins(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict[str, list[float]]:
    """Equal-width confidence bins over (0, 1] of softmax(logits) (N, K) against labels (N,).

    Returns per bin: 'confidence' (mean max-probability), 'accuracy' (fraction correct), 'count' (samples);
    empty bins have confidence and accuracy 0. A sample with confidence c falls in bin ceil(c·bins) − 1."""
    probs = logits.double().softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    idx = (conf * bins).ceil().long().clamp(1, bins) - 1
    count = torch.bincount(idx, minlength=bins).double()
    conf_sum = torch.bincount(idx, conf, minlength=bins)
    acc_sum = torch.bincount(idx, correct, minlength=bins)
    safe = count.clamp_min(1)
    return {
        "confidence": (conf_sum / safe).tolist(),
        "accuracy": (acc_sum / safe).tolist(),
        "count": count.tolist(),
    }


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE (%) = Σ_b (n_b / N)·|acc_b − conf_b| over equal-width confidence bins (the standard, count-weighted
    definition; the code released with Guo et al., arXiv 2405.00739, averaged the bins unweighted, which
    over-weights sparse bins)."""
    r = reliability_bins(logits, labels, bins)
    n = sum(r["count"])
    gaps = [c * abs(a - f) for c, a, f in zip(r["count"], r["accuracy"], r["confidence"], strict=True)]
    return sum(gaps) / n * 100


def ece_release(logits: torch.Tensor, labels: torch.Tensor, bins: int = 10) -> float:
    """ECE (%) as the code released with Guo et al. (arXiv 2405.00739) computes it: bins (m/M, (m+1)/M] of the
    top-1 confidence, |acc − conf| per bin (0 for an empty bin) averaged over all M bins, unweighted — sparse
    bins count as much as full ones. kdlab's `expected_calibration_error` weights bins by their counts."""
    probs = torch.softmax(logits.double(), 1)
    conf, pred = probs.max(1)
    correct = pred == labels
    gaps = []
    for m in range(bins):
        inside = (conf > m / bins) & (conf <= (m + 1) / bins)
        n = int(inside.sum())
        gaps.append(abs(float(correct[inside].double().sum()) / n - float(conf[inside].sum()) / n) if n else 0.0)
    return sum(gaps) / bins * 100
