"""`simkd`: Chen et al., "Knowledge Distillation with the Reused Teacher Classifier" (CVPR 2022, arXiv 2203.14001)."""

from __future__ import annotations

from dataclasses import dataclass

from kdlab.methods.base import register_method
from kdlab.methods.shared_head import SharedHeadDistiller
from kdlab.typed_config import bounded


@dataclass
class SimKDParams:
    feat_weight: float = 1.0  # β of MSE(proj(F_s), F_t)
    factor: int = bounded(2, ge=1)  # projector bottleneck factor f


@register_method("simkd", "SimKD: β·MSE(proj(F_s), F_t); predict with the frozen teacher classifier")
class SimKD(SharedHeadDistiller):
    """SimKD: the student's last-stage map goes through a projector (factor f) and the *teacher's* frozen final
    linear layer. L = β·MSE(proj(F_s), F_t) on x [+ β·MSE on x'] (no CE). Prediction, evaluation and export use
    projector + shared classifier, and the checkpoint holds both. The same code path as `atsc` with
    `adapt=false` (methods/shared_head.py); several teachers give one projector and shared classifier each."""

    Params = SimKDParams
