"""Configs as dataclasses (Model Garden style): defaults in code, overrides from YAML/JSON files and `--set key=value`.

Nested dataclasses are addressed with dots: `--set optimizer.lr=1e-4`. Values given on the command line are parsed as YAML
scalars/lists (`epochs=40`, `milestones=[10,20,30]`, `weights=null`). Every value is checked against its field's type
annotation as it is applied (before anything runs): a wrong type is an error naming the key, the expected type and the
value; an unknown key is an error with the closest valid key ("did you mean 'epochs'?") and the valid ones.

Example:
>>> import tempfile
>>> from pathlib import Path
>>> from keras_iqa.commands.train_reqa import REQATrainConfig
>>> from keras_iqa.config import load_config, to_dict
>>> from keras_iqa.training.hcl import HCLTrainConfig
>>> from keras_iqa.training.runner import save_json
>>> run_dir = Path(tempfile.mkdtemp())
>>> _ = (run_dir / "my.yaml").write_text("model: reqa-tiny\\nepochs: 3\\n")
>>> cfg = load_config(REQATrainConfig, files=[str(run_dir / "my.yaml")], sets=["epochs=2", "model_overrides={steps: 3}"])
>>> cfg.model, cfg.epochs, cfg.model_overrides
('reqa-tiny', 2, {'steps': 3})
>>> load_config(HCLTrainConfig, sets=["synthetic.epochs=5"]).synthetic.epochs  # nested dataclasses: dotted keys
5
>>> save_json(to_dict(cfg), run_dir / "config.json")
>>> load_config(REQATrainConfig, sets=["epoch=2"])
Traceback (most recent call last):
...
ValueError: Unknown config key 'epoch' for REQATrainConfig; did you mean 'epochs'? valid keys: ...
>>> load_config(REQATrainConfig, sets=["epochs=one"])
Traceback (most recent call last):
...
ValueError: config key 'epochs' expects an integer, got 'one' (str)
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import types
import typing
from typing import Any, Iterable, Mapping, Optional, TypeVar, Union

import yaml

T = TypeVar("T")


def to_dict(cfg) -> dict:
    """A JSON-ready dict of a (nested) dataclass config."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
          tuple: "a list", dict: "a mapping", type(None): "null"}


class _Mismatch(Exception):
    """A value that does not fit one type (tried in turn for the members of a Union)."""


def _type_name(hint) -> str:
    members = _members(hint)
    if members:
        return " or ".join(dict.fromkeys(_type_name(m) for m in members))
    origin = typing.get_origin(hint) or hint
    return _NAMES.get(origin, getattr(origin, "__name__", str(origin)))


def _members(hint) -> tuple:
    """The member types of a Union / Optional annotation (() for a plain type)."""
    if typing.get_origin(hint) in (Union, getattr(types, "UnionType", Union)):
        return typing.get_args(hint)
    return ()


def _to(value: Any, hint):
    """`value` converted to the annotation `hint`, or `_Mismatch`."""
    members = _members(hint)
    if members:
        if value is None:
            if type(None) in members:
                return None
            raise _Mismatch
        # a string is kept for a str member only when no number member reads it ("1e-4" -> 1e-4, "auto" stays "auto")
        ordered = [m for m in members if m is not str and m is not type(None)] + [m for m in members if m is str]
        for m in ordered:
            try:
                return _to(value, m)
            except _Mismatch:
                continue
        raise _Mismatch
    origin = typing.get_origin(hint) or hint
    if hint is Any or origin is object or not isinstance(origin, type):
        return value
    if origin is type(None):
        if value is None:
            return None
        raise _Mismatch
    if value is None:
        raise _Mismatch
    if origin is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "false", "no", "off"):
            return value.strip().lower() in ("true", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _Mismatch
    if origin is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if origin is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if origin is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a name that reads as a number in YAML (`--set split=3`)
        raise _Mismatch
    if origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            return origin(value)
        raise _Mismatch
    if origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise _Mismatch
    if isinstance(value, origin):
        return value
    raise _Mismatch


def _example(hint) -> str:
    origin = typing.get_origin(hint) or hint
    if origin is dict:
        return " (e.g. --set 'KEY={steps: 3}')"
    if origin in (list, tuple):
        return " (e.g. --set 'KEY=[10, 20]')"
    return ""


def _coerce(value: Any, hint, key: str):
    """`value` as the type of the field `key` (annotation `hint`); a ValueError naming the key, the type and the value."""
    try:
        return _to(value, hint)
    except _Mismatch:
        shown = f"{value!r} ({type(value).__name__})" if value is not None else "null"
        raise ValueError(f"config key {key!r} expects {_type_name(hint)}, got {shown}"
                         f"{_example(hint).replace('KEY', key)}") from None


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    """The resolved field annotations of a config dataclass; a field whose annotation does not resolve is not checked."""
    try:
        return typing.get_type_hints(cls)
    except Exception:
        return {}


def _suggest(name: str, valid, prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f"did you mean {prefix + close[0]!r}? " if close else ""


def apply_overrides(cfg: T, overrides: Mapping[str, Any], prefix: str = "") -> T:
    """Returns a copy of `cfg` with `overrides` applied; keys may be dotted (`"optimizer.lr"`) or nested dicts."""
    if not overrides:
        return cfg
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    changes: dict[str, Any] = {}
    nested: dict[str, dict] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in fields:
            raise ValueError(f"Unknown config key {prefix + head!r} for {type(cfg).__name__}; "
                             f"{_suggest(head, fields, prefix)}valid keys: {', '.join(sorted(fields))}")
        current = getattr(cfg, head)
        if rest:
            if not dataclasses.is_dataclass(current):
                raise ValueError(f"Config key {prefix + head!r} is not a section; cannot set {prefix + key!r}")
            nested.setdefault(head, {})[rest] = value
        elif dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ValueError(f"config key {prefix + head!r} is a section: give its keys as a mapping or one by one "
                                 f"(--set {prefix + head}.KEY=VALUE), got {value!r}")
            nested.setdefault(head, {}).update(value)
        else:
            hint = _hints(type(cfg)).get(head, Any)
            changes[head] = _coerce(value, hint, prefix + head)
    for head, sub in nested.items():
        changes[head] = apply_overrides(getattr(cfg, head), sub, prefix + head + ".")
    return dataclasses.replace(cfg, **changes)


def parse_sets(sets: Optional[Iterable[str]]) -> dict[str, Any]:
    """`["a.b=1", "c=[1,2]"]` -> `{"a.b": 1, "c": [1, 2]}` (values parsed as YAML)."""
    out = {}
    for item in sets or ():
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def read_config_file(path: str) -> dict:
    """Reads a YAML or JSON override file (a mapping)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) if not path.endswith(".json") else json.load(f)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a config file must hold a mapping of keys to values, got {type(data).__name__}")
    return dict(data)


def load_config(cls_or_cfg, files: Iterable[str] = (), sets: Iterable[str] = (), overrides: Optional[Mapping] = None):
    """Defaults <- each file in order <- `overrides` <- `--set` items."""
    cfg = cls_or_cfg() if isinstance(cls_or_cfg, type) else cls_or_cfg
    for path in files or ():
        try:
            cfg = apply_overrides(cfg, read_config_file(path))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    cfg = apply_overrides(cfg, dict(overrides or {}))
    return apply_overrides(cfg, parse_sets(sets))


def from_dict(cls: type, data: Mapping[str, Any]):
    """Rebuilds a config dataclass from `to_dict` output (unknown keys are errors)."""
    return apply_overrides(cls(), dict(data))
