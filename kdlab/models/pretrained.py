"""Pretrained weights for timm and torchvision models, through each library's own mechanism, never a download.

`pretrained: true` takes the library's cached weights: timm's from the Hugging Face hub cache (`HF_HUB_CACHE`,
else `HF_HOME/hub`, else `~/.cache/huggingface/hub`) or, for weights published only by URL, the torch hub cache
(`TORCH_HOME/hub/checkpoints`); torchvision's (the weights enum's DEFAULT) from the torch hub cache. kdlab looks
the file up itself and hands it to the library's loader (timm: `pretrained_cfg_overlay=dict(file=…)`;
torchvision: `weights.get_state_dict()`), so a missing file is a one-line error naming what to fetch and where
to put it, not a network call. `pretrained: PATH` loads a local weights file for that architecture the same
way. Weights whose head has another number of classes than the data keep everything but the head, which starts
fresh (fine-tuning); a teacher needs its own head (experiment.build_teacher says so).

A pretrained model also brings its preprocessing: mean/std, input size, crop fraction and resize interpolation
(timm's `pretrained_cfg`, torchvision's `weights.transforms()`); `preprocessing_of` reads them without loading
any weights."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from kdlab.errors import ConfigError, ModelError


@dataclass(frozen=True)
class Preprocessing:
    """What a pretrained model was evaluated with: per-channel mean/std in [0, 1] units, input size (H, W), the
    crop fraction (resize the shorter side to size / crop_pct, then center-crop), the resize interpolation."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: tuple[int, int]
    crop_pct: float
    interpolation: str


def _interpolation(name: str) -> str:
    name = str(name).lower().rsplit(".", 1)[-1]
    return name if name in ("bilinear", "bicubic") else "bicubic"


def _torch_hub_file(url: str) -> Path:
    """Where torch.hub.load_state_dict_from_url keeps `url`'s file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _fetch_hint(what: str, where: str) -> str:
    return (
        f"kdlab never downloads and found no cached weights: fetch {what} on a machine with network and put it at "
        f"{where}, "
        "or give pretrained=PATH (a weights file for this architecture)"
    )


# --- timm -------------------------------------------------------------------------------------------------------


def _timm_cfg(constructor: str) -> dict[str, Any]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(constructor)
    if cfg is None:
        raise ModelError(f"timm:{constructor} has no pretrained weights registered (timm.list_pretrained())")
    return cfg.to_dict()


def _timm_cached_file(constructor: str, cfg: dict[str, Any]) -> tuple[str, bool]:
    """(the cached weights file of a registered timm model, whether timm loads it with its custom loader)."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        for name in names:
            found = try_to_load_from_cache(repo, name, revision=revision or None)
            if isinstance(found, str):
                return found, cfg.get("custom_load") is True and name.endswith(".npz")
    url = cfg.get("url")
    if url and _torch_hub_file(url).is_file():
        return str(_torch_hub_file(url)), bool(cfg.get("custom_load"))
    if hub_id:
        from huggingface_hub.constants import HF_HUB_CACHE

        where = f"the Hugging Face cache {HF_HUB_CACHE} (repo {hub_id}, as huggingface_hub downloads it)"
        what = f"timm:{constructor}'s weights (timm.create_model('{constructor}', pretrained=True) caches them)"
        raise ModelError(f"timm:{constructor} pretrained=true: " + _fetch_hint(what, where))
    raise ModelError(f"timm:{constructor} pretrained=true: " + _fetch_hint(f"{url}", str(_torch_hub_file(url or "x"))))


def _head_classes(path: str, classifier: str | tuple[str, ...] | None) -> int | None:
    """The number of classes of a weights file's head (its first classifier's weight rows), read lazily."""
    if not classifier:
        return None
    key = (classifier if isinstance(classifier, str) else classifier[0]) + ".weight"
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return int(f.get_slice(key).get_shape()[0]) if key in f.keys() else None  # noqa: SIM118 (safe_open is no dict)
    if path.endswith(".npz"):
        return None
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    for wrap in ("state_dict", "model", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(wrap), dict):
            state = state[wrap]
            break
    return int(state[key].shape[0]) if isinstance(state, dict) and key in state else None


