"""Feature-based losses: pure functions, tensors in → scalar out, computed in float32.

Feature maps are (B, C, H, W); embeddings are (B, D). Where student and teacher maps differ in spatial
size, the caller aligns them (`align_spatial`)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


def align_spatial(f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool the larger of two (B, C, H, W) maps to the smaller one's H×W."""
    hs = (int(f_s.shape[-2]), int(f_s.shape[-1]))
    ht = (int(f_t.shape[-2]), int(f_t.shape[-1]))
    if hs == ht:
        return f_s, f_t
    if hs[0] * hs[1] > ht[0] * ht[1]:
        return F.adaptive_avg_pool2d(f_s, ht), f_t
    return f_s, F.adaptive_avg_pool2d(f_t, hs)


def fitnet(f_s_projected: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """FitNets (Romero et al., ICLR 2015): mean squared error between the regressed student hint and the
    teacher hint, both (B, C_t, H, W)."""
    return F.mse_loss(f_s_projected.float(), f_t.float())


def attention_map(f: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """AT's spatial attention: L2-normalised mean over channels of |f|^p, (B, C, H, W) → (B, H·W)."""
    return F.normalize(f.float().pow(p).mean(1).flatten(1), dim=1)


def at(f_s: torch.Tensor, f_t: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017) for one pair of maps: mean over batch and
    positions of (a_s − a_t)². Channels may differ; spatial sizes are aligned by pooling."""
    f_s, f_t = align_spatial(f_s, f_t)
    return (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()


def sp(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Similarity preserving (Tung & Mori, ICCV 2019): ‖norm(G_s) − norm(G_t)‖²_F / B², with G = F·Fᵀ the
    (B, B) Gram matrix of flattened features and rows L2-normalised."""
    b = f_s.shape[0]
    g_s = F.normalize(f_s.float().flatten(1) @ f_s.float().flatten(1).t(), dim=1)
    g_t = F.normalize(f_t.float().flatten(1) @ f_t.float().flatten(1).t(), dim=1)
    return (g_s - g_t).pow(2).sum() / (b * b)


def _pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp_min(eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _mean_of_positive(d: torch.Tensor) -> torch.Tensor:
    """Mean of the positive entries of d ≥ 0: d[d > 0].mean() without a boolean index (sized by the data: a host
    sync on a GPU)."""
    return d.sum() / (d > 0).sum()


def rkd(emb_s: torch.Tensor, emb_t: torch.Tensor, w_dist: float = 25.0, w_angle: float = 50.0) -> torch.Tensor:
    """Relational KD (Park et al., CVPR 2019): w_dist·distance loss + w_angle·angle loss (smooth L1), on
    (B, D) embeddings; distances are normalised by their mean over distinct pairs."""
    s, t = emb_s.float().flatten(1), emb_t.float().flatten(1)
    with torch.no_grad():
        d_t = _pairwise_distances(t)
        d_t = d_t / _mean_of_positive(d_t)
    d_s = _pairwise_distances(s)
    d_s = d_s / _mean_of_positive(d_s)
    loss_d = F.smooth_l1_loss(d_s, d_t)
    with torch.no_grad():
        v_t = F.normalize(t[None] - t[:, None], p=2, dim=2)
        a_t = torch.bmm(v_t, v_t.transpose(1, 2)).flatten()
    v_s = F.normalize(s[None] - s[:, None], p=2, dim=2)
    a_s = torch.bmm(v_s, v_s.transpose(1, 2)).flatten()
    loss_a = F.smooth_l1_loss(a_s, a_t)
    return w_dist * loss_d + w_angle * loss_a


def pkt(emb_s: torch.Tensor, emb_t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018): KL between the cosine-similarity
    distributions (shifted to [0, 1], row-normalised) of teacher and student (B, D) embeddings."""
    s = F.normalize(emb_s.float().flatten(1), dim=1, eps=eps)
    t = F.normalize(emb_t.float().flatten(1), dim=1, eps=eps)
    sim_s = (s @ s.t() + 1) / 2
    sim_t = (t @ t.t() + 1) / 2
    sim_s = sim_s / sim_s.sum(1, keepdim=True)
    sim_t = sim_t / sim_t.sum(1, keepdim=True)
    return (sim_t * torch.log((sim_t + eps) / (sim_s + eps))).mean()


def vid(pred_mean: torch.Tensor, pred_var: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Variational information distillation (Ahn et al., CVPR 2019): the negative Gaussian log-likelihood of
    the teacher map under the student's prediction, up to a constant: mean over all elements of
    ½·((f_t − μ)² / σ² + log σ²). pred_mean μ (B, C, H, W), pred_var σ² (C,) > 0 per channel, f_t like μ."""
    var = pred_var.float().view(1, -1, 1, 1)
    return (0.5 * ((f_t.float() - pred_mean.float()).pow(2) / var + var.log())).mean()


def _poly_kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over batch and channel pairs of (⟨a_i, b_j⟩)²: a (B, C_a, N), b (B, C_b, N) → scalar."""
    return (b @ a.transpose(1, 2)).pow(2).mean()


def nst(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """NST (Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer", arXiv
    1707.01219) for one pair of (B, C, H, W) maps: squared MMD with the polynomial kernel k(x, y) = (xᵀy)²
    between the channels' L2-normalised spatial responses; maps aligned by pooling, the teacher-only term
    carries no gradient. → scalar."""
    f_s, f_t = align_spatial(f_s.float(), f_t.float())
    s = F.normalize(f_s.flatten(2), dim=2)
    t = F.normalize(f_t.flatten(2), dim=2)
    return _poly_kernel_mean(t, t).detach() + _poly_kernel_mean(s, s) - 2 * _poly_kernel_mean(s, t)


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


class _RightSingular(torch.autograd.Function):
    """(singular values (B, r), right singular vectors (B, N, r)) of a tall batch (B, M, N), M ≥ N, r = N, with the
    exact gradient written out: V are the eigenvectors of AᵀA, so ∂L/∂A = U (diag(∂L/∂s) + 2 S·sym(F ∘ VᵀG)) Vᵀ,
    F_ij = 1/(s_j² − s_i²). Where two singular values are equal (a rank-deficient map: dead ReLU columns) that
    gradient is undefined, F_ij is infinite and autograd's own SVD backward returns NaN, which poisons every
    weight in one step; here those pairs contribute zero, as KDSVD's authors' TF gradient does (Lee et al., ECCV
    2018, sseung0703/SSKD_SVD `gradient_svd`). Elsewhere it equals autograd's."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        v = vh.transpose(-2, -1)
        ctx.save_for_backward(u, s, v)
        return s, v

    @staticmethod
    def backward(ctx: Any, grad_s: torch.Tensor | None, grad_v: torch.Tensor | None) -> torch.Tensor:
        u, s, v = ctx.saved_tensors
        mid = torch.zeros(s.shape + s.shape[-1:], dtype=s.dtype, device=s.device)
        if grad_v is not None:
            lam = s * s
            f = 1.0 / (lam[..., None, :] - lam[..., :, None])
            f = torch.where(torch.isfinite(f), f, torch.zeros_like(f))
            f = f * (1 - torch.eye(s.shape[-1], dtype=s.dtype, device=s.device))
            inner = f * (v.transpose(-2, -1) @ grad_v)
            mid = mid + s[..., :, None] * (inner + inner.transpose(-2, -1))
        if grad_s is not None:
            mid = mid + torch.diag_embed(grad_s)
        return u @ mid @ v.transpose(-2, -1)


def right_singular(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(singular values (B, r), right singular vectors (B, N, r)), r = min(M, N), of a batch of matrices (B, M, N);
    for tall or square ones (M ≥ N) with a gradient that stays finite where singular values tie (_RightSingular)."""
    if a.shape[-2] >= a.shape[-1]:
        return _RightSingular.apply(a)
    _, s, vh = torch.linalg.svd(a, full_matrices=False)
    return s, vh.transpose(-2, -1)


def _leading_singular(feat: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(singular values (B, n), right singular vectors (B, W, n)) of each sample's map reshaped to (C·H, W), both
    L2-normalised as KDSVD's release does (its PyTorch port reshapes NCHW maps, not the TF original's NHWC).
    A non-finite map (a diverged student) is decomposed as zeros: the run then stops on its non-finite CE term
    through the trainer's guard, not inside the SVD."""
    b, c, h, w = feat.shape
    s, v = right_singular(_finite(feat.float()).reshape(b, c * h, w))
    s, v = _finite(s), _finite(v)
    return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)


def _align_signs(v_s: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
    """The student's singular vectors (B, W, n_s) matched to the teacher's (B, W, n_t): for each teacher vector the
    student vector of largest |cosine|, with its sign. → (B, W, n_t)."""
    cosine = v_s.transpose(-2, -1) @ v_t
    best = cosine.abs().amax(1, keepdim=True)
    mask = torch.where(best == cosine.abs(), torch.sign(cosine), torch.zeros_like(cosine))
    return v_s @ mask


def kdsvd(feats_s: list[torch.Tensor], feats_t: list[torch.Tensor], k: int = 1) -> torch.Tensor:
    """KDSVD (Lee et al., "Self-supervised Knowledge Distillation Using Singular Value Decomposition", ECCV 2018)
    as mdistiller releases it: per stage, the teacher's k leading right singular vectors scaled by its singular
    values, the student's matched among its k + 3; the loss compares RBF kernels (σ² = 8) between consecutive
    stages' vectors: Σ_stages Σ (K_s − K_t)² / B. Stage maps (B, C, H, W) in order → scalar."""
    losses = []
    prev_s = prev_t = None
    for f_s, f_t in zip(feats_s, feats_t):
        s_t, v_t = _leading_singular(f_t, k)
        _, v_s = _leading_singular(f_s, k + 3)
        v_s = _align_signs(v_s, v_t)
        v_t, v_s = v_t * s_t[:, None], v_s * s_t[:, None]
        if prev_s is not None and prev_t is not None:
            rbf_s = torch.exp(-(v_s[:, :, None] - prev_s[:, None]).pow(2) / 8)
            rbf_t = torch.exp(-(v_t[:, :, None] - prev_t[:, None]).pow(2) / 8)
            losses.append(_finite((rbf_s - rbf_t.detach()).pow(2)).sum())
        prev_s, prev_t = v_s, v_t
    if not losses:
        raise ValueError("KDSVD compares consecutive stages: it needs at least two")
    return torch.stack(losses).sum() / feats_s[0].shape[0]


def ofd_margin(bn_weight: torch.Tensor, bn_bias: torch.Tensor) -> torch.Tensor:
    """OFD's per-channel margin from the BatchNorm before a ReLU (Heo et al., "A Comprehensive Overhaul of Feature
    Distillation", ICCV 2019): with σ = |γ|, μ = β, the mean of N(μ, σ²) below zero, E[x | x < 0] =
    μ − σ·φ(μ/σ)/Φ(−μ/σ), where Φ(−μ/σ) > 0.001, else −3σ. (C,), (C,) → (C,) float32."""
    s, m = bn_weight.detach().float().abs(), bn_bias.detach().float()
    z = -m / s
    cdf = torch.special.ndtr(z)
    gauss = -s * torch.exp(-(m / s).pow(2) / 2) / math.sqrt(2 * math.pi) / cdf.clamp_min(1e-30) + m
    return torch.where(cdf > 0.001, gauss, -3 * s)


def ofd(f_s: torch.Tensor, f_t: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """OFD's partial L2 between the connected student map and the teacher's pre-activation map, both (B, C, H, W),
    margin (C,): the teacher's negative responses below the margin count only where the student exceeds the
    margin, (s − m)²; elsewhere (s − t)² where t > 0, or where m < t ≤ 0 and s > t. Summed over C·H·W, averaged
    over the batch. → scalar."""
    s, t = f_s.float(), f_t.float()
    m = margin.to(s)[None, :, None, None]
    loss = (
        (s - m).pow(2) * ((s > m) & (t <= m))
        + (s - t).pow(2) * ((s > t) & (t > m) & (t <= 0))
        + (s - t).pow(2) * (t > 0)
    )
    return loss.abs().mean(0).sum()


def hierarchical_context_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """ReviewKD's HCL for one pair of (B, C, H, W) maps (Chen et al., "Distilling Knowledge via Knowledge Review",
    CVPR 2021): MSE at full resolution plus, for each of the levels 4, 2, 1 smaller than H, the MSE of both maps
    average-pooled to that size with weights 1/2, 1/4, 1/8; divided by the sum of the weights. → scalar."""
    s, t = f_s.float(), f_t.float()
    h = s.shape[2]
    loss = F.mse_loss(s, t)
    weight, total = 1.0, 1.0
    for level in (4, 2, 1):
        if level >= h:
            continue
        weight /= 2.0
        loss = loss + F.mse_loss(F.adaptive_avg_pool2d(s, level), F.adaptive_avg_pool2d(t, level)) * weight
        total += weight
    return loss / total
