"""`simkd`: Chen et al., "Knowledge Distillation with the Reused Teacher Classifier" (CVPR 2022)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.errors import ConfigError
from kdlab.losses import align_spatial
from kdlab.methods.base import over_views, register_method
from kdlab.methods.feature_base import FeatureDistiller
from kdlab.methods.shared_head import SharedHead
from kdlab.metrics.attention import class_summed_map
from kdlab.models.features import FeatureExtractor, get_module
from kdlab.typed_config import bounded
from kdlab.views import TrainBatch


@dataclass
class SimKDParams:
    feat_weight: float = 1.0  # β of MSE(proj(F_s), F_t)
    factor: int = bounded(2, ge=1)  # projector bottleneck factor f


@register_method("simkd", "SimKD: β·MSE(proj(F_s), F_t); predict with the frozen teacher classifier")
class SimKD(FeatureDistiller):
    """SimKD: the student's last map goes through a projector (factor f) and the *teacher's* frozen final
    linear layer. L = β·MSE(proj(F_s), F_t) (maps aligned by adaptive pooling, no CE). Prediction, evaluation
    and export use projector + shared classifier, and the checkpoint holds both."""

    Params = SimKDParams
    predicts_with_student_head = False

    def build_extras(self, s_shapes: list[torch.Size], t_shapes: list[torch.Size]) -> None:
        t = self.teacher(0)
        if "classifier" not in t.taps:
            raise ConfigError("simkd needs the teacher's classifier: give teacher.taps.classifier=MODULE_PATH")
        head = get_module(t.model, t.taps["classifier"])
        if not isinstance(head, nn.Linear):
            raise ConfigError(f"the teacher's classifier tap {t.taps['classifier']!r} is not a Linear layer")
        self.t_size: tuple[int, int] = (int(t_shapes[0][-2]), int(t_shapes[0][-1]))
        self.head = SharedHead(s_shapes[0][1], t_shapes[0][1], head, self.params.factor, trainable=False)

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"head": self.head}

    def _student_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with FeatureExtractor(self.student, self.s_paths) as fx:
            _, feats = fx(x)
        projected = self.head.project(feats[self.s_paths[0]], self.t_size)
        return self.head.classify(projected), projected

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self._student_logits(x)[0]

    def predict_with_class_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Through the shared head: the teacher's classifier applied to proj(F_s)."""
        logits, projected = self._student_logits(x)
        return logits, class_summed_map(projected, self.head.classifier.weight)

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        views = batch.views()
        t_maps = [feats[0] for _, feats in over_views(self.teacher_features, views)]
        terms: dict[str, torch.Tensor] = {}
        logits = torch.empty(0)
        for i, v in enumerate(views):
            s_logits, projected = self._student_logits(v)
            p, t = align_spatial(projected, t_maps[i])
            terms["feat" if i == 0 else "feat_strong"] = self.params.feat_weight * F.mse_loss(p.float(), t.float())
            if i == 0:
                logits = s_logits
        return logits, terms
