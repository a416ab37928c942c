"""Typed configs: dataclasses loaded from YAML, overridden by `key=value` strings, saved as JSON.

    cfg = load_config(TrainConfig, "configs/ugen-tiny.yaml", ["train.lr=3e-4", "model.n_layers=6"])

Nested dataclasses are addressed with dots. A value is parsed as YAML (so `3e-4`, `true`,
`[1, 2]` and `null` work) and checked against the field's type; an unknown key is an error that
lists the keys that exist.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from uniar.errors import UserError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass `cls` from a (possibly partial) dict; missing keys keep their defaults."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(
            f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
            f"valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], where + f.name)
    return cls(**kwargs)


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Return a copy of `cfg` with each `dotted.key=value` applied."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise UserError(f"override {key!r}: {p!r} is not a config section")
            node = node[p]
        if parts[-1] not in node:
            raise UserError(f"override {key!r}: unknown key; valid keys: {', '.join(sorted(node))}")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return from_dict(type(cfg), data)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    cfg = from_dict(cls, load_yaml(path)) if path else cls()
    return apply_overrides(cfg, overrides or [])


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config {where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where + ".")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except UserError:
                pass
        raise UserError(f"config {where}: {value!r} does not match {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"config {where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config {where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") if inner is not Any and inner is not Ellipsis else v
                 for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config {where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config {where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config {where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config {where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"config {where}: expected a string, got {value!r}")
        return value
    return value
