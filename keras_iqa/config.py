"""Configs as dataclasses (Model Garden style): defaults in code, overrides from YAML/JSON files and `--set key=value`.

Nested dataclasses are addressed with dots: `--set optimizer.lr=1e-4`. Values given on the command line are parsed as YAML
scalars/lists (`epochs=40`, `milestones=[10,20,30]`, `weights=null`). Unknown keys are errors that list the valid ones.

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
ValueError: Unknown config key 'epoch' for REQATrainConfig; valid keys: ...
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable, Mapping, Optional, TypeVar

import yaml

T = TypeVar("T")


def to_dict(cfg) -> dict:
    """A JSON-ready dict of a (nested) dataclass config."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _coerce(value: Any, current: Any, key: str):
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, str):
            low = value.lower()
            if low in ("true", "yes", "1", "on"):
                return True
            if low in ("false", "no", "0", "off"):
                return False
            raise ValueError(f"Config key {key!r} expects a boolean, got {value!r}")
        return bool(value)
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, (int,)) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            return int(value)
        raise ValueError(f"Config key {key!r} expects an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            return float(value)
        raise ValueError(f"Config key {key!r} expects a number, got {value!r}")
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    return value


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
            raise ValueError(
                f"Unknown config key {prefix + head!r} for {type(cfg).__name__}; valid keys: {', '.join(sorted(fields))}"
            )
        current = getattr(cfg, head)
        if rest:
            if not dataclasses.is_dataclass(current):
                raise ValueError(f"Config key {prefix + head!r} is not a section; cannot set {prefix + key!r}")
            nested.setdefault(head, {})[rest] = value
        elif dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            nested.setdefault(head, {}).update(value)
        else:
            changes[head] = _coerce(value, current, prefix + head)
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
        cfg = apply_overrides(cfg, read_config_file(path))
    cfg = apply_overrides(cfg, dict(overrides or {}))
    return apply_overrides(cfg, parse_sets(sets))


def from_dict(cls: type, data: Mapping[str, Any]):
    """Rebuilds a config dataclass from `to_dict` output (unknown keys are errors)."""
    return apply_overrides(cls(), dict(data))
