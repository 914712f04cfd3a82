"""The errors kdlab raises on bad input. Each carries a one-line message that names the problem and the fix;
the CLI prints it without a traceback (unless --debug)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KdlabError(Exception):
    """Base class: a user-facing error with a clear one-line message."""


class ConfigError(KdlabError):
    """A config key, value or type is wrong."""


class DataError(KdlabError):
    """A dataset path, file or layout is unusable."""


class ModelError(KdlabError):
    """A model name, factory or checkpoint does not fit."""


class CheckpointError(ModelError):
    """A checkpoint is unreadable, unsafe or does not match the model."""


class NonFiniteLossError(KdlabError):
    """A loss became NaN or infinite during training."""

    def __init__(self, message: str, step: int, terms: list[str]):
        super().__init__(message)
        self.step = step
        self.terms = terms


def suggest(name: str, valid: Iterable[str], n: int = 3) -> str:
    """Return ' (did you mean: a, b?)' with the closest valid names, or '' when none is close."""
    close = difflib.get_close_matches(name, list(valid), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(close)}?)" if close else ""
