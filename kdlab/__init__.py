"""kdlab: knowledge distillation of image classifiers with data augmentation as a first-class citizen."""

__version__ = "0.1.0"
