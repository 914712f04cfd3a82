"""Typed configuration from plain data: dataclasses built from nested dicts (YAML), `a.b=c` overrides, YAML
files that extend other files, and numeric ranges declared on the fields that own them.

Nothing here knows about kdlab's own sections; `kdlab.config` declares them. Rules:
- unknown keys are an error naming the key and the closest valid one;
- values are coerced to the declared type or rejected with the expected type (inf/nan never pass);
- a field declared with `bounded(default, gt=…, ge=…, lt=…, le=…)` rejects values outside its range, named by
  their full key; a subclass that changes the default keeps the range (it is looked up along the MRO);
- a YAML file may start from others with `base: FILE` or `base: [FILE, …]` (paths relative to the file): the
  bases are merged first, in order, then the file's own keys on top (mappings merge key by key, anything
  else replaces). A `method` mapping naming a different method replaces the inherited one instead of
  merging, so a pair file plus `method.name=dkd` means DKD with its own defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kdlab.errors import ConfigError, suggest


@dataclass(frozen=True)
class Bounds:
    """An allowed numeric range: gt < x, ge ≤ x, x < lt, x ≤ le (None: no limit on that side)."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def violation(self, x: float) -> str | None:
        for limit, op, ok in (
            (self.gt, ">", lambda v, b: v > b),
            (self.ge, ">=", lambda v, b: v >= b),
            (self.lt, "<", lambda v, b: v < b),
            (self.le, "<=", lambda v, b: v <= b),
        ):
            if limit is not None and not ok(x, limit):
                return f"must be {op} {limit:g}"
        return None


def bounded(
    default: Any, *, gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None
) -> Any:
    """A dataclass field with `default` whose values must lie in the given range (None values pass)."""
    return field(default=default, metadata={"bounds": Bounds(gt, ge, lt, le)})


def _bounds(cls: type, name: str) -> Bounds | None:
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and "bounds" in f.metadata:
            return f.metadata["bounds"]
    return None


def _check_bounds(value: Any, bounds: Bounds | None, path: str) -> None:
    if bounds is None or value is None or isinstance(value, bool):
        return
    values = value if isinstance(value, list) else [value]
    for v in values:
        problem = bounds.violation(v)
        if problem:
            raise ConfigError(f"{path} {problem}, got {value!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert a YAML value to the declared type `tp`, or raise ConfigError naming `path`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{path}: bad value {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no as booleans
            spelled = [w for w in (("on", "true", "yes") if value else ("off", "false", "no")) if w in allowed]
            value = spelled[0] if spelled else value
        if value not in allowed:
            raise ConfigError(
                f"{path} must be one of {', '.join(map(str, allowed))}; got {value!r}"
                f"{suggest(str(value), map(str, allowed))}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping of keys, got {value!r}")
        return from_dict(tp, value, path)  # type: ignore[arg-type]
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return {str(k): _coerce(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{path} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"{path} must be an integer, got {value!r}") from None
        if not math.isfinite(as_float) or as_float != int(as_float):  # int() of inf / nan raises
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path} must be a number, got {value!r}") from None
        if not math.isfinite(number):  # no setting means anything at inf / nan; it would only poison a run later
            raise ConfigError(f"{path} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, dict | list) or value is None:
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{path}: unsupported type {_type_name(tp)}")


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys fail with the closest valid key, values outside a
    field's declared `bounded` range fail naming the key (`path.key`)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=2, cutoff=0.6)
            hint = f" (did you mean: {', '.join(f'{path}.{c}' if path else c for c in close)}?)" if close else ""
            raise ConfigError(f"unknown config key {full!r}{hint}; valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], full)
        _check_bounds(kwargs[key], _bounds(cls, key), full)
    return cls(**kwargs)


def to_dict(cfg: Any) -> Any:
    """A dataclass config as plain nested dicts/lists (for YAML/JSON)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=c` → (['a', 'b'], c) with c parsed as YAML (so numbers, lists and booleans work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """data[k1][k2]…[kn] = value in place; missing (or non-mapping) intermediate sections become new mappings."""
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` overrides to a nested dict in place (missing intermediate sections are created)."""
    for text in overrides:
        set_path(data, *parse_override(text))
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys at the top level")
    return data


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, mappings merged key by key (new dict; neither input changes). A `method` mapping with
    a different `name` replaces the base's instead of merging."""
    out = dict(base)
    for key, value in top.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            switches_method = key == "method" and value.get("name", old.get("name")) != old.get("name")
            out[key] = value if switches_method else merge(old, value)
        else:
            out[key] = value
    return out


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config with its `base:` files merged in (see the module docstring); a cycle is an error."""
    p = Path(path).resolve()
    if p in _seen:
        raise ConfigError(f"config file {path} extends itself through base: {' → '.join(map(str, (*_seen, p)))}")
    data = read_yaml(path)
    bases = data.pop("base", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"config file {path}: base must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for b in bases:
        merged = merge(merged, read_config_file(Path(path).parent / b, (*_seen, p)))
    return merge(merged, data)


def apply_method_override(data: dict[str, Any], overrides: list[str], notice: Callable[[str], None]) -> None:
    """If the overrides switch `method.name`, drop the file's other method keys first (with a notice), so the
    new method starts from its own defaults; method.* overrides given on the line still apply."""
    names = [v for k, v in map(parse_override, overrides) if k == ["method", "name"]]
    method = data.get("method")
    if not names or not isinstance(method, dict) or method.get("name") in (None, names[-1]):
        return
    dropped = sorted(k for k in method if k != "name")
    data["method"] = {"name": method["name"]}
    if dropped:
        notice(f"method.name={names[-1]} replaces {method['name']}: its keys {', '.join(dropped)} were dropped")
