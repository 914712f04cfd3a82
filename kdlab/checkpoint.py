"""The checkpoint file format: one safetensors file of named tensors plus JSON metadata.

safetensors cannot execute code on load, and one file written atomically means a checkpoint is either the
old one or the new one, never half of each. Foreign `.pt/.pth` files are read with `weights_only=True`."""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from kdlab.errors import CheckpointError
from kdlab.io import atomic_write

META_KEY = "kdlab"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Atomically write `tensors` (name → tensor) and JSON-able `meta` to a safetensors file. A write that
    fails in the OS (a full disk, a refused write) is the clean one-line error of `atomic_write`."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}

    def write(tmp: Path) -> None:
        try:
            save_file(flat, str(tmp), metadata={META_KEY: json.dumps(meta)})
        except SafetensorError as e:  # safetensors reports OS errors as its own type, with the errno inside
            code = re.search(r"code: (\d+)", str(e))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1)))) from e

    atomic_write(Path(path), write)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file written by `save_tensors` → (tensors, meta)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY, "{}")
        return tensors, json.loads(raw)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({e})") from None


def load_foreign_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A `.pt/.pth` file holding a state dict, or one wrapped as `{'model': sd}` (CRD), `{'state_dict': sd}`,
    `{'net': sd}`, `{'model_state_dict': sd}`, with the `module.` (DataParallel) and `_orig_mod.` (torch.compile)
    prefixes removed; CUDA-saved tensors land on the CPU.

    Loaded with `weights_only=True`: a file that would run code on load is refused."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message suggests weights_only=False; kdlab never does that: say what is in the file instead
        found = [ln.split("error:", 1)[1].strip() for ln in str(e).splitlines() if "WeightsUnpickler error:" in ln]
        what = (found[0].split(". ")[0] if found else "not only tensors").replace("\x1b[1m", "").replace("\x1b[0m", "")
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects beyond tensors ({what}), which could run code; "
            "kdlab never loads such files — save the weights alone: torch.save(model.state_dict(), PATH)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({e})") from None
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "net", "model_state_dict", "student"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {_strip_wrappers(k): v for k, v in obj.items()}


def _strip_wrappers(key: str) -> str:
    """`module._orig_mod.layer1.0.conv1.weight` → `layer1.0.conv1.weight`."""
    while key.startswith(("module.", "_orig_mod.")):
        key = key.split(".", 1)[1]
    return key
