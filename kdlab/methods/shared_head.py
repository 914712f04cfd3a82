"""The projector + shared teacher classifier, and the method SimKD and ATSC are both built on.

Chen et al., "Knowledge Distillation with the Reused Teacher Classifier" (SimKD, CVPR 2022) and Jang et al.,
"Adaptive Teaching with Shared Classifier for Knowledge Distillation" (ATSC, arXiv 2406.08528): the student's
last-stage map goes through a projector into each teacher's feature space and is classified by that
teacher's own final linear layer. SimKD keeps the teachers frozen; ATSC trains them with the student. Both are
`SharedHeadDistiller` with one code path, so `atsc` with `adapt=false` is `simkd`."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.errors import ConfigError
from kdlab.losses import align_spatial
from kdlab.methods.base import Distiller, Teacher, kept_modes, over_views
from kdlab.metrics.attention import class_summed_map
from kdlab.models.features import FeatureExtractor, get_module
from kdlab.models.tokens import token_layout
from kdlab.views import TrainBatch


class Projector(nn.Module):
    """Conv1×1(C_s→C_t/f) → BN → ReLU → Conv3×3(C_t/f→C_t/f, pad 1) → BN → ReLU → Conv1×1(C_t/f→C_t) → BN → ReLU,
    convolutions without bias (SimKD / ATSC, factor f = 2)."""

    def __init__(self, c_s: int, c_t: int, factor: int = 2):
        super().__init__()
        mid = c_t // factor
        self.net = nn.Sequential(
            nn.Conv2d(c_s, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, c_t, 1, bias=False),
            nn.BatchNorm2d(c_t),
            nn.ReLU(inplace=True),
        )

    def forward(self, f_s: torch.Tensor) -> torch.Tensor:
        return self.net(f_s)


def map_path(taps: dict[str, str], who: str) -> str:
    """The map a shared head reads: the `last_stage` tap where a model declares one (the CRD/SimKD code's
    `feat[-2]`, e.g. MobileNetV2's 160-channel last block), else its `feature` tap."""
    path = taps.get("last_stage", taps.get("feature"))
    if path is None:
        raise ConfigError(f"a shared-head method needs the {who}'s feature tap: {who}.taps.feature=MODULE_PATH")
    return path


def _check_head_reads_the_map(model: nn.Module) -> None:
    """A shared head classifies the pooled map; a ViT that classifies its class token instead (timm's
    global_pool='token', torchvision's ViT) has a classifier that never read that map: refused in one line."""
    layout = token_layout(model)
    if layout is None or layout[0] == 0:
        return
    pool = getattr(model, "global_pool", "token")
    if pool not in ("avg", "avgmax", "max"):
        raise ConfigError(
            f"a shared-head method reuses the teacher's classifier on its pooled patch map, but this ViT teacher "
            f"classifies its class token (global_pool={pool!r}); use a teacher trained with "
            "teacher.kwargs.global_pool=avg, or another method"
        )


def shared_logits(
    f_s: torch.Tensor, projectors: nn.ModuleList, classifiers: list[nn.Linear], t_sizes: list[tuple[int, int]]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mean over teachers k of classifier_k(GAP(proj_k(F_s))) (B, K), and the projected maps. The student map
    F_s (B, C_s, H, W) is average-pooled to teacher k's map size t_sizes[k] first when larger (released order)."""
    projected, logits = [], []
    for k, proj in enumerate(projectors):
        t_h, t_w = t_sizes[k]
        source = f_s
        if f_s.shape[-2] * f_s.shape[-1] > t_h * t_w:
            source = F.adaptive_avg_pool2d(f_s, (t_h, t_w))
        p = proj(source)
        projected.append(p)
        logits.append(classifiers[k](F.adaptive_avg_pool2d(p, 1).flatten(1)))
    return (logits[0] if len(logits) == 1 else torch.stack(logits).mean(0)), projected


class SharedHeadPredictor(nn.Module):
    """What inference needs of a shared-head method: images (B, C, H, W) → logits (B, K) through the student's
    map (module path `s_path`), the projectors and the teachers' classifiers — no teacher body."""

    def __init__(
        self, student: nn.Module, s_path: str, projectors: nn.ModuleList, classifiers: list[nn.Linear],
        t_sizes: list[tuple[int, int]],
    ):  # fmt: skip
        super().__init__()
        self.student, self.projectors, self.classifiers = student, projectors, nn.ModuleList(classifiers)
        self.s_path, self.t_sizes = s_path, t_sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with FeatureExtractor(self.student, [self.s_path]) as fx:
            _, feats = fx(x)
        heads: list[nn.Linear] = [m for m in self.classifiers if isinstance(m, nn.Linear)]
        return shared_logits(feats[self.s_path], self.projectors, heads, self.t_sizes)[0]


class SharedHeadDistiller(Distiller):
    """Student map F_s (B, C_s, H_s, W_s) → [average-pooled to teacher k's map size when larger, before
    projecting, as the released code does] → proj_k → GAP → classifier_k of teacher k; the prediction is the
    mean over teachers of these logits. On each view v ∈ {x, x'}:

        feat(v) = β · mean_k MSE(proj_k(F_s(v)), F_t^k(v))      (F_t^k pooled to the projected size when larger)

    as terms `feat` and `feat_strong` — the additive form of KD with a strong view. Frozen teachers run once
    over x and x' together; adaptive teachers (`adaptive`) run each view in train mode with gradients.
    Subclasses: SimKD (frozen), ATSC (adaptive, with its anchor and bias step)."""

    adaptive: ClassVar[bool] = False
    predicts_with_student_head = False

    def setup(self) -> None:
        self.s_path = map_path(self.student_taps, "student")
        for t in self._teachers():
            map_path(t.taps, "teacher")
            if "classifier" not in t.taps:
                raise ConfigError("a shared-head method needs the teacher's classifier: teacher.taps.classifier=PATH")
            self.classifier_of(t)  # a Linear, or a clear error now
            _check_head_reads_the_map(t.model)
        s_shape, t_shapes = self._probe()
        self.s_size = (int(s_shape[-2]), int(s_shape[-1]))
        self.t_sizes = [(int(s[-2]), int(s[-1])) for s in t_shapes]
        self.projectors = nn.ModuleList([Projector(s_shape[1], s[1], self.params.factor) for s in t_shapes])

    # ---------------------------------------------------------------------------------------------- models

    def _teachers(self) -> list[Teacher]:
        return [self.teacher(i) for i in range(len(self.teachers))]

    @staticmethod
    def classifier_of(t: Teacher) -> nn.Linear:
        head = get_module(t.model, t.taps["classifier"])
        if not isinstance(head, nn.Linear):
            raise ConfigError(f"the teacher's classifier tap {t.taps['classifier']!r} is not a Linear layer")
        return head

    def classifier(self, k: int) -> nn.Linear:
        """Teacher k's final linear layer: the shared classifier."""
        return self.classifier_of(self.teacher(k))

    @torch.no_grad()
    def _probe(self) -> tuple[torch.Size, list[torch.Size]]:
        x = torch.zeros(2, *self.image_shape)
        with kept_modes(self.student, self.teachers):
            self.student.eval()
            self.teachers.eval()
            f_s = self._student_map_and_logits(x)[0]
            t_shapes = [self._teacher_map(t, x)[1].shape for t in self._teachers()]
        return f_s.shape, t_shapes

    def _student_map_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F_s (B, C_s, H, W), the student's own logits (B, K))."""
        with FeatureExtractor(self.student, [self.s_path]) as fx:
            logits, feats = fx(x)
        return feats[self.s_path], logits

    @staticmethod
    def _teacher_map(t: Teacher, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(teacher logits (B, K), its map F_t (B, C_t, H, W))."""
        path = map_path(t.taps, "teacher")
        with FeatureExtractor(t.model, [path]) as fx:
            logits, feats = fx(x)
        return logits, feats[path]

    def _shared_logits(self, f_s: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """shared_logits through this method's projectors and its teachers' classifiers."""
        return shared_logits(
            f_s, self.projectors, [self.classifier(k) for k in range(len(self.teachers))], self.t_sizes
        )

    def inference_model(self) -> nn.Module:
        return SharedHeadPredictor(
            self.student, self.s_path, self.projectors, [self.classifier(k) for k in range(len(self.teachers))],
            self.t_sizes,
        )  # fmt: skip

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self._shared_logits(self._student_map_and_logits(x)[0])[0]

    def predict_with_class_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Through the shared heads: mean over teachers k of classifier_k applied to proj_k(F_s)."""
        logits, projected = self._shared_logits(self._student_map_and_logits(x)[0])
        maps = [class_summed_map(p, self.classifier(k).weight) for k, p in enumerate(projected)]
        return logits, maps[0] if len(maps) == 1 else torch.stack(maps).mean(0)

    # ---------------------------------------------------------------------------------------------- training

    def _teacher_outputs(self, views: list[torch.Tensor]) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """[view][teacher] (logits, map): frozen teachers over the views jointly without gradient; adaptive
        ones view by view in train mode with gradient (their BatchNorm sees each view alone, as the student's)."""
        if self.adaptive:
            return [[self._teacher_map(t, v) for t in self._teachers()] for v in views]
        with torch.no_grad():
            per_teacher = [over_views(functools.partial(self._teacher_map, t), views) for t in self._teachers()]
        return [[per_teacher[k][i] for k in range(len(per_teacher))] for i in range(len(views))]

    def feature_mse(
        self, projected: list[torch.Tensor], teacher: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        """mean_k MSE(proj_k(F_s), F_t^k), the larger map of each pair pooled to the smaller's size."""
        mses = [F.mse_loss(*align_spatial(p.float(), t_map.float())) for p, (_, t_map) in zip(projected, teacher)]
        return mses[0] if len(mses) == 1 else torch.stack(mses).mean()

    def view_terms(
        self,
        batch: TrainBatch,
        view: int,
        own_logits: torch.Tensor,
        teacher: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Extra terms of one view (ATSC's own-head CE and KD). Default: none."""
        return {}

    def step_terms(self) -> dict[str, torch.Tensor]:
        """Terms of the step as a whole (ATSC's anchor). Default: none."""
        return {}

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        views = batch.views()
        teacher = self._teacher_outputs(views)
        terms: dict[str, torch.Tensor] = {}
        logits = torch.empty(0)
        for i, v in enumerate(views):
            f_s, own = self._student_map_and_logits(v)
            shared, projected = self._shared_logits(f_s)
            suffix = "" if i == 0 else "_strong"
            terms["feat" + suffix] = self.params.feat_weight * self.feature_mse(projected, teacher[i])
            if i == 0:
                logits = shared
                terms.update(self.step_terms())
            terms.update(self.view_terms(batch, i, own, teacher[i]))
        return logits, terms

    # ---------------------------------------------------------------------------------------------- state

    def extra_modules(self) -> dict[str, nn.Module]:
        """The projectors and what prediction needs of the teachers: their classifiers when frozen; when
        adaptive, the whole teachers (their classifiers are part of the prediction path, resuming needs all)."""
        mods: dict[str, nn.Module] = {"projectors": self.projectors}
        if self.adaptive:
            for k, t in enumerate(self._teachers()):
                mods[f"teacher{k}"] = t.model
        else:
            mods["classifiers"] = nn.ModuleList([self.classifier(k) for k in range(len(self.teachers))])
        return mods

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        """Also reads checkpoints written before 2026-12-04: SimKD's `head.projector.*` / `head.classifier.*`,
        and frozen-teacher ATSC's whole `teacher{k}.*` (only the classifier is kept)."""
        remapped: dict[str, Any] = {}
        cls_paths = [f"{t.taps['classifier']}." for t in self._teachers()]
        for key, value in state.items():
            if key.startswith("head.projector."):
                key = "projectors.0." + key[len("head.projector.") :]
            elif key.startswith("head.classifier."):
                key = "classifiers.0." + key[len("head.classifier.") :]
            elif not self.adaptive and key.startswith("teacher") and "." in key:
                k_text, rest = key.split(".", 1)
                k = int(k_text[len("teacher") :])
                if not rest.startswith(cls_paths[k]):
                    continue
                key = f"classifiers.{k}." + rest[len(cls_paths[k]) :]
            remapped[key] = value
        super().load_checkpoint_state(remapped)
