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


def release_batch_fidelity(
    logits_s: torch.Tensor, logits_t: torch.Tensor, batch_size: int = 128, seed: int = 0
) -> dict[str, float]:
    """The fidelity numbers as the code released with Guo et al. (arXiv 2405.00739) computes them: per batch of
    `batch_size` rows in order, averaged over batches (a last partial batch counts as one): top-1 agreement
    (fraction), KL(p_S ‖ p_T) × 10 (nats; T = 1, batch mean), the k-NN MI of the top-1 labels (scikit-learn's
    `mutual_info_classif`, student labels as the feature; seeded here, unseeded in the release) and the exact
    discrete MI (`mutual_info_score`). logits (N, K) → floats. kdlab's own definitions (`fidelity_report`) use
    the whole split at once."""
    from sklearn.feature_selection import mutual_info_classif
    from sklearn.metrics import mutual_info_score

    sums = {"agreement": 0.0, "kl_s_t_x10": 0.0, "mutual_information_knn": 0.0, "mutual_information": 0.0}
    n_batches = 0
    for start in range(0, len(logits_s), batch_size):
        s, t = logits_s[start : start + batch_size], logits_t[start : start + batch_size]
        ys, yt = s.argmax(1), t.argmax(1)
        sums["agreement"] += float((ys == yt).double().mean())
        log_pt = F.log_softmax(t.double(), 1)
        p_s = F.softmax(s.double(), 1)
        sums["kl_s_t_x10"] += float((p_s * (p_s.clamp_min(1e-300).log() - log_pt)).sum(1).mean()) * 10
        mi = mutual_info_classif(ys.double().numpy()[:, None], yt.numpy(), discrete_features=False, random_state=seed)
        sums["mutual_information_knn"] += float(np.asarray(mi)[0])
        sums["mutual_information"] += float(mutual_info_score(yt.numpy(), ys.numpy()))
        n_batches += 1
    return {k: v / n_batches for k, v in sums.items()}
