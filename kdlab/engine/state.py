"""Saving and restoring the full training state (weights, optimiser, RNG, progress) in one safetensors file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kdlab.checkpoint import load_tensors, save_tensors
from kdlab.errors import CheckpointError


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state → (tensors keyed `optim.{param}.{name}`, JSON-able remainder)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = [{k: float(v) if isinstance(v, torch.Tensor) else v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}  # a compiled run's tensor lr stored as a number


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, extra in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(extra)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_training_state(
    path: Path,
    model_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    rng: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> None:
    """One atomic file: `model.*` weights, `optim.*` buffers, `rng.*` generator states, and JSON meta."""
    tensors = {f"model.{k}": v for k, v in model_state.items()}
    tensors.update({f"rng.{k}": v for k, v in rng.items()})
    meta = dict(meta)
    if optimizer is not None:
        opt_tensors, opt_meta = optimizer_to_flat(optimizer)
        tensors.update(opt_tensors)
        meta["optimizer"] = opt_meta
    save_tensors(path, tensors, meta)


def load_training_state(
    path: Path,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """→ (model state without the `model.` prefix, all tensors, meta)."""
    tensors, meta = load_tensors(path)
    if "epoch" not in meta:
        raise CheckpointError(f"{path} is not a kdlab training checkpoint (no epoch in its metadata)")
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    return model, tensors, meta
