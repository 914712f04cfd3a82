"""`crd`: Tian, Krishnan & Isola, "Contrastive Representation Distillation" (ICLR 2020, arXiv 1910.10699)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from kdlab.errors import ConfigError
from kdlab.losses import cross_entropy, kd
from kdlab.methods.base import over_views, register_method
from kdlab.methods.feature_base import FeatureDistiller, pooled
from kdlab.typed_config import bounded
from kdlab.views import TrainBatch


class Embed(nn.Module):
    """Linear(D → 128) + L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


class ContrastMemory(nn.Module):
    """Two momentum memory banks (student and teacher embeddings of every training sample) and the NCE
    scores of positives and K negatives against the *other* model's bank, as in the CRD code.

    Negatives are drawn per sample uniformly from the samples of other classes (CRD's `exact` mode), on
    the device, from `generator`. Under torchrun the momentum update gathers the whole global batch, so every
    process holds the same banks."""

    def __init__(self, dim: int, labels: torch.Tensor, k: int, temperature: float, momentum: float):
        super().__init__()
        n = len(labels)
        self.n, self.k, self.temperature, self.momentum = n, k, temperature, momentum
        stdv = 1.0 / math.sqrt(dim / 3)
        g = torch.Generator().manual_seed(0)
        self.memory_s: torch.Tensor
        self.memory_t: torch.Tensor
        self.register_buffer("memory_s", torch.rand(n, dim, generator=g) * 2 * stdv - stdv)
        self.register_buffer("memory_t", torch.rand(n, dim, generator=g) * 2 * stdv - stdv)
        # Normalisation constants Z, estimated on the first batch (−1: not yet), saved with the checkpoint.
        self.z: torch.Tensor
        self.register_buffer("z", torch.full((2,), -1.0))
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels)
        self.order: torch.Tensor
        self.start: torch.Tensor
        self.count: torch.Tensor
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("count", counts, persistent=False)
        self.register_buffer("start", torch.cumsum(counts, 0) - counts, persistent=False)
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def flush(self) -> None:
        """Apply the momentum update of the last batch. It is deferred to after that batch's backward pass (the
        method's post-step; the next forward or a checkpoint as a fallback) because the banks are saved for it;
        the next batch sees the same memory as with an immediate update."""
        if self._pending is None:
            return
        index, v_s, v_t = (_gather_from_all_processes(t) for t in self._pending)
        m = self.momentum
        self.memory_s[index] = F.normalize(self.memory_s[index] * m + v_s * (1 - m), dim=1)
        self.memory_t[index] = F.normalize(self.memory_t[index] * m + v_t * (1 - m), dim=1)
        self._pending = None

    def sample_negatives(self, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """(B, K) indices of samples whose class differs from y[b], uniform over them."""
        span = self.n - self.count[y]  # how many samples are of another class
        r = (torch.rand(len(y), self.k, generator=generator, device=y.device) * span[:, None]).long()
        r = r + (r >= self.start[y][:, None]) * self.count[y][:, None]  # skip the block of class y
        return self.order[r]

    def forward(
        self, v_s: torch.Tensor, v_t: torch.Tensor, index: torch.Tensor, negatives: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """v_s, v_t: (B, D) unit embeddings; index (B,); negatives (B, K). → (scores for the student's
        embedding against the teacher bank, and vice versa), each (B, K+1) with the positive first."""
        self.flush()
        idx = torch.cat([index[:, None], negatives], 1)
        # Scores against the whole bank in one (B, D)×(D, N) matmul, then gather the K+1 needed per row:
        # the same dot products as gathering (B, K+1, D) bank rows first, without moving K·B·D floats.
        out_s = torch.exp((v_s @ self.memory_t.t()).gather(1, idx) / self.temperature)
        out_t = torch.exp((v_t @ self.memory_s.t()).gather(1, idx) / self.temperature)
        with torch.no_grad():
            first = self.z < 0
            est = _mean_over_processes(torch.stack([out_s.mean(), out_t.mean()])) * self.n
            self.z.copy_(torch.where(first, est, self.z))
        self._pending = (index, v_s.detach().float(), v_t.detach().float())
        return out_s / self.z[0], out_t / self.z[1]


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather_from_all_processes(t: torch.Tensor) -> torch.Tensor:
    """Rows of `t` (B_r, …) from every process, concatenated in rank order (B_r may differ by process).
    Under torchrun every process then updates its memory banks with the whole global batch, so the banks
    stay identical across processes."""
    if _world() == 1:
        return t
    sizes = [torch.zeros(1, dtype=torch.long, device=t.device) for _ in range(_world())]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], device=t.device))
    top = int(max(s.item() for s in sizes))
    padded = torch.zeros((top, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(_world())]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(n.item())] for p, n in zip(parts, sizes, strict=True)])


