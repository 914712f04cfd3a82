"""Logit-based losses: pure functions, tensors in → scalar out, computed in float32."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd(logits_s: torch.Tensor, logits_t: torch.Tensor, T: float = 4.0) -> torch.Tensor:
    """Hinton KD: T² · mean over the batch of KL(softmax(t/T) ‖ softmax(s/T)).

    logits_s, logits_t: (B, K). Returns a scalar (nats·T²). Computed in float32 whatever the input dtype."""
    log_p_s = F.log_softmax(logits_s.float() / T, dim=1)
    log_p_t = F.log_softmax(logits_t.float() / T, dim=1)
    return (T * T) * (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()


def logit_mse(logits_s: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
    """Direct logit matching: mean over batch and classes of (s − t)², in float32. (B, K), (B, K) → scalar.

    The control of Guo et al. (arXiv 2405.00739): pushing harder towards the teacher's logits than KL at a
    temperature does."""
    return (logits_s.float() - logits_t.float()).pow(2).mean()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of (B, K) logits against int64 (B,) labels, in float32 (nats)."""
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)


def _binary_kl(p_t: torch.Tensor, p_s: torch.Tensor) -> torch.Tensor:
    """Per-row KL between (B, 2) distributions."""
    return (p_t * (torch.log(p_t.clamp_min(1e-12)) - torch.log(p_s.clamp_min(1e-12)))).sum(1)


def dkd_parts(
    logits_s: torch.Tensor, logits_t: torch.Tensor, target: torch.Tensor, T: float = 4.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoupled KD's two parts per sample, each × T²: (TCKD (B,), NCKD (B,)).

    TCKD = KL over the binary split (target class, all others); NCKD = KL among the non-target classes
    (renormalised). Identity (Zhao et al. 2022, Eq. 5): KD = TCKD + (1 − p_t[target])·NCKD per sample."""
    s = logits_s.float() / T
    t = logits_t.float() / T
    # scatter, not F.one_hot: one_hot checks the labels' range on the host (a sync)
    gt = torch.zeros_like(s, dtype=torch.bool).scatter_(1, target[:, None], True)
    p_s, p_t = s.softmax(1), t.softmax(1)
    at = target[:, None]  # gather, not p[gt]: a boolean index counts its hits on the host (a sync)
    bin_s = torch.stack([p_s.gather(1, at)[:, 0], p_s.masked_fill(gt, 0).sum(1)], 1)
    bin_t = torch.stack([p_t.gather(1, at)[:, 0], p_t.masked_fill(gt, 0).sum(1)], 1)
    tckd = _binary_kl(bin_t, bin_s)
    log_q_s = F.log_softmax(s.masked_fill(gt, float("-inf")), 1).masked_fill(gt, 0)
    log_q_t = F.log_softmax(t.masked_fill(gt, float("-inf")), 1).masked_fill(gt, 0)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).sum(1)
    return tckd * T * T, nckd * T * T


def dkd(
    logits_s: torch.Tensor,
    logits_t: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    T: float = 4.0,
) -> torch.Tensor:
    """DKD (Zhao et al., CVPR 2022): α·TCKD + β·NCKD, batch mean, × T². CIFAR-100 recipe: α=1, β=8, T=4."""
    tckd, nckd = dkd_parts(logits_s, logits_t, target, T)
    return (alpha * tckd + beta * nckd).mean()


def _pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist(
    logits_s: torch.Tensor, logits_t: torch.Tensor, beta: float = 1.0, gamma: float = 1.0, T: float = 1.0
) -> torch.Tensor:
    """DIST (Huang et al., NeurIPS 2022): T²·[β·(1 − mean row Pearson) + γ·(1 − mean column Pearson)]
    of softmax(·/T). Inter-class relation = per-sample rows; intra-class = per-class columns."""
    y_s = (logits_s.float() / T).softmax(1)
    y_t = (logits_t.float() / T).softmax(1)
    inter = 1 - _pearson_rows(y_s, y_t).mean()
    intra = 1 - _pearson_rows(y_s.t(), y_t.t()).mean()
    return T * T * (beta * inter + gamma * intra)


def logit_standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Z-score each row of (B, K) logits (Sun et al., CVPR 2024, "Logit standardization in KD")."""
    x = logits.float()
    return (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + eps)


def wttm(logits_s: torch.Tensor, logits_t: torch.Tensor, T: float = 10.0) -> torch.Tensor:
    """WTTM (Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher Matching", ICLR 2024): mean over
    the batch of w · KL(p̃_t ‖ softmax(s)), with the power-transformed teacher p̃_t = p_t^γ / Σ_k p_t,k^γ =
    softmax(t/T) (γ = 1/T) and the sample weight w = Σ_k p_t,k^γ (large for uncertain teachers).
    (B, K), (B, K) → scalar, in float32."""
    t = logits_t.float()
    log_pt_gamma = F.log_softmax(t, 1) / T  # γ·log p_t
    weight = torch.logsumexp(log_pt_gamma, 1).exp()  # Σ_k p_t,k^γ
    log_q = F.log_softmax(t / T, 1)
    kl = (log_q.exp() * (log_q - F.log_softmax(logits_s.float(), 1))).sum(1)
    return (weight * kl).mean()


def class_correlation(logits_s: torch.Tensor, logits_t: torch.Tensor, T: float) -> torch.Tensor:
    """MLKD's class-level term (Jin et al., "Multi-Level Logit Distillation", CVPR 2023): ‖QₜᵀQₜ − QₛᵀQₛ‖²_F / K
    with Q = softmax(logits/T) (B, K), i.e. (K, K) class-correlation Gram matrices. → scalar."""
    p_s = (logits_s.float() / T).softmax(1)
    p_t = (logits_t.float() / T).softmax(1)
    return (p_t.t() @ p_t - p_s.t() @ p_s).pow(2).sum() / logits_s.shape[1]


def batch_correlation(logits_s: torch.Tensor, logits_t: torch.Tensor, T: float) -> torch.Tensor:
    """MLKD's instance-relation (batch-level) term: ‖QₜQₜᵀ − QₛQₛᵀ‖²_F / B with Q = softmax(logits/T) (B, K),
    i.e. (B, B) sample-similarity matrices. → scalar."""
    p_s = (logits_s.float() / T).softmax(1)
    p_t = (logits_t.float() / T).softmax(1)
    return (p_t @ p_t.t() - p_s @ p_s.t()).pow(2).sum() / logits_s.shape[0]


def below_median_fraction(values: torch.Tensor) -> torch.Tensor:
    """Fraction of the entries of a 1-D tensor that are ≤ its median (linear interpolation, NumPy's default
    percentile); a 0-dim tensor, computed on the device without a host sync."""
    v = values.float()
    return (v <= torch.quantile(v, 0.5)).float().mean()
