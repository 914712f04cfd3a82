"""`kdlab config`: every config key with its type, default and one-line meaning; the shipped recipes; a
recipe resolved with overrides.

The meanings are the comments written beside each field in kdlab/config.py (one source of truth: the dataclass
that owns the field)."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path
from typing import Any

from kdlab.config import PACKAGED_CONFIGS, RunConfig


def _field_comments(cls: type) -> dict[str, str]:
    """name → the comment on the field's line (or the comment lines just above it) in cls's source."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out, above = {}, []
    for line in lines:
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# ").strip())
            continue
        m = re.match(r"(\w+)\s*:[^=]*?(?:=.*?)?(?:#\s*(.*))?$", text)
        if m and not text.startswith(("def ", "class ", "@", "return", '"""')):
            out[m.group(1)] = (m.group(2) or " ".join(above)).strip()
        above = []
    return out


def _type_name(tp: Any) -> str:
    text = str(tp).replace("typing.", "")
    return re.sub(r"<class '([\w.]+)'>", lambda m: m.group(1).split(".")[-1], text)


def config_keys(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every leaf key of the config dataclass, sections flattened with dots."""
    rows = []
    comments = _field_comments(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        nested = [a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)]
        if nested and typing.get_origin(tp) is not list:
            rows += config_keys(nested[0], f"{key}.")  # type: ignore[arg-type]
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        meaning = comments.get(f.name, "")
        if key == "method":
            meaning = "the method's name and its parameters (`kdlab methods` lists them)"
        rows.append((key, _type_name(tp), repr(default), meaning))
    return rows


def recipes() -> list[str]:
    """The recipes shipped with kdlab, as `configs/…` paths (`--config` finds them from any folder)."""
    return sorted(f"configs/{p.relative_to(PACKAGED_CONFIGS)}" for p in Path(PACKAGED_CONFIGS).rglob("*.yaml"))


def method_defaults_table(folder: str = "cifar100") -> str:
    """A markdown table of every shipped pair file's `method_defaults` under configs/<folder>/ (the kd_<pair>.yaml
    files): one row per pair and method entry with its values and their source — docs/method_defaults.md."""
    from kdlab.typed_config import read_config_file

    rows = ["| pair (teacher → student) | method | values | source |", "|---|---|---|---|"]
    for path in sorted((Path(PACKAGED_CONFIGS) / folder).glob("kd_*.yaml")):
        data = read_config_file(path)
        pair = f"{data['teacher']['name']} → {data['student']['name']}"
        for method, values in (data.get("method_defaults") or {}).items():
            shown = ", ".join(f"{k}={v}" for k, v in values.items() if k != "source")
            rows.append(f"| {pair} | {method} | {shown} | {values.get('source', '')} |")
    return "\n".join(rows) + "\n"
