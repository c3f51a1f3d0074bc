"""Handles and the cache: which texts name a preset, where its files are cached, downloading them (https, Kaggle,
Hugging Face) into a staging folder that enters the cache only once every file passed its SHA-256, and the listing."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Optional

from keras_iqa.presets.entries import registered_presets, validate_entry
from keras_iqa.presets.format import (_LOOPBACK_HOSTS, CACHE_ENV, CONFIG_FILE, METADATA_FILE, PRESET_FILES, REMOTE_SCHEMES,
                                      WEIGHTS_FILE, PresetError, PresetHashError, PresetUnavailableError,
                                      _expected_from_metadata, _is_preset_dir, _normalize_sha, _read_json, _scheme,
                                      _verify, sha256_file)


def is_preset_handle(text) -> bool:
    """True for kaggle://, hf://, http(s):// handles, a registered preset name, or a local folder holding config.json,
    model.weights.h5 and metadata.json. Plain Python (no download, no TensorFlow)."""
    if isinstance(text, os.PathLike):
        text = os.fspath(text)
    if not isinstance(text, str) or not text:
        return False
    if _scheme(text) in REMOTE_SCHEMES:
        return True
    if text in registered_presets():
        return True
    return _is_preset_dir(Path(text).expanduser())


def cache_dir(override: Optional[os.PathLike] = None) -> Path:
    """The preset cache: `override`, else $KERAS_IQA_CACHE, else $KERAS_HOME/keras_iqa/presets, else
    ~/.keras/keras_iqa/presets (Keras' own cache root)."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(home).expanduser() / "keras_iqa" / "presets"


def cache_key(handle: str) -> str:
    """The cache folder name of a remote handle: the handle with every run of other characters than [A-Za-z0-9._-]
    replaced by '_' (keras-hub names its gfile cache the same way), e.g. 'kaggle_org_model_keras_v_1'."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", handle.replace("://", "_")).strip("._")
    if len(key) > 120:  # keep file names short; the hash keeps long handles apart
        key = key[:100] + "_" + hashlib.sha256(handle.encode()).hexdigest()[:16]
    return key


def cached_path(handle: str, cache: Optional[os.PathLike] = None) -> Path:
    """Where the files of a remote handle (or a registered name's handle) are cached."""
    entry = registered_presets().get(handle)
    return cache_dir(cache) / cache_key(entry["handle"] if entry else handle)


def local_dir(handle: str, cache: Optional[os.PathLike] = None) -> Optional[Path]:
    """The folder holding the handle's three files on this machine (the folder itself, or its cache folder), or None.
    Only checks that the files are there (fast, no hashing): `from_preset` verifies them."""
    if _scheme(handle) not in REMOTE_SCHEMES and handle not in registered_presets():
        p = Path(handle).expanduser()
        return p if _is_preset_dir(p) else None
    p = cached_path(handle, cache)
    return p if _is_preset_dir(p) else None


def _check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() == "http":
        host = (parts.hostname or "").lower()
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host in _LOOPBACK_HOSTS
        if not loopback:
            raise PresetError(f"{url}: use https:// (plain http:// is accepted only for 127.0.0.1 / localhost)")
    if not parts.netloc:
        raise PresetError(f"{url}: not a URL (https://HOST/PATH/TO/PRESET_DIR)")


def _fetch_url(handle: str, name: str, target_dir: Path, expected: Optional[str]) -> Path:
    """Downloads HANDLE/name into target_dir with keras.utils.get_file (SHA-256 checked when `expected`)."""
    import keras

    url = handle.rstrip("/") + "/" + name
    with contextlib.redirect_stdout(sys.stderr):  # keras prints its download progress on stdout (may hold a table)
        try:
            path = keras.utils.get_file(fname=name, origin=url, file_hash=expected, hash_algorithm="sha256",
                                        cache_dir=str(target_dir), cache_subdir=".")
        except ValueError as e:  # keras: "Incomplete or corrupted file detected" (hash mismatch), file left in place
            path = target_dir / name
            actual = sha256_file(path) if path.is_file() else "(no file)"
            raise PresetHashError(
                f"{url}: {name} failed its SHA-256 check (corrupted, truncated or replaced): expected {expected}, got "
                f"{actual}. Nothing was cached.", name, expected or "", actual) from e
        except Exception as e:  # keras wraps URLError/HTTPError (and short reads) as "URL fetch failure on URL: ..."
            if isinstance(e.__context__, urllib.error.ContentTooShortError):  # the server sent fewer bytes than it said
                raise PresetHashError(
                    f"{url}: {name} was truncated in transit ({e.__context__}); expected SHA-256 "
                    f"{expected or '(from metadata.json)'}, got an incomplete file (removed). Nothing was cached; "
                    "download it again.", name, expected or "", "incomplete download") from e
            raise _Unreachable(f"downloading {url} failed: {e}") from e
    return Path(path)


def _fetch_kaggle(handle: str, name: str, target_dir: Path) -> Path:
    from keras_hub.src.utils.preset_utils import get_file

    try:
        src = get_file(handle, name)  # kagglehub.model_download(handle, name): its own cache, no hash
    except FileNotFoundError as e:
        raise _Unreachable(str(e)) from e
    except ImportError:
        raise
    except ValueError as e:
        if "Unexpected Kaggle preset" in str(e):
            raise PresetError(str(e)) from e
        raise _Unreachable(f"kagglehub could not download {name}: {e}") from e
    except Exception as e:  # requests.ConnectionError and kin: offline
        raise _Unreachable(f"kagglehub could not download {name}: {type(e).__name__}: {e}") from e
    dst = target_dir / name
    shutil.copyfile(src, dst)
    return dst


def _fetch_hf(handle: str, name: str, target_dir: Path) -> Path:
    try:
        import huggingface_hub
        from huggingface_hub.errors import HFValidationError
    except ImportError:
        raise ImportError(f"loading {handle} needs the huggingface_hub package: pip install huggingface_hub") from None
    repo = handle[len("hf://"):]
    try:
        src = huggingface_hub.hf_hub_download(repo_id=repo, filename=name)
    except HFValidationError as e:
        raise PresetError(f"{handle}: Hugging Face handles have the form hf://ORG/NAME ({e})") from e
    except Exception as e:  # offline (LocalEntryNotFoundError, OfflineModeIsEnabled), missing file, HTTP errors
        raise _Unreachable(f"huggingface_hub could not download {name}: {type(e).__name__}: {e}") from e
    dst = target_dir / name
    shutil.copyfile(src, dst)
    return dst


class _Unreachable(Exception):
    """Internal: a file could not be fetched (turned into PresetUnavailableError with the cache instructions)."""


def _fetch_one(handle: str, name: str, target_dir: Path, expected: Optional[str]) -> Path:
    scheme = _scheme(handle)
    if scheme in ("http", "https"):
        return _fetch_url(handle, name, target_dir, expected)
    with contextlib.redirect_stdout(sys.stderr):  # kagglehub prints failed requests on stdout
        path = _fetch_kaggle(handle, name, target_dir) if scheme == "kaggle" else _fetch_hf(handle, name, target_dir)
    if expected:
        _verify(target_dir, {name: expected}, handle, [name])
    return path


def _unavailable(handle: str, target: Path, reason: str, stale: str = "") -> PresetUnavailableError:
    return PresetUnavailableError(
        f"preset {handle!r} is not available: {reason.rstrip('. ')}.{stale} It is not in the cache either: {target} "
        f"(needs {', '.join(PRESET_FILES)}). To use it offline, download those three files where there is network "
        f"(from {handle}, or `keras-iqa preset fetch {handle}` there and copy its cache folder) and copy them into "
        f"{target}/ (or set {CACHE_ENV} to a folder holding {target.name}/), or pass the local preset folder instead "
        "of the handle.")


def fetch_preset(handle: str, cache: Optional[os.PathLike] = None, sha256=None, force_download: bool = False) -> Path:
    """The local folder of a preset with its three files verified: the folder itself for a local preset, else the
    cache folder (downloaded and verified first when missing, stale or `force_download`).

    Args:
        handle: local folder, registered name, kaggle://, hf:// or http(s):// handle.
        cache: cache root (default `cache_dir()`).
        sha256: pins the files of an unregistered handle: the hash of metadata.json, or a file -> hash dict.
        force_download: download again even when cached.

    Raises:
        PresetHashError: a file's SHA-256 differs (nothing is cached).
        PresetUnavailableError: not cached and not downloadable (offline): names the handle, the cache folder and
            where to copy the files.
        PresetError: not a preset / unknown name / bad entry.
    """
    handle = os.fspath(handle)
    pinned = _normalize_sha(sha256)
    registry = registered_presets()
    name = None
    if handle in registry and _scheme(handle) is None and not Path(handle).is_dir():
        name, entry = handle, validate_entry(handle, registry[handle])
        handle = entry["handle"]
        pinned = {**{k: v.lower() for k, v in entry["sha256"].items()}, **pinned}
    source = f"preset {name!r} ({handle})" if name else handle
    if _scheme(handle) not in REMOTE_SCHEMES:
        folder = Path(handle).expanduser()
        if not folder.is_dir():
            close = __import__("difflib").get_close_matches(handle, list(registry), n=3)
            hint = f" Registered presets like it: {', '.join(close)}." if close else ""
            raise PresetError(f"{handle!r} is not a preset: no such folder, not a registered preset name and not a "
                              f"kaggle://, hf:// or https:// handle.{hint} `keras-iqa models` lists the presets.")
        missing = [f for f in PRESET_FILES if not (folder / f).is_file()]
        if missing:
            raise PresetError(f"{folder} is not a complete preset folder: {', '.join(missing)} missing (a preset holds "
                              f"{', '.join(PRESET_FILES)}; write one with save_to_preset or `keras-iqa preset save`)")
        meta = _read_json(folder / METADATA_FILE, METADATA_FILE)
        if METADATA_FILE in pinned:
            _verify(folder, {METADATA_FILE: pinned[METADATA_FILE]}, str(folder))
        _verify(folder, {**_expected_from_metadata(meta, str(folder)),
                         **{k: v for k, v in pinned.items() if k != METADATA_FILE}}, str(folder))
        return folder

    if _scheme(handle) in ("http", "https"):
        _check_url(handle)
    root = cache_dir(cache)
    target = root / cache_key(handle)
    stale = ""
    if target.is_dir() and not force_download:
        try:
            return _verify_cached(target, pinned, source)
        except PresetError as e:  # incomplete or stale copy: download again (kept until the new one verifies)
            stale = f" (the cached copy was not usable: {e})"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".partial-{target.name[:60]}-", dir=root))
    try:
        try:
            _fetch_one(handle, METADATA_FILE, staging, pinned.get(METADATA_FILE))
            meta = _read_json(staging / METADATA_FILE, METADATA_FILE)
            expected = {**_expected_from_metadata(meta, source), **pinned}
            for fname in (CONFIG_FILE, WEIGHTS_FILE):
                _fetch_one(handle, fname, staging, expected[fname])
        except _Unreachable as e:
            raise _unavailable(source, target, str(e), stale) from None
        except PresetHashError as e:
            raise PresetHashError(f"{source}: {e}", e.file, e.expected, e.actual) from None
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _verify_cached(target: Path, pinned: dict, source: str) -> Path:
    missing = [f for f in PRESET_FILES if not (target / f).is_file()]
    if missing:
        raise PresetError(f"{', '.join(missing)} missing in {target}")
    if METADATA_FILE in pinned:
        _verify(target, {METADATA_FILE: pinned[METADATA_FILE]}, source)
    meta = _read_json(target / METADATA_FILE, METADATA_FILE)
    _verify(target, {**_expected_from_metadata(meta, source), **pinned}, source, (CONFIG_FILE, WEIGHTS_FILE))
    return target


