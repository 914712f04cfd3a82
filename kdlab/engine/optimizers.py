"""The optimiser a run trains with, built from `OptimConfig`: its parameter groups (the method's own, split by
weight decay and, for layer-wise lr decay, by layer), SGD / AdamW / DOT, and its step pre-hooks (gradient averaging
across processes, then clipping).

Where the choice is a convention, it is timm's (huggingface/pytorch-image-models `timm/optim/_param_groups.py`):
no weight decay on 1-D parameters, on `.bias` and on the model's `no_weight_decay()` names (fnmatch patterns);
layer-wise lr decay by the model's `group_matcher(coarse=False)`, layer i of n at layer_decay^(n-1-i) × lr, with
parameters the matcher leaves out (the head) in the last layer."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from kdlab.config import OptimConfig, RunConfig
from kdlab.engine.dot import DistillationOrientedSGD
from kdlab.errors import ConfigError
from kdlab.methods.base import Distiller


def no_decay_patterns(model: nn.Module) -> set[str]:
    """The parameter names (fnmatch patterns) a model keeps out of weight decay: timm's `no_weight_decay()`
    (e.g. {'pos_embed', 'cls_token', 'dist_token'}), else none."""
    declared = getattr(model, "no_weight_decay", None)
    return set(declared()) if callable(declared) else set()


def layer_ids(model: nn.Module, label: str) -> tuple[dict[str, int], int]:
    """Parameter name → layer index (0 nearest the input) by the model's own `group_matcher` (timm models), and the
    number of layers. A model that does not declare its layers is refused with one line."""
    matcher = getattr(model, "group_matcher", None)
    if not callable(matcher):
        raise ConfigError(
            f"optim.layer_decay needs the student's layers in order, which timm models declare (group_matcher); "
            f"{label} does not — use a timm:NAME student or leave optim.layer_decay unset"
        )
    from timm.models import group_parameters  # a timm model: timm is installed

    ids = group_parameters(model, matcher(coarse=False), reverse=True)
    return ids, max(ids.values()) + 1


def _decays(name: str, param: torch.Tensor, patterns: set[str]) -> bool:
    return not (param.ndim <= 1 or name.endswith(".bias") or any(fnmatch.fnmatch(name, p) for p in patterns))


def parameter_groups(method: Distiller, optim: OptimConfig, student_label: str = "the student") -> list[dict[str, Any]]:
    """`method.param_groups()`, each split into groups of one weight decay and one lr scale.

    Every group carries `weight_decay` and `lr_scale` (its rate is lr_scale × the scheduled rate: the method's own
    scale, e.g. ATSC's teachers, times the layer's decay). Without decay filtering and layer decay, the groups are
    the method's, one for one (so checkpoints of earlier runs resume)."""
    modules = method.trainable_modules().items()
    names = {id(p): (module, name) for module, m in modules for name, p in m.named_parameters()}
    patterns = no_decay_patterns(method.student) if optim.filters_decay else set()
    layers, n_layers = ({}, 1) if optim.layer_decay is None else layer_ids(method.student, student_label)
    groups: dict[tuple[int, int, bool], dict[str, Any]] = {}
    for k, base in enumerate(method.param_groups()):
        extra = {key: value for key, value in base.items() if key != "params"}
        base_scale = float(extra.pop("lr_scale", 1.0))
        for p in base["params"]:
            module, name = names.get(id(p), ("", ""))
            decay = not optim.filters_decay or _decays(name, p, patterns if module == "student" else set())
            layer = layers.get(name, n_layers - 1) if module == "student" else n_layers - 1
            group = groups.get((k, layer, decay))
            if group is None:
                scale = base_scale * (optim.layer_decay ** (n_layers - 1 - layer) if optim.layer_decay else 1.0)
                group = groups[(k, layer, decay)] = {
                    **extra, "params": [], "weight_decay": optim.weight_decay if decay else 0.0, "lr_scale": scale,
                }  # fmt: skip
            group["params"].append(p)
    return list(groups.values())


def clipper(optimizer: torch.optim.Optimizer, limit: float, mode: str) -> Callable[..., None]:
    """A step pre-hook that clips the gradients of `optimizer`'s parameters: by their total 2-norm (mode "norm")
    or entry-wise to ±limit ("value"). Tensor operations only: no host sync, safe in a captured step."""
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def clip(*_: Any) -> None:
        grads = [p for p in params if p.grad is not None]
        if mode == "norm":
            nn.utils.clip_grad_norm_(grads, limit, foreach=True)
        else:
            nn.utils.clip_grad_value_(grads, limit, foreach=True)

    return clip


def build_optimizer(
    cfg: RunConfig, method: Distiller, lr: float, device: torch.device, average: Callable[..., None] | None = None
) -> torch.optim.Optimizer:
    """The configured optimiser over `parameter_groups(method, cfg.optim)` at learning rate `lr`. `average`, when
    given (torchrun), is called before each step to average gradients across processes; clipping comes after it."""
    o, eng = cfg.optim, cfg.engine
    groups = parameter_groups(method, o, cfg.student.label)
    optimizer: torch.optim.Optimizer
    if o.name == "dot":
        if eng.cuda_graphs or eng.compile or average is not None:
            raise ConfigError(
                "optim.name=dot runs two backward passes and its own update per step: "
                "not with engine.cuda_graphs, engine.compile or torchrun"
            )
        optimizer = DistillationOrientedSGD(groups, lr, o.momentum, o.dot_delta, o.weight_decay)
    elif o.name == "adamw":
        # a compiled or captured step reads the rate from a device tensor: on CUDA that needs capturable AdamW
        captured = (eng.cuda_graphs or eng.compile) and device.type == "cuda"
        optimizer = torch.optim.AdamW(
            groups, lr=lr, betas=(o.betas[0], o.betas[1]), eps=o.eps, weight_decay=o.weight_decay, capturable=captured
        )
    else:
        # captured as a CUDA graph, SGD must read its rate from a device tensor without a host sync: the fused one
        optimizer = torch.optim.SGD(
            groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov,
            fused=True if eng.cuda_graphs else None,
        )  # fmt: skip
    if average is not None:  # every optimiser step (ATSC's bias step too) first averages gradients
        optimizer.register_step_pre_hook(average)
    if o.clip_grad is not None:
        optimizer.register_step_pre_hook(clipper(optimizer, o.clip_grad, o.clip_mode))
    return optimizer
