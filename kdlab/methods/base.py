"""The Distiller interface every method implements, the frozen Teacher wrapper, and the method registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from kdlab.config import from_dict, to_dict
from kdlab.errors import ConfigError
from kdlab.registry import Registry


class Teacher(nn.Module):
    """A frozen, pretrained model: eval mode, no gradients, whatever `train()` is called with."""

    def __init__(self, model: nn.Module, taps: dict[str, str], name: str = "teacher"):
        super().__init__()
        self.model = model
        self.taps = dict(taps)
        self.label = name
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Distiller(nn.Module):
    """A training method. Holds the student and its teachers.

    `forward_train(x, y, index)` takes a normalised batch x (B, C, H, W), labels y (B,) and sample ids
    (B,), and returns the student logits (B, K) and a dict of named, already-weighted scalar loss terms whose
    sum is minimised. `predict(x)` is the inference path (the student, unless a method says otherwise)."""

    Params: ClassVar[type] = object
    needs_teacher: ClassVar[bool] = True

    def __init__(self, student: nn.Module, teachers: list[Teacher], params: Any):
        super().__init__()
        self.student = student
        self.teachers = nn.ModuleList(teachers)
        self.params = params

    def forward_train(
        self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) of the model being trained, for evaluation and export."""
        return self.student(x)

    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules beyond the student (projectors, embedders), by name."""
        return {}

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Everything the optimiser updates and a checkpoint must hold, by name."""
        return {"student": self.student, **self.extra_modules()}

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Tensors of the trainable modules (parameters and buffers) as `name.param` keys."""
        return {
            f"{name}.{k}": v
            for name, module in self.trainable_modules().items()
            for k, v in module.state_dict().items()
        }

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.trainable_modules().items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})

    def params_dict(self) -> dict[str, Any]:
        return to_dict(self.params)


@dataclass(frozen=True)
class MethodEntry:
    cls: type[Distiller]
    summary: str


METHODS: Registry[MethodEntry] = Registry("method", ConfigError)


def register_method(name: str, summary: str):
    """Class decorator: register a Distiller subclass under `name`."""

    def decorate(cls: type[Distiller]) -> type[Distiller]:
        METHODS.add(name, MethodEntry(cls, summary))
        return cls

    return decorate


def resolve_method_params(method_cfg: dict[str, Any]) -> tuple[str, Any]:
    """`{'name': 'kd', 'temperature': 4, …}` → ('kd', KDParams(...)); unknown keys fail with suggestions."""
    cfg = dict(method_cfg)
    name = cfg.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError("method.name must be set (e.g. method.name=kd)")
    entry = METHODS.get(name)
    return name, from_dict(entry.cls.Params, cfg, "method")


def build_method(method_cfg: dict[str, Any], student: nn.Module, teachers: list[Teacher]) -> Distiller:
    """Instantiate the configured method; a method that needs a teacher fails clearly without one."""
    name, params = resolve_method_params(method_cfg)
    cls = METHODS.get(name).cls
    if cls.needs_teacher and not teachers:
        raise ConfigError(f"method {name!r} needs a teacher: set teacher.name and teacher.checkpoint")
    return cls(student, teachers, params)
