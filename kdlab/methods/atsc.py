"""`atsc`: adaptive teaching with a shared classifier (Jang, Kim, Lim, Lee; arXiv 2406.08528).

The student's last feature map goes through a projector (factor f) and each teacher's *own* final linear
layer (the shared classifier). The pretrained teachers are trained jointly with the student in the same
optimiser (train mode, features not detached), anchored to their pretrained weights:

    L = β·MSE(proj_k(F_s), F_t^k) + w·Σ_{θ∈W_k} ‖θ − θ₀‖²   (+ c·CE(student head) + d·KD(student head))

averaged over teachers k, with W_k = the teacher's weights with ndim > 1 (conv and fc weights; not BN
parameters, not the fc bias). After each optimiser step a second step re-runs the updated teachers and
applies CE(t_k(x), y) to the shared classifiers' biases only. `adapt=false` freezes the teachers: SimKD.

Guards that the published recipe does not use (all off by default): `anchor_bn` adds the teachers' BatchNorm
weights and biases to the anchor, `teacher_lr_scale` gives the teachers a smaller learning rate,
`teacher_bn_eval` keeps the teachers' BatchNorm in eval mode. On 100 CIFAR-100 images per class with a 52%
resnet20 teacher, the unguarded teacher drifted to 3.5% test accuracy in the first epoch, mostly through its
last stage's unanchored BatchNorm parameters and running statistics; of the three guards only `anchor_bn` kept
it (docs/results.md).

Several teachers (kdlab's reading of the paper's multi-teacher extension, which the released code lacks): one
projector and one adaptive shared classifier per teacher; the prediction is the mean of the per-teacher
logits. Evaluation, `best` selection and export use this path, never the student's own head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.errors import ConfigError
from kdlab.losses import align_spatial, cross_entropy, kd
from kdlab.methods.base import Distiller, Teacher, register_method
from kdlab.methods.shared_head import Projector
from kdlab.metrics.attention import class_summed_map
from kdlab.models.features import FeatureExtractor, get_module
from kdlab.typed_config import bounded
from kdlab.views import TrainBatch


@dataclass
class ATSCParams:
    feat_weight: float = 1.0  # β
    anchor_weight: float = 1.0  # w: 1 on CIFAR, 10 on ImageNet
    ce_weight: float = 0.0  # c: CE on the student's own head (0 in the published recipe)
    kd_weight: float = 0.0  # d: KD on the student's own head (0 in the published recipe)
    temperature: float = bounded(4.0, gt=0)
    factor: int = bounded(2, ge=1)
    adapt: bool = True  # false: frozen teachers, i.e. SimKD
    bias_step: bool = True  # the second step: CE of the re-run teacher on the shared classifier's bias
    # Guards against the adaptive teacher drifting away (kdlab's options, off in the published recipe):
    anchor_bn: bool = False  # anchor the teachers' BatchNorm weights and biases to θ₀ too
    teacher_lr_scale: float = bounded(1.0, ge=0)  # the teachers' learning rate relative to the student's
    teacher_bn_eval: bool = False  # teachers' BatchNorm layers use (and keep) their running statistics


@register_method("atsc", "ATSC: projector + adaptive teacher classifier; β·MSE + w·‖θ−θ₀‖², bias step")
class ATSC(Distiller):
    Params = ATSCParams
    predicts_with_student_head = False

    def setup(self) -> None:
        params: ATSCParams = self.params
        if "feature" not in self.student_taps:
            raise ConfigError("atsc needs the student's feature tap: student.taps.feature=MODULE_PATH")
        for t in self._teachers():
            for role in ("feature", "classifier"):
                if role not in t.taps:
                    raise ConfigError(f"atsc needs the teacher's {role} tap: teacher.taps.{role}=MODULE_PATH")
            if params.adapt:
                t.make_adaptive()
        self.s_path = self.student_taps["feature"]
        s_shape, t_shapes = self._probe()
        self.t_sizes = [(int(s[-2]), int(s[-1])) for s in t_shapes]
        self.projectors = nn.ModuleList([Projector(s_shape[1], s[1], params.factor) for s in t_shapes])
        # θ₀: the pretrained values of each teacher's weights with ndim > 1, as non-persistent buffers (they
        # move with the module; rebuilt from the teacher checkpoint at every build, so a resumed run anchors
        # to the same point).
        self._anchor_names: list[list[tuple[str, str]]] = []
        for k, t in enumerate(self._teachers()):
            names = []
            fc_bias = f"{t.taps['classifier']}.bias"
            for name, p in t.model.named_parameters():
                if p.ndim > 1 or (params.anchor_bn and name != fc_bias):
                    buf = f"theta0_{k}_{name.replace('.', '_')}"
                    self.register_buffer(buf, p.detach().clone(), persistent=False)
                    names.append((name, buf))
            self._anchor_names.append(names)

    def param_groups(self) -> list[dict[str, Any]]:
        """Student and extra modules at the scheduled rate; the adaptive teachers at teacher_lr_scale × it."""
        teacher_params = {id(p) for t in self._teachers() for p in t.parameters()}
        groups = super().param_groups()[0]["params"]
        own = [p for p in groups if id(p) not in teacher_params]
        theirs = [p for p in groups if id(p) in teacher_params]
        out: list[dict[str, Any]] = [{"params": own}]
        if theirs:
            out.append({"params": theirs, "lr_scale": self.params.teacher_lr_scale})
        return out

    def train(self, mode: bool = True) -> ATSC:
        super().train(mode)
        if mode and self.params.teacher_bn_eval:
            for t in self._teachers():
                for m in t.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def _teachers(self) -> list[Teacher]:
        return [self.teacher(i) for i in range(len(self.teachers))]

    def classifier(self, k: int) -> nn.Linear:
        t = self.teacher(k)
        head = get_module(t.model, t.taps["classifier"])
        if not isinstance(head, nn.Linear):
            raise ConfigError(f"the teacher's classifier tap {t.taps['classifier']!r} is not a Linear layer")
        return head

    @torch.no_grad()
    def _probe(self) -> tuple[torch.Size, list[torch.Size]]:
        x = torch.zeros(2, *self.image_shape)
        modes = [m.training for m in (self.student, *self.teachers)]
        self.student.eval()
        for t in self.teachers:
            t.eval()
        f_s = self._student_map(x)
        t_shapes = [self._teacher_map(t, x)[1].shape for t in self._teachers()]
        for m, mode in zip((self.student, *self.teachers), modes):
            m.train(mode)
        return f_s.shape, t_shapes

    def _student_map(self, x: torch.Tensor) -> torch.Tensor:
        return self._student_map_and_logits(x)[0]

    def _student_map_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with FeatureExtractor(self.student, [self.s_path]) as fx:
            logits, feats = fx(x)
        return feats[self.s_path], logits

    @staticmethod
    def _teacher_map(t: Teacher, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with FeatureExtractor(t.model, [t.taps["feature"]]) as fx:
            logits, feats = fx(x)
        return logits, feats[t.taps["feature"]]

    def _shared_logits(self, f_s: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mean over teachers of classifier_k(GAP(proj_k(F_s))), and the projected maps."""
        projected, logits = [], []
        for k, proj in enumerate(self.projectors):
            p = proj(f_s)
            if tuple(p.shape[-2:]) != self.t_sizes[k]:
                p, _ = align_spatial(p, torch.empty(1, 1, *self.t_sizes[k], device=p.device))
            projected.append(p)
            logits.append(self.classifier(k)(F.adaptive_avg_pool2d(p, 1).flatten(1)))
        return torch.stack(logits).mean(0), projected

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self._shared_logits(self._student_map(x))[0]

    def predict_with_class_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Through the shared heads: mean over teachers k of classifier_k applied to proj_k(F_s)."""
        logits, projected = self._shared_logits(self._student_map(x))
        maps = [class_summed_map(p, self.classifier(k).weight) for k, p in enumerate(projected)]
        return logits, torch.stack(maps).mean(0)

    def anchor_pairs(self, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(θ, θ₀) for every weight of teacher k with ndim > 1."""
        params = dict(self.teacher(k).model.named_parameters())
        return [(params[name], getattr(self, buf)) for name, buf in self._anchor_names[k]]

    def anchor(self) -> torch.Tensor:
        """Σ_k Σ_{θ∈W_k} ‖θ − θ₀‖² (0 at the start of training)."""
        diffs = [(p - p0).pow(2).sum() for k in range(len(self.teachers)) for p, p0 in self.anchor_pairs(k)]
        return torch.stack(diffs).sum()

    def forward_train(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: ATSCParams = self.params
        views = batch.views()
        x_all = torch.cat(views) if len(views) > 1 else views[0]
        grad = torch.enable_grad() if p.adapt else torch.no_grad()
        with grad:
            teacher_out = [self._teacher_map(t, x_all) for t in self._teachers()]
        f_s, own_logits = self._student_map_and_logits(x_all)
        shared, projected = self._shared_logits(f_s)
        mse = torch.stack(
            [F.mse_loss(*align_spatial(pk.float(), t_map.float())) for pk, (_, t_map) in zip(projected, teacher_out)]
        ).mean()
        terms = {"feat": p.feat_weight * mse}
        if p.adapt and p.anchor_weight:
            terms["anchor"] = p.anchor_weight * self.anchor() / len(self.teachers)
        b = batch.x.shape[0]
        if p.ce_weight:
            terms["ce_own"] = p.ce_weight * cross_entropy(own_logits[:b], batch.y)
        if p.kd_weight:
            t_logits = torch.stack([t_l for t_l, _ in teacher_out]).mean(0).detach()
            terms["kd_own"] = p.kd_weight * kd(own_logits, t_logits, p.temperature)
        return shared[:b], terms

    def post_step(self, batch: TrainBatch, optimizer: torch.optim.Optimizer) -> None:
        """The bias-only step: CE of the re-run, updated teachers through their classifiers; only the
        classifiers' biases get gradients, so the optimiser changes only them."""
        if not (self.params.adapt and self.params.bias_step):
            return
        optimizer.zero_grad(set_to_none=True)
        losses = []
        for k, t in enumerate(self._teachers()):
            with torch.no_grad():
                _, t_map = self._teacher_map(t, batch.x)
            head = self.classifier(k)
            pooled = F.adaptive_avg_pool2d(t_map, 1).flatten(1)
            logits = F.linear(pooled, head.weight.detach(), head.bias)
            losses.append(cross_entropy(logits, batch.y))
        torch.stack(losses).mean().backward()
        optimizer.step()

    @torch.no_grad()
    def epoch_report(self) -> dict[str, float]:
        """‖θ − θ₀‖ (over W) per teacher: how far the teachers moved."""
        if not self.params.adapt:
            return {}
        drifts = (
            torch.stack(
                [
                    torch.stack([(p - p0).pow(2).sum() for p, p0 in self.anchor_pairs(k)]).sum()
                    for k in range(len(self.teachers))
                ]
            )
            .sqrt()
            .tolist()
        )
        return {f"teacher{k}_drift": d for k, d in enumerate(drifts)}

    def extra_modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"projectors": self.projectors}
        # The (adapted) teachers: their classifiers are part of the prediction path, and resuming needs them.
        for k, t in enumerate(self._teachers()):
            mods[f"teacher{k}"] = t.model
        return mods