def load_metadata(handle: str, **kwargs) -> dict:
    """The model card (metadata.json) of a preset; downloads and verifies it like `from_preset` (same keyword arguments)."""
    return _read_json(fetch_preset(handle, **kwargs) / METADATA_FILE, METADATA_FILE)


def list_presets(cache: Optional[os.PathLike] = None) -> list:
    """Rows {name, handle, card, dataset, srocc, plcc, local} for every registered preset, then every other preset in
    the cache (downloaded from an unregistered handle). Plain Python: no TensorFlow, no hashing, no network."""
    rows = []
    registry = registered_presets()
    seen = set()
    for name in sorted(registry):
        entry = registry[name]
        meta = entry.get("metadata", {}) if isinstance(entry, dict) else {}
        handle = entry.get("handle", "") if isinstance(entry, dict) else ""
        path = cache_dir(cache) / cache_key(handle) if handle else None
        seen.add(path.name if path else None)
        rows.append({"name": name, "handle": handle, "card": meta.get("card"), "dataset": meta.get("dataset"),
                     "srocc": meta.get("srocc"), "plcc": meta.get("plcc"),
                     "local": str(path) if path is not None and _is_preset_dir(path) else None})
    root = cache_dir(cache)
    if root.is_dir():
        for path in sorted(root.iterdir()):
            if path.name in seen or path.name.startswith(".") or not _is_preset_dir(path):
                continue
            try:
                meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            metrics = meta.get("metrics") or {}
            rows.append({"name": meta.get("name") or path.name, "handle": f"(cached) {path.name}", "card": meta.get("card"),
                         "dataset": (meta.get("training") or {}).get("data"), "srocc": metrics.get("srocc"),
                         "plcc": metrics.get("plcc"), "local": str(path)})
    return rows
