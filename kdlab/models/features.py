"""Feature access without rewriting models: forward hooks record outputs of modules named by path."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from kdlab.errors import ModelError, suggest
from kdlab.models.tokens import token_layout, tokens_to_map

INPUT_SUFFIX = ":in"  # a tap `path:in` records the module's input instead of its output (a pre-activation map)


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted `path` (e.g. 'layer3', 'classifier.0', or 'layer3.2.relu_out:in' for its input); a
    clear error if there is none."""
    path = path.removesuffix(INPUT_SUFFIX)
    modules = dict(model.named_modules())
    if path not in modules:
        raise ModelError(f"model has no module {path!r}{suggest(path, [n for n in modules if n])}")
    return modules[path]


class FeatureExtractor:
    """Records the outputs of the modules at `paths` during every forward of `model`.

    `logits, feats = extractor(x)` runs the plain forward and returns {path: tensor}. Tuple outputs keep
    their first element. A path ending in `:in` records a copy of the module's first input (the copy survives an
    in-place activation). On a vision transformer, token outputs (B, N, C) come back as patch maps (B, C, h, w)
    (models/tokens.py). Use `close()` (or a `with` block) to remove the hooks."""

    def __init__(self, model: nn.Module, paths: Iterable[str]):
        self.model = model
        self.tokens = token_layout(model)
        self.paths = list(dict.fromkeys(paths))
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles = [
            get_module(model, p).register_forward_pre_hook(self._input_hook(p))
            if p.endswith(INPUT_SUFFIX)
            else get_module(model, p).register_forward_hook(self._hook(p))
            for p in self.paths
        ]

    def _input_hook(self, path: str):
        def record(_module: nn.Module, inputs: tuple[object, ...]) -> None:
            if inputs and isinstance(inputs[0], torch.Tensor):
                self._outputs[path] = inputs[0].clone()

        return record

    def _hook(self, path: str):
        def record(_module: nn.Module, _inputs: object, output: object) -> None:
            value = output[0] if isinstance(output, tuple | list) else output
            if isinstance(value, torch.Tensor):
                if self.tokens is not None and value.dim() == 3:
                    value = tokens_to_map(value, *self.tokens)
                self._outputs[path] = value

        return record

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self._outputs = {}
        logits = self.model(x)
        missing = [p for p in self.paths if p not in self._outputs]
        if missing:
            raise ModelError(f"modules {missing} were not run by the model's forward; choose other taps")
        return logits, self._outputs

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> FeatureExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
