"""timm and torchvision models by name (`timm:resnet18`, `torchvision:mobilenet_v3_small`), and taps found on
any model by probing it.

Both libraries are optional (`pip install kdlab[vision]`): they are imported only when a name asks for them.
Pretrained weights are never downloaded: they come from the library's cache or a file (models/pretrained.py),
or from the model's `checkpoint`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from kdlab.errors import ConfigError, ModelError, suggest
from kdlab.models.tokens import token_blocks, token_layout

LIBRARIES = ("timm", "torchvision")


def is_external(name: str) -> bool:
    """Whether a model name is `timm:NAME` or `torchvision:NAME`."""
    return name.split(":", 1)[0] in LIBRARIES and ":" in name


def create_external(
    name: str,
    num_classes: int,
    in_channels: int,
    kwargs: dict[str, Any],
    pretrained: bool | str | None = None,
    what: str = "model",
) -> tuple[nn.Module, list[str]]:
    """The model `library:constructor` with `num_classes` outputs for `in_channels`-channel images: freshly
    initialised, or with `pretrained` weights (true: the library's cache; a path: a weights file) loaded through
    the library (models/pretrained.py). Returns (model, the keys of a pretrained head left fresh)."""
    library, _, constructor = name.partition(":")
    for key in ("pretrained", "weights", "pretrained_cfg_overlay"):
        if kwargs.get(key):
            raise ConfigError(
                f"{name}: kwargs.{key} is not how kdlab loads weights; set {what}.pretrained=true (the library's "
                f"cache) or {what}.pretrained=PATH (a weights file)"
            )
    kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained", "weights")}
    try:
        lib = __import__(library)
    except ImportError:
        raise ModelError(f"{name} needs {library}: pip install 'kdlab[vision]' (optional extra)") from None
    if library == "timm":
        if constructor not in lib.list_models() and constructor.split(".")[0] not in lib.list_models():
            raise ModelError(f"timm has no model {constructor!r}{suggest(constructor, lib.list_models())}")
        if pretrained:
            from kdlab.models.pretrained import create_timm_pretrained

            with _kwargs_are_the_users(name):
                model = create_timm_pretrained(constructor, pretrained, num_classes, in_channels, kwargs)
            cfg: dict[str, Any] = getattr(model, "pretrained_cfg", {})  # a dict, not a module
            head = cfg.get("classifier")
            heads = (head,) if isinstance(head, str) else tuple(head or ())
            fresh = [] if cfg.get("num_classes") == num_classes else [f"{h}.weight" for h in heads]
            return model, fresh
        with _kwargs_are_the_users(name):
            model = lib.create_model(constructor, num_classes=num_classes, in_chans=in_channels, **kwargs)
        return model, []
    from torchvision import models

    names = models.list_models()
    if constructor not in names:
        raise ModelError(f"torchvision has no model {constructor!r}{suggest(constructor, names)}")
    if in_channels != 3:
        raise ModelError(f"{name} takes 3-channel images; the data has {in_channels} (use timm, which has in_chans)")
    with _kwargs_are_the_users(name):
        model = models.get_model(constructor, weights=None, num_classes=num_classes, **kwargs)
    if not pretrained:
        return model, []
    from kdlab.models.pretrained import load_matching, torchvision_pretrained_state

    return model, load_matching(model, torchvision_pretrained_state(constructor, pretrained), f"{what} ({name})")


@contextlib.contextmanager
def _kwargs_are_the_users(name: str) -> Iterator[None]:
    """A TypeError from a library constructor is a kwarg it does not take: the user's error, in one line."""
    try:
        yield
    except TypeError as e:
        raise ModelError(f"{name} does not take these kwargs: {str(e).splitlines()[0][:300]}") from None


def _is_map(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 4


_POOLING = ("Pool",)  # module class names that pool a map away (AdaptiveAvgPool2d, timm's SelectAdaptivePool2d…)


@torch.no_grad()
def probe_taps(model: nn.Module, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, str]:
    """Taps found by running the model once on zeros (B = 2): `feature` — the last map (B, C, H, W) produced
    before pooling (on a ViT its last token sequence, read as a patch map: models/tokens.py), named by its
    outermost module that returns that very tensor (e.g. `layer4`, `features`, `norm`);
    `classifier` — the last Linear layer with `num_classes` outputs. Roles not found are left out."""
    outputs: dict[str, object] = {}
    order: list[str] = []
    handles = []
    for path, module in model.named_modules():
        if not path:
            continue

        def record(_m: nn.Module, _i: object, out: object, path: str = path) -> None:
            outputs[path] = out
            order.append(path)

        handles.append(module.register_forward_hook(record))
    was_training = model.training
    try:
        model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        model(torch.zeros(2, *image_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    modules = dict(model.named_modules())
    taps: dict[str, str] = {}
    maps = [p for p in order if _is_map(outputs[p]) and not any(k in type(modules[p]).__name__ for k in _POOLING)]
    if token_layout(model) is not None:  # a ViT: its last token sequence (the final norm's), read as a patch map
        maps = [p for p in order if isinstance(t := outputs[p], torch.Tensor) and t.dim() == 3]
    if maps:
        last = maps[-1]
        parts = last.split(".")
        for depth in range(1, len(parts) + 1):  # the outermost module returning that very tensor
            ancestor = ".".join(parts[:depth])
            if outputs.get(ancestor) is outputs[last]:
                taps["feature"] = ancestor
                break
    heads = [p for p in order if isinstance(modules[p], nn.Linear) and modules[p].out_features == num_classes]
    if heads:
        taps["classifier"] = heads[-1]
    return {**stage_taps(model), **taps}


def stage_taps(model: nn.Module) -> dict[str, str]:
    """`stem`, `stage1`… for feature methods that read intermediate stages: on a ViT four evenly spaced blocks;
    timm's `feature_info` (its stem, then one module per reduction); else children named layer1, layer2, …
    (torchvision's ResNets)."""
    blocks = token_blocks(model) if token_layout(model) is not None else []
    if blocks:  # a ViT: four stages at evenly spaced blocks (the last is the last block), the patch embedding
        picks = [blocks[max(0, round(k * len(blocks) / 4) - 1)] for k in range(1, 5)]
        stem = "patch_embed" if hasattr(model, "patch_embed") else "conv_proj"
        return {"stem": stem, **{f"stage{k}": b for k, b in enumerate(picks, 1)}}
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and info and all(isinstance(i, dict) and "module" in i for i in info):
        return {"stem": info[0]["module"], **{f"stage{k}": i["module"] for k, i in enumerate(info[1:], 1)}}
    names = [n for n, _ in model.named_children()]
    return {f"stage{k}": f"layer{k}" for k in range(1, 9) if f"layer{k}" in names}
