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


def t_stddev_chunks(chunks: list[torch.Tensor], chunks_per_group: int) -> float:
    """T. stddev grouped as the code released with Wang et al. forms it: the teacher's softmax rows arrive in
    chunks — per training step, the batch of x, then (with a strong view) the batch of x' — and every
    `chunks_per_group` consecutive chunks (10 with x', 5 without: five steps) are pooled into one group mean,
    whatever the chunk sizes (a last partial batch is a chunk like any other). chunks: (n_i, K) probability
    rows → mean over classes of the unbiased std over groups of the group means. The incomplete last group
    is dropped; needs ≥ 2 groups."""
    groups = len(chunks) // chunks_per_group
    if groups < 2:
        raise ValueError(f"T. stddev needs at least 2 groups of {chunks_per_group} chunks, got {len(chunks)} chunks")
    means = [
        torch.cat(chunks[i * chunks_per_group : (i + 1) * chunks_per_group]).double().mean(0) for i in range(groups)
    ]
    return float(torch.stack(means).std(0, unbiased=True).mean())
