"""Unpickling with an allow-list: CIFAR python pickles hold only dicts, lists, bytes and numpy arrays, so
only the numpy reconstruction helpers are allowed. Anything else (e.g. `os.system`) is refused."""

from __future__ import annotations

import io
import pickle
from typing import Any

from kdlab.errors import DataError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a type a data file holds")
        return super().find_class(module, name)


def safe_load_pickle(path: str, data: bytes) -> Any:
    """Unpickle `data` (read from `path`) allowing only plain containers and numpy arrays."""
    try:
        return _AllowListUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if "refusing" in str(e):
            raise DataError(f"{path}: {e}; this file is not a genuine data pickle, do not trust it") from None
        raise DataError(f"{path} is truncated or corrupt ({e}); re-download or re-extract it") from None
    except (EOFError, ValueError, IndexError, KeyError, TypeError, AttributeError) as e:
        raise DataError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e}); re-download or re-extract it"
        ) from None
