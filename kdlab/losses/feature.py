"""Feature-based losses: pure functions, tensors in → scalar out, computed in float32.

Feature maps are (B, C, H, W); embeddings are (B, D). Where student and teacher maps differ in spatial
size, the caller aligns them (`align_spatial`)."""

from __future__ import annotations

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
