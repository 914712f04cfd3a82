"""Atomic file writes: write to a temporary file beside the target, fsync, then rename over it, so a kill
or a full disk never leaves a half-written file in place of a good one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdlab.errors import KdlabError
from kdlab.faults import crash_point


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` then atomically move tmp_path to `path`. On failure `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the target's suffix (some writers check it, e.g. torch.export's ".pt2").
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{path.name}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the file the permissions open() would
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # again: some writers (safetensors) replace the file with a 0600 one
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        crash_point("write")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise KdlabError(f"could not write {path}: {e.strerror or e}; the previous file is intact") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically replace the text file at `path`."""
    atomic_write(path, lambda tmp: _write_text(tmp, text))


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Atomically replace the file at `path` with `data`."""

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    atomic_write(path, write)


def atomic_write_json(path: Path, data: Any) -> None:
    """Atomically replace the JSON file at `path`."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    """Parse the JSON file at `path`; a missing or corrupt file is a KdlabError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise KdlabError(f"{path} does not exist") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KdlabError(f"{path} is not valid JSON ({e}); delete or restore it") from e