def _mean_over_processes(t: torch.Tensor) -> torch.Tensor:
    if _world() == 1:
        return t
    out = t.clone()
    dist.all_reduce(out)
    return out / _world()


def nce_loss(scores: torch.Tensor, n_data: int, eps: float = 1e-7) -> torch.Tensor:
    """CRD's NCE loss of (B, K+1) scores, positive first: −mean_b[log D(pos) + Σ log(1 − D(neg))] with
    D(x) = x / (x + K/N)."""
    k = scores.shape[1] - 1
    noise = k / n_data
    pos = scores[:, 0]
    neg = scores[:, 1:]
    log_d1 = torch.log(pos / (pos + noise + eps))
    log_d0 = torch.log(noise / (neg + noise + eps))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


@dataclass
class CRDParams:
    ce_weight: float = 1.0
    kd_weight: float = 0.0  # CRD+KD in the paper: 1.0
    feat_weight: float = 0.8  # β
    temperature: float = bounded(4.0, gt=0)  # KD temperature (for kd_weight and the strong view)
    nce_k: int = bounded(16384, ge=1)
    nce_t: float = bounded(0.07, gt=0)
    nce_m: float = bounded(0.5, ge=0, lt=1)
    embed_dim: int = bounded(128, ge=1)
    strong_weight: float = 0.9  # teacher-labelled KD on x' (a strong view has no single memory index)


@register_method("crd", "CRD: ce + β·NCE contrast with a memory bank, β=0.8, K=16384, τ=0.07")
class CRD(FeatureDistiller):
    """CRD: embed the pooled penultimate features of student and teacher (linear → 128, L2-normalised),
    contrast each sample's embedding with the other model's memory of it (positive) and of K = 16384
    samples of other classes (negatives), NCE loss, τ = 0.07, memory momentum 0.5.
    L = CE + β·(L_s + L_t), β = 0.8 (RepDistiller `-r 1 -a 0 -b 0.8`). Needs the loader's sample indices and
    the training labels (`attach_train_labels`). With a strong view, x' gets a teacher-labelled KD term."""

    Params = CRDParams
    needs_train_labels = True

    def build_extras(self, s_shapes: list[torch.Size], t_shapes: list[torch.Size]) -> None:
        self.embed_s = Embed(s_shapes[0][1], self.params.embed_dim)
        self.embed_t = Embed(t_shapes[0][1], self.params.embed_dim)
        self.contrast: ContrastMemory | None = None
        self.generator: torch.Generator | None = None

    def attach_train_labels(self, labels: torch.Tensor, generator: torch.Generator | None) -> None:
        """Build the memory banks for the training split (labels: int64 (N,), on the training device)."""
        p: CRDParams = self.params
        if p.nce_k >= len(labels):
            raise ConfigError(f"method.nce_k={p.nce_k} must be smaller than the {len(labels)} training samples")
        self.contrast = ContrastMemory(p.embed_dim, labels.cpu(), p.nce_k, p.nce_t, p.nce_m).to(labels.device)
        self.generator = generator

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        if self.contrast is not None:
            self.contrast.flush()
        return super().checkpoint_state()

    def post_step(self, batch: TrainBatch, optimizer: torch.optim.Optimizer) -> None:
        """The banks' momentum update of this step, after its backward pass: inside the step, so a step
        captured as a CUDA graph replays it (the next batch sees the same memory either way)."""
        if self.contrast is not None:
            self.contrast.flush()

    def extra_modules(self) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {"embed_s": self.embed_s, "embed_t": self.embed_t}
        if self.contrast is not None:
            out["contrast"] = self.contrast
        return out

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: CRDParams = self.params
        assert self.contrast is not None, "attach_train_labels must be called before training"
        # x' needs only the teacher's logits: reused when the view computed them, else one joint forward
        known = batch.teacher_strong
        teacher = over_views(self.teacher_features, [batch.x] if known is not None else batch.views())
        t_logits = [out[0] for out in teacher] + (list(known) if known is not None else [])
        t_feat = teacher[0][1][0]
        logits, s_feats = self.student_features(batch.x)
        negatives = self.contrast.sample_negatives(batch.y, self.generator)
        out_s, out_t = self.contrast(
            self.embed_s(pooled(s_feats[0]).float()), self.embed_t(pooled(t_feat).float()), batch.index, negatives
        )
        n = self.contrast.n
        terms = {
            "ce": p.ce_weight * cross_entropy(logits, batch.y),
            "crd": p.feat_weight * (nce_loss(out_s, n) + nce_loss(out_t, n)),
        }
        if p.kd_weight:
            terms["kd"] = p.kd_weight * kd(logits, t_logits[0], p.temperature)
        if batch.x_strong is not None:
            terms["kd_strong"] = p.strong_weight * kd(self.student(batch.x_strong), t_logits[1], p.temperature)
        return logits, terms
