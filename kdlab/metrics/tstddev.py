"""T. stddev (Wang et al., arXiv 2012.02909): an a-priori quality score of an augmentation for a teacher.

Collect the teacher's softmax (T = 1) on the training stream (x and x'); every `group_size` consecutive
samples form a group k with mean probability vector m_k; T. stddev = mean over classes c of the unbiased
standard deviation over groups of m_k[c]. Lower is better (it tracked the student's test loss)."""

from __future__ import annotations

import torch


def t_stddev(probs: torch.Tensor, group_size: int = 640) -> float:
    """probs: (N, K) probability rows in stream order → T. stddev (a float). Needs N ≥ 2·group_size; the
    incomplete last group is dropped."""
    n, k = probs.shape
    groups = n // group_size
    if groups < 2:
        raise ValueError(f"T. stddev needs at least 2 groups of {group_size} samples, got {n} samples")
    means = probs[: groups * group_size].double().reshape(groups, group_size, k).mean(1)
    return float(means.std(0, unbiased=True).mean())
