"""Building models from configs (zoo name or user factory) and loading weights into them."""

from __future__ import annotations

import importlib.util
import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.checkpoint import load_foreign_state_dict, load_tensors
from kdlab.errors import CheckpointError, ModelError
from kdlab.models.external import create_external, is_external, probe_taps
from kdlab.models.features import get_module
from kdlab.models.registry import MODELS, create_model, model_taps


def load_factory(spec: str) -> Any:
    """`path/to/file.py:function` → the function (a user's model builder)."""
    file, sep, func = spec.rpartition(":")
    if not sep or not file or not func:
        raise ModelError(f"factory {spec!r} must look like path/to/file.py:function")
    path = Path(file)
    if not path.is_file():
        raise ModelError(f"factory file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"kdlab_user_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ModelError(f"cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # the user's file: their error, named, not kdlab's internal one
        raise ModelError(f"factory file {path} raised {type(e).__name__} when imported: {_first_line(e)}") from None
    if not hasattr(module, func):
        raise ModelError(f"{path} defines no function {func!r}")
    return getattr(module, func)


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    factory: str | None = None,
    kwargs: dict[str, Any] | None = None,
    taps: dict[str, str] | None = None,
    image_size: tuple[int, int] | None = None,
    pretrained: bool | str | None = None,
    what: str = "model",
) -> tuple[nn.Module, dict[str, str], list[str]]:
    """A model, its taps and the keys of a pretrained head left fresh: zoo model `name`, a timm/torchvision model
    `timm:NAME` / `torchvision:NAME` (models/external.py, with `pretrained` weights: models/pretrained.py), or
    `factory(num_classes=…, **kwargs)`. A factory's or library model's taps not given in config are found by
    probing it once (probe_taps)."""
    kwargs = dict(kwargs or {})
    fresh: list[str] = []
    if factory or is_external(name):
        if factory:
            fn = load_factory(factory)
            _check_kwargs(fn, factory, {"num_classes": num_classes, **kwargs})
            try:
                model = fn(num_classes=num_classes, **kwargs)
            except Exception as e:
                raise ModelError(f"factory {factory} raised {type(e).__name__}: {_first_line(e)}") from None
        else:
            model, fresh = create_external(name, num_classes, in_channels, kwargs, pretrained, what)
        if not isinstance(model, nn.Module):
            raise ModelError(f"factory {factory} returned {type(model).__name__}, not an nn.Module")
        found = probe_taps(model, (in_channels, *image_size), num_classes) if image_size else {}
        all_taps = {**found, **(taps or {})}
    else:
        _check_kwargs(MODELS.get(name).build, name, {"num_classes": num_classes, "in_channels": in_channels, **kwargs})
        model = create_model(name, num_classes, in_channels, **kwargs)
        all_taps = {**model_taps(name), **(taps or {})}
    for path in all_taps.values():
        get_module(model, path)  # fail now, with suggestions, not mid-training
    return model, all_taps, fresh


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def _check_kwargs(fn: Any, what: str, kwargs: dict[str, Any]) -> None:
    """A model's kwargs that its builder does not take are the user's error (ModelError naming them), not a
    TypeError deep inside; a key like 'depth:56' is YAML's flow mapping without a space after the colon."""
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as e:
        hint = ""
        if any(":" in str(k) for k in kwargs):
            hint = " (in YAML a mapping needs a space after each colon: '{depth: 56}', not '{depth:56}')"
        raise ModelError(f"{what} does not take the kwargs {sorted(map(str, kwargs))}: {e}{hint}") from None
    except ValueError:  # no signature (a builtin): let the call decide
        pass


def read_weights(path: str | Path, prefix: str = "model.student.") -> dict[str, torch.Tensor]:
    """Weights of a trained model from a kdlab run folder, a kdlab .safetensors checkpoint, a plain
    safetensors state dict, or a `.pt/.pth` state dict (CRD's `{'model': state_dict}` included)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (p / "checkpoints" / name).is_file():
                p = p / "checkpoints" / name
                break
        else:
            raise CheckpointError(f"{path} is a folder without checkpoints/best.safetensors or last.safetensors")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    if p.suffix == ".safetensors":
        tensors, _ = load_tensors(p)
        if any(k.startswith(prefix) for k in tensors):
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        return tensors
    return load_foreign_state_dict(p)


def load_weights(model: nn.Module, path: str | Path, classifier: str | None = None, what: str = "model") -> None:
    """Load weights into `model`, strictly; mismatches are reported by key, shape and class count."""
    state = read_weights(path)
    own = model.state_dict()
    if classifier and f"{classifier}.weight" in state and f"{classifier}.weight" in own:
        theirs, mine = state[f"{classifier}.weight"].shape[0], own[f"{classifier}.weight"].shape[0]
        if theirs != mine:
            raise CheckpointError(
                f"{what} checkpoint {path} has {theirs} classes but the dataset has {mine}; "
                "use a checkpoint trained on this dataset"
            )
    # BatchNorm's num_batches_tracked did not exist before PyTorch 0.4.1: load_state_dict fills it for old files
    missing = sorted(k for k in set(own) - set(state) if not k.endswith(".num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches {_short(shapes)}")
        theirs_only, ours_only = _modules(unexpected) - _modules(missing), _modules(missing) - _modules(unexpected)
        where = []
        if theirs_only:
            where.append(f"modules only in the checkpoint: {_short(sorted(theirs_only))}")
        if ours_only:
            where.append(f"only in the model: {_short(sorted(ours_only))}")
        raise CheckpointError(
            f"{what} checkpoint {path} does not fit the model: "
            + "; ".join(where or parts)
            + (f" ({'; '.join(parts)})" if where else " (is it another architecture?)")
        )
    model.load_state_dict(state)


def _modules(keys: list[str]) -> set[str]:
    """The modules (key without its last part) that a list of state-dict keys belongs to."""
    return {k.rsplit(".", 1)[0] if "." in k else k for k in keys}


def _short(items: list[str], n: int = 5) -> str:
    more = f" … and {len(items) - n} more" if len(items) > n else ""
    return json.dumps(items[:n]) + more
