"""Student–teacher fidelity (Guo et al., "Why does Knowledge Distillation work? Rethink its attention and
fidelity mechanism", arXiv 2405.00739): top-1 agreement, KL, mutual information of top-1 labels, entropy.

All take logits (N, K) of the whole evaluated split (not per batch) and return Python floats."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def agreement(logits_s: torch.Tensor, logits_t: torch.Tensor) -> float:
    """Top-1 agreement (%) between (N, K) student and teacher logits."""
    return float((logits_s.argmax(1) == logits_t.argmax(1)).float().mean()) * 100


def kl_divergence(logits_s: torch.Tensor, logits_t: torch.Tensor) -> float:
    """Mean over samples of KL(p_S ‖ p_T) at T = 1 (nats), as Guo et al. define fidelity KL."""
    log_ps = F.log_softmax(logits_s.double(), 1)
    log_pt = F.log_softmax(logits_t.double(), 1)
    return float((log_ps.exp() * (log_ps - log_pt)).sum(1).mean())


def mean_entropy(logits: torch.Tensor) -> float:
    """Mean entropy (nats) of softmax(logits) at T = 1 over (N, K) logits."""
    logp = F.log_softmax(logits.double(), 1)
    return float(-(logp.exp() * logp).sum(1).mean())


def label_entropy(labels: torch.Tensor, num_classes: int) -> float:
    """Entropy (nats) of the empirical distribution of int labels (N,)."""
    p = torch.bincount(labels.long(), minlength=num_classes).double() / labels.numel()
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def mutual_information(a: torch.Tensor, b: torch.Tensor, num_classes: int) -> float:
    """Exact discrete mutual information (nats) between two int label vectors (N,) with values in [0, K):
    Σ_ij p(i,j)·log(p(i,j) / (p(i)·p(j))) from the K×K contingency table. I(a; a) = H(a)."""
    joint = torch.bincount(a.long() * num_classes + b.long(), minlength=num_classes * num_classes)
    p_ab = joint.double().reshape(num_classes, num_classes) / a.numel()
    p_a, p_b = p_ab.sum(1, keepdim=True), p_ab.sum(0, keepdim=True)
    nz = p_ab > 0
    return float((p_ab[nz] * (p_ab[nz].log() - (p_a * p_b).expand_as(p_ab)[nz].log())).sum())


def knn_mutual_information(a: torch.Tensor, b: torch.Tensor, k: int = 3, seed: int = 0) -> float:
    """The k-NN estimator variant (nats): scikit-learn's `mutual_info_classif` (Ross 2014, k neighbours)
    between student labels a (N,), treated as a continuous feature (scikit-learn adds a tiny jitter to break
    ties), and teacher labels b (N,) as the discrete target. Biased low against the exact value for many
    classes; reported because Guo et al. report it."""
    from sklearn.feature_selection import mutual_info_classif

    x = a.double().numpy()[:, None]
    mi = mutual_info_classif(x, b.numpy(), discrete_features=False, n_neighbors=k, random_state=seed)
    return float(np.asarray(mi)[0])


def fidelity_report(logits_s: torch.Tensor, logits_t: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Every fidelity number of the student against one teacher (or the ensemble's mean logits)."""
    ys, yt = logits_s.argmax(1), logits_t.argmax(1)
    return {
        "agreement": agreement(logits_s, logits_t),
        "kl_s_t": kl_divergence(logits_s, logits_t),
        "mutual_information": mutual_information(ys, yt, num_classes),
        "mutual_information_knn": knn_mutual_information(ys, yt),
        "teacher_label_entropy": label_entropy(yt, num_classes),
    }
