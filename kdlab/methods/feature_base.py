"""Shared machinery of feature-based methods: taps by role, shape probing, and the CE + KD + feature recipe
applied to the standard view and (with a strong view) to the teacher-labelled x' as well."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from kdlab.errors import ConfigError
from kdlab.losses import cross_entropy, kd
from kdlab.methods.base import Distiller, kept_modes, over_views
from kdlab.models.features import FeatureExtractor
from kdlab.typed_config import bounded
from kdlab.views import TrainBatch


@dataclass
class FeatureParams:
    """CRD-benchmark recipe for feature methods: 1·CE + 0·KD + β·feature loss (β per method)."""

    ce_weight: float = 1.0
    kd_weight: float = 0.0
    temperature: float = bounded(4.0, gt=0)
    feat_weight: float = 1.0
    # Weight of the teacher-labelled KD term on a strong view x' (default: kd_weight). The feature loss always
    # applies to x' too; with the recipe's kd_weight = 0, x' gets no KD term unless this is set (0.9: the TL
    # term of Wang et al., arXiv 2012.02909).
    strong_weight: float | None = None


def _paths(taps: dict[str, str], roles: tuple[str, ...], who: str) -> list[str]:
    missing = [r for r in roles if r not in taps]
    if missing:
        raise ConfigError(
            f"the {who} declares no tap for {missing}; give {who}.taps.{missing[0]}=MODULE_PATH in the config"
        )
    return [taps[r] for r in roles]


class FeatureDistiller(Distiller):
    """Base class. Subclasses name the tap roles they compare in `tap_roles()` (default ('feature',); e.g.
    ('stage1', 'stage2', 'stage3')), may build extra modules in `build_extras(s_shapes, t_shapes)`, and
    implement `feature_loss(s_feats, t_feats) -> scalar`. Feature lists follow `tap_roles()` order (the teacher's
    `teacher_tap_roles()`, when a method compares different roles, e.g. ReviewKD's pre-activations)."""

    Params: ClassVar[type] = FeatureParams

    def tap_roles(self) -> tuple[str, ...]:
        return ("feature",)

    def teacher_tap_roles(self) -> tuple[str, ...]:
        """The teacher's roles, matched to `tap_roles()` by position (default: the same roles)."""
        return self.tap_roles()

    def setup(self) -> None:
        if len(self.teachers) != 1:
            raise ConfigError(f"{type(self).__name__} distills from exactly one teacher")
        self.s_paths = _paths(self.student_taps, self.tap_roles(), "student")
        self.t_paths = _paths(self.teacher(0).taps, self.teacher_tap_roles(), "teacher")
        s_feats, t_feats = self._probe()
        self.build_extras([f.shape for f in s_feats], [f.shape for f in t_feats])

    @torch.no_grad()
    def _probe(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x = torch.zeros(2, *self.image_shape)
        with kept_modes(self.student):
            self.student.eval()
            _, s = self.student_features(x)
        _, t = self.teacher_features(x)
        return s, t

    def build_extras(self, s_shapes: list[torch.Size], t_shapes: list[torch.Size]) -> None:
        """Create trainable modules sized from the probed (B, C, H, W) feature shapes. Default: none."""

    def feature_loss(self, s_feats: list[torch.Tensor], t_feats: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def student_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with FeatureExtractor(self.student, self.s_paths) as fx:
            logits, feats = fx(x)
        return logits, [feats[p] for p in self.s_paths]

    @torch.no_grad()
    def teacher_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with FeatureExtractor(self.teacher(0).model, self.t_paths) as fx:
            logits, feats = fx(x)
        return logits, [feats[p] for p in self.t_paths]

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: FeatureParams = self.params
        views = batch.views()
        teacher = over_views(self.teacher_features, views)  # [view] → (logits, [role])
        terms: dict[str, torch.Tensor] = {}
        logits = torch.empty(0)
        for i, v in enumerate(views):
            s_logits, s_feats = self.student_features(v)
            t_logits, t_feats = teacher[i]
            suffix = "" if i == 0 else "_strong"
            if i == 0:
                logits = s_logits
                terms["ce"] = p.ce_weight * cross_entropy(s_logits, batch.y)
            w_kd = p.kd_weight if i == 0 or p.strong_weight is None else p.strong_weight
            if w_kd:
                terms["kd" + suffix] = w_kd * kd(s_logits, t_logits, p.temperature)
            terms["feat" + suffix] = p.feat_weight * self.feature_loss(s_feats, list(t_feats))
        return logits, terms


def pooled(f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C) global average pool (the penultimate embedding)."""
    return F.adaptive_avg_pool2d(f, 1).flatten(1) if f.ndim == 4 else f.flatten(1)
