"""Model zoo (CRD-compatible CIFAR models), registry, feature taps and model loading."""

from kdlab.models import (  # noqa: F401  (registration on import)
    mobilenetv2,
    resnet_cifar,
    resnet_imagenet,
    resnet_imagenet_style,
    shufflenet,
    vgg,
    wrn,
)
from kdlab.models.features import FeatureExtractor, get_module
from kdlab.models.registry import MODELS, ModelSpec, create_model, list_models, model_taps

__all__ = [
    "MODELS",
    "FeatureExtractor",
    "ModelSpec",
    "create_model",
    "get_module",
    "list_models",
    "model_taps",
]
