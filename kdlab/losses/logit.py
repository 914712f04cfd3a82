"""Logit-based losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd(logits_s: torch.Tensor, logits_t: torch.Tensor, T: float = 4.0) -> torch.Tensor:
    """Hinton KD: T² · mean over the batch of KL(softmax(t/T) ‖ softmax(s/T)).

    logits_s, logits_t: (B, K). Returns a scalar (nats·T²). Computed in float32 whatever the input dtype."""
    log_p_s = F.log_softmax(logits_s.float() / T, dim=1)
    log_p_t = F.log_softmax(logits_t.float() / T, dim=1)
    return (T * T) * (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of (B, K) logits against int64 (B,) labels, in float32 (nats)."""
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
