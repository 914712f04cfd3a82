"""Building a model from its config: the one entry point (construct, pretrained weights, the model's own
normalisation and input size, checkpoint weights, the class-count check).

`resolve_model_config` writes a pretrained model's preprocessing into its config before anything is built, so
config.yaml records what the model sees; `build_configured_model` then builds exactly that."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from kdlab.config import ModelConfig, parse_normalize
from kdlab.errors import ConfigError, ModelError
from kdlab.models.external import is_external
from kdlab.models.input_size import attach_input_size
from kdlab.models.loading import build_model, load_weights
from kdlab.models.normalization import attach_input_norm
from kdlab.models.pretrained import preprocessing_of


def resolve_model_config(mcfg: ModelConfig, what: str) -> ModelConfig:
    """`mcfg` with a pretrained model's preprocessing filled in where unset (null): normalize ← its mean/std,
    input_size ← its size, input_resize ← its interpolation, input_crop_pct ← its crop fraction (only with its
    own size: a size the user chose is resized to whole). Without `pretrained`: the dataset's statistics and
    size, bilinear, no crop."""
    if not mcfg.pretrained:
        return dataclasses.replace(
            mcfg,
            normalize="dataset" if mcfg.normalize is None else mcfg.normalize,
            input_resize=mcfg.input_resize or "bilinear",
        )
    if mcfg.factory or not is_external(mcfg.name):
        raise ConfigError(
            f"{what}.pretrained is for timm:NAME / torchvision:NAME models; {mcfg.label} takes its weights from "
            f"{what}.checkpoint"
        )
    library, _, constructor = mcfg.name.partition(":")
    try:
        pre = preprocessing_of(library, constructor)
    except ImportError:
        raise ModelError(f"{mcfg.name} needs {library}: pip install 'kdlab[vision]' (optional extra)") from None
    own_size = mcfg.input_size is None
    return dataclasses.replace(
        mcfg,
        normalize=mcfg.normalize if mcfg.normalize is not None else {"mean": list(pre.mean), "std": list(pre.std)},
        input_size=list(pre.size) if own_size else mcfg.input_size,
        input_resize=mcfg.input_resize or pre.interpolation,  # type: ignore[arg-type]  # bilinear | bicubic
        input_crop_pct=mcfg.input_crop_pct if mcfg.input_crop_pct is not None else (pre.crop_pct if own_size else 1.0),
    )


@dataclass
class BuiltModel:
    """A model ready for dataset-normalised images at the data's size, its taps, and the keys of a pretrained
    head that started fresh (the data has another number of classes than the weights)."""

    model: nn.Module
    taps: dict[str, str]
    fresh_head: list[str]


def check_num_classes(model: nn.Module, image_shape: Sequence[int], num_classes: int, what: str) -> None:
    """Fail clearly if `model` does not output `num_classes` logits for images of `image_shape` (C, H, W)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, *image_shape, device=next(model.parameters()).device))
    model.train(was_training)
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ModelError(f"{what} outputs {tuple(out.shape[1:])} logits but the dataset has {num_classes} classes")


def build_configured_model(
    mcfg: ModelConfig,
    num_classes: int,
    image_shape: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    what: str,
    weights: bool = True,
) -> BuiltModel:
    """The model `mcfg` describes (zoo name, timm/torchvision name or factory) for images of image_shape (C, H, W)
    that arrive normalised with the dataset's mean/std: adapted to its own normalisation and input size (resolved
    first by resolve_model_config), with its checkpoint loaded, else its pretrained weights (a checkpoint needs no
    cached weights: `pretrained` then only brings the preprocessing), and checked to give `num_classes` logits.
    weights=False: the architecture only (a trained run's weights load afterwards)."""
    mcfg = resolve_model_config(mcfg, what)
    own_size = mcfg.own_size
    size = own_size or (int(image_shape[1]), int(image_shape[2]))
    model, taps, fresh = build_model(
        mcfg.name,
        num_classes,
        image_shape[0],
        mcfg.factory,
        mcfg.kwargs,
        mcfg.taps,
        size,
        pretrained=None if not weights or mcfg.checkpoint else mcfg.pretrained,  # a checkpoint replaces them
        what=what,
    )
    own = parse_normalize(mcfg.normalize, what, image_shape[0])
    model = attach_input_norm(model, own, mean, std)
    crop = mcfg.input_crop_pct if mcfg.input_crop_pct is not None else 1.0
    model = attach_input_size(model, own_size, mcfg.input_resize or "bilinear", crop)
    if weights and mcfg.checkpoint:
        load_weights(model, mcfg.checkpoint, taps.get("classifier"), what=what)
    if weights:
        check_num_classes(model, image_shape, num_classes, what)
    return BuiltModel(model, taps, fresh)
