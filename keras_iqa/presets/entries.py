"""The preset registry: entries of `keras_iqa.iqa_presets.IQA_PRESETS` (handle, SHA-256s, metadata), checked, added at
run time, and written for a published folder (`registry_entry`)."""

from __future__ import annotations

import os
from pathlib import Path

from keras_iqa.presets.format import (ENTRY_METADATA_FIELDS, METADATA_FILE, PRESET_FILES, REMOTE_SCHEMES, PresetError,
                                      _is_sha256, _read_json, _scheme, sha256_file)
from keras_iqa.registry import CARD_INDEX


def registered_presets() -> dict:
    """name -> entry of every registered preset (`keras_iqa.iqa_presets.IQA_PRESETS` plus `register_preset` additions)."""
    from keras_iqa.iqa_presets import IQA_PRESETS

    return dict(IQA_PRESETS)


def validate_entry(name: str, entry: dict) -> dict:
    """Checks a registry entry (format in `keras_iqa.iqa_presets`); returns it. Errors name the entry and the field."""
    where = f"preset entry {name!r}"
    if not isinstance(entry, dict):
        raise PresetError(f"{where}: expected a dict with handle, sha256 and metadata, got {type(entry).__name__}")
    missing = [k for k in ("handle", "sha256", "metadata") if k not in entry]
    if missing:
        raise PresetError(f"{where}: missing {', '.join(missing)} (see keras_iqa/iqa_presets.py for the format)")
    handle = entry["handle"]
    if not isinstance(handle, str) or _scheme(handle) not in REMOTE_SCHEMES:
        raise PresetError(f"{where}: handle must be kaggle://, hf:// or https://, got {handle!r}")
    sha = entry["sha256"]
    if not isinstance(sha, dict) or sorted(sha) != sorted(PRESET_FILES):
        raise PresetError(f"{where}: sha256 must map each of {', '.join(PRESET_FILES)} to its hash, got "
                          f"{sorted(sha) if isinstance(sha, dict) else sha!r}")
    for f, h in sha.items():
        if not _is_sha256(h):
            raise PresetError(f"{where}: sha256[{f!r}] is not 64 hex digits: {h!r}")
    sizes = entry.get("bytes", {})  # optional: each file's size, the cap of its download
    if not isinstance(sizes, dict) or any(f not in PRESET_FILES or not isinstance(n, int) or isinstance(n, bool) or n < 0
                                          for f, n in sizes.items()):
        raise PresetError(f"{where}: bytes must map files of {', '.join(PRESET_FILES)} to their sizes, got {sizes!r}")
    meta = entry["metadata"]
    missing = [k for k in ENTRY_METADATA_FIELDS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise PresetError(f"{where}: metadata lacks {', '.join(missing)} (every entry names its card, data, protocol, "
                          "measured SROCC/PLCC, machine, licence and the command that made it)")

    if name in CARD_INDEX:
        raise PresetError(f"{where}: the name is a model card's (random weights); give the preset its own name")
    return entry


def register_preset(name: str, entry: dict, replace: bool = False) -> dict:
    """Adds a validated entry to the registry at run time (for presets hosted elsewhere, and tests)."""
    from keras_iqa.iqa_presets import IQA_PRESETS

    validate_entry(name, entry)
    if name in IQA_PRESETS and not replace and IQA_PRESETS[name] != entry:
        raise PresetError(f"preset {name!r} is already registered with another entry (pass replace=True)")
    IQA_PRESETS[name] = entry
    return entry


def unregister_preset(name: str) -> None:
    """Removes a run-time entry (no error when absent)."""
    from keras_iqa.iqa_presets import IQA_PRESETS

    IQA_PRESETS.pop(name, None)


def registry_entry(preset_dir: os.PathLike, handle: str = "kaggle://ORG/keras-iqa/keras/NAME/1",
                   command: str = "") -> dict:
    """A registry entry for a preset folder (hashes computed, metadata fields taken from its metadata.json): what
    `keras-iqa preset save` prints for keras_iqa/iqa_presets.py once the folder is published at `handle`."""
    folder = Path(preset_dir)
    meta = _read_json(folder / METADATA_FILE, METADATA_FILE)
    metrics, training = meta.get("metrics") or {}, meta.get("training") or {}
    return {
        "handle": handle,
        "sha256": {n: sha256_file(folder / n) for n in PRESET_FILES},
        "bytes": {n: (folder / n).stat().st_size for n in PRESET_FILES},
        "metadata": {
            "card": meta.get("card"), "description": meta.get("description"),
            "dataset": training.get("data"), "protocol": training.get("protocol"),
            "srocc": metrics.get("srocc"), "plcc": metrics.get("plcc"), "machine": meta.get("machine"),
            "license": meta.get("license"), "command": command or training.get("command") or "",
        },
    }
