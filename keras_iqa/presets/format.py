"""The preset folder format: file names and format tag, the errors, and the SHA-256 checks every file passes."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Optional

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
PRESET_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)
FORMAT = "keras-iqa-preset"
FORMAT_VERSION = 1
CACHE_ENV = "KERAS_IQA_CACHE"
REMOTE_SCHEMES = ("kaggle", "hf", "https", "http")
ENTRY_METADATA_FIELDS = ("card", "description", "dataset", "protocol", "srocc", "plcc", "machine", "license", "command")
_LOOPBACK_HOSTS = ("localhost",)
JSON_MAX_BYTES = 16 << 20  # config.json / metadata.json of a local or cached preset


class PresetError(ValueError):
    """A preset that cannot be used as it is (not a keras-iqa preset, a bad registry entry, an unknown name)."""


class PresetHashError(PresetError):
    """A file whose SHA-256 is not the expected one (corrupted, truncated or replaced); nothing was cached."""

    def __init__(self, message: str, file: str = "", expected: str = "", actual: str = ""):
        super().__init__(message)
        self.file, self.expected, self.actual = file, expected, actual


class PresetCacheError(PresetError):
    """The preset cache cannot be written (read-only, a file, under a file, full); names the path and the setting."""


class PresetUnavailableError(FileNotFoundError):
    """A remote preset that is neither cached nor downloadable now (offline, host unreachable, file missing)."""


def _scheme(text: str) -> Optional[str]:
    return text.split("://", 1)[0].lower() if "://" in text else None


def _is_sha256(text) -> bool:
    return isinstance(text, str) and re.fullmatch(r"[0-9a-fA-F]{64}", text) is not None


def _is_preset_dir(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in PRESET_FILES)


def sha256_file(path: os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _file_records(folder: Path, names=(CONFIG_FILE, WEIGHTS_FILE)) -> dict:
    return {n: {"sha256": sha256_file(folder / n), "bytes": (folder / n).stat().st_size} for n in names}


def _read_json(path: Path, what: str) -> dict:
    try:
        size = Path(path).stat().st_size
        if size > JSON_MAX_BYTES:  # a preset's JSON files are kilobytes: never read a huge one into memory
            raise PresetError(f"{path}: {size:,} bytes is too large for a preset's {what} (at most {JSON_MAX_BYTES:,}); "
                              "not a keras-iqa preset")
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PresetError(f"{path}: cannot read the preset's {what} ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise PresetError(f"{path}: the preset's {what} must be a JSON object, got {type(data).__name__}")
    return data


def _expected_from_metadata(meta: dict, source: str) -> dict:
    """file -> sha256 listed in a preset's metadata.json."""
    if meta.get("format") != FORMAT:
        raise PresetError(f"{source}: {METADATA_FILE} is not a keras-iqa preset's (format {meta.get('format')!r}, "
                          f"expected {FORMAT!r}); write presets with save_to_preset or `keras-iqa preset save`")
    files = meta.get("files")
    out = {}
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        h = (files or {}).get(name, {}).get("sha256") if isinstance((files or {}).get(name), dict) else None
        if not _is_sha256(h):
            raise PresetError(f"{source}: {METADATA_FILE} lists no SHA-256 for {name} (files.{name}.sha256)")
        out[name] = h.lower()
    return out


def _verify(folder: Path, expected: dict, source: str, names=None) -> None:
    """Raises PresetHashError on the first file whose hash differs from `expected`."""
    for name in names or expected:
        path = folder / name
        if not path.is_file():
            raise PresetError(f"{source}: {name} is missing in {folder} (a preset holds {', '.join(PRESET_FILES)})")
        actual = sha256_file(path)
        if actual != expected[name].lower():
            raise PresetHashError(
                f"{source}: {name} failed its SHA-256 check (corrupted, truncated or replaced): expected "
                f"{expected[name].lower()}, got {actual} ({path.stat().st_size} bytes). Nothing was cached; download "
                "it again, or ask the publisher for the right hash.", name, expected[name].lower(), actual)


def _normalize_sha(sha256) -> dict:
    """sha256= argument: None, a metadata.json hash, or a file -> hash dict."""
    if sha256 is None:
        return {}
    if isinstance(sha256, str):
        if not _is_sha256(sha256):
            raise PresetError(f"sha256 {sha256!r} is not 64 hex digits")
        return {METADATA_FILE: sha256.lower()}
    out = {}
    for name, h in dict(sha256).items():
        if name not in PRESET_FILES or not _is_sha256(h):
            raise PresetError(f"sha256[{name!r}] = {h!r}: give 64 hex digits for one of {', '.join(PRESET_FILES)}")
        out[name] = h.lower()
    return out