def create_timm_pretrained(
    constructor: str, pretrained: bool | str, num_classes: int, in_channels: int, kwargs: dict[str, Any]
) -> nn.Module:
    """timm.create_model(constructor, pretrained=True, pretrained_cfg_overlay=dict(file=…)) with the cached or
    given weights file; a head of another class count is dropped by timm and starts fresh."""
    import timm

    cfg = _timm_cfg(constructor)
    if pretrained is True:
        path, custom = _timm_cached_file(constructor, cfg)
        overlay: dict[str, Any] = {"file": path, "custom_load": custom}
    else:
        path = str(pretrained)
        if not Path(path).is_file():
            raise ConfigError(f"pretrained={path}: no such weights file")
        overlay = {"file": path}
        classes = _head_classes(path, cfg.get("classifier"))
        if classes is not None:
            overlay["num_classes"] = classes  # the file's own head: kept when the data has as many classes
    try:
        return timm.create_model(
            constructor,
            pretrained=True,
            num_classes=num_classes,
            in_chans=in_channels,
            pretrained_cfg_overlay=overlay,
            **kwargs,
        )
    except (RuntimeError, KeyError, OSError, ValueError) as e:
        raise ModelError(f"timm:{constructor} could not load {path}: {str(e).splitlines()[0][:300]}") from None


# --- torchvision ------------------------------------------------------------------------------------------------


def _torchvision_default_weights(constructor: str) -> Any:
    from torchvision import models

    try:
        return models.get_model_weights(constructor).DEFAULT
    except (ValueError, AttributeError, KeyError):
        raise ModelError(f"torchvision:{constructor} has no pretrained weights") from None


def torchvision_pretrained_state(constructor: str, pretrained: bool | str) -> dict[str, torch.Tensor]:
    """The state dict of torchvision's DEFAULT weights from the torch hub cache (weights.get_state_dict, which
    reads the cache), or of a local file."""
    if pretrained is True:
        weights = _torchvision_default_weights(constructor)
        cached = _torch_hub_file(weights.url)
        if not cached.is_file():
            raise ModelError(
                f"torchvision:{constructor} pretrained=true: " + _fetch_hint(f"{weights} ({weights.url})", str(cached))
            )
        return weights.get_state_dict(progress=False, check_hash=False)
    path = Path(str(pretrained))
    if not path.is_file():
        raise ConfigError(f"pretrained={path}: no such weights file")
    from kdlab.checkpoint import load_foreign_state_dict

    return load_foreign_state_dict(path)


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> list[str]:
    """Load a library state dict into `model` built for the data's classes: every key must exist with its shape,
    except a head of another class count, which keeps its fresh initialisation. Returns the keys left fresh."""
    own = model.state_dict()
    fresh = [k for k in own if k in state and state[k].shape != own[k].shape]
    heads = {k.rsplit(".", 1)[0] for k in fresh}
    linear_heads = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected or not heads <= linear_heads:
        odd = (missing + unexpected + fresh)[:4]
        raise ModelError(f"{what}: the pretrained weights do not fit the architecture (keys {odd})")
    model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    return fresh


# --- preprocessing ----------------------------------------------------------------------------------------------


def preprocessing_of(library: str, constructor: str) -> Preprocessing:
    """The preprocessing a library's pretrained `constructor` was evaluated with (no weights are read)."""
    if library == "timm":
        cfg = _timm_cfg(constructor)
        size = tuple(int(s) for s in cfg["input_size"][1:])
        return Preprocessing(
            tuple(float(m) for m in cfg["mean"]),
            tuple(float(s) for s in cfg["std"]),
            (size[0], size[1]),
            float(cfg.get("crop_pct") or 1.0),
            _interpolation(cfg.get("interpolation", "bicubic")),
        )
    t = _torchvision_default_weights(constructor).transforms()
    crop = int(t.crop_size[0])
    resize = int(t.resize_size[0]) if getattr(t, "resize_size", None) else crop
    return Preprocessing(
        tuple(float(m) for m in t.mean),
        tuple(float(s) for s in t.std),
        (crop, crop),
        crop / resize,
        _interpolation(t.interpolation),
    )


def scale_size(size: tuple[int, int], crop_pct: float) -> tuple[int, int]:
    """(H, W) an image is resized to before the center crop of `size`: ⌊size / crop_pct⌋, timm's rule (a hair of
    slack so that torchvision's 224/232 comes back as 232)."""
    return (math.floor(size[0] / crop_pct + 1e-6), math.floor(size[1] / crop_pct + 1e-6))
