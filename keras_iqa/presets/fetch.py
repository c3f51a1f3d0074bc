"""Handles and the cache: which texts name a preset, where its files are cached, downloading them (https, Kaggle,
Hugging Face; bounded by `download.Limits`) into a staging folder that enters the cache only once every file passed its
SHA-256 and is removed on any failure, and the listing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from keras_iqa.presets.download import Limits, Unreachable, cache_error, check_url, download, limits, size_cap
from keras_iqa.presets.entries import registered_presets, validate_entry
from keras_iqa.presets.format import (CACHE_ENV, CONFIG_FILE, METADATA_FILE, PRESET_FILES, REMOTE_SCHEMES, WEIGHTS_FILE,
                                      PresetError, PresetHashError, PresetUnavailableError, _expected_from_metadata,
                                      _is_preset_dir, _normalize_sha, _read_json, _scheme, _verify)

_STAGING = ".partial-"
_STALE_STAGING_S = 24 * 3600  # a staging folder this old was left by a killed process


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
    """The cache folder name of a remote handle: a readable slug of it (runs of characters other than [A-Za-z0-9._-]
    turned into '_', at most 80) and the first 12 hex digits of the SHA-256 of the whole handle, so two handles never
    share a folder (`.../a/b` and `.../a_b` have one slug, two hashes), e.g. 'kaggle_org_model_keras_v_1-3f9a0c1b2d4e'.
    A trailing '/' is not part of the handle."""
    handle = handle.rstrip("/")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", handle.replace("://", "_")).strip("._")[:80]
    return f"{slug}-{hashlib.sha256(handle.encode()).hexdigest()[:12]}"


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


def _fetch_url(handle: str, name: str, target_dir: Path, expected: Optional[str], lim: Limits,
               size: Optional[int]) -> Path:
    """Streams HANDLE/name into target_dir within `lim` and the file's size cap (SHA-256 checked when `expected`)."""
    cap, reason = size_cap(name, size, lim, METADATA_FILE)
    download(handle.rstrip("/") + "/" + name, target_dir / name, lim, cap, reason, expected)
    return target_dir / name


def _copy_capped(src, name: str, target_dir: Path, lim: Limits, size: Optional[int], where: str) -> Path:
    """Copies a file another library downloaded into the staging folder, refusing it when over its size cap."""
    cap, reason = size_cap(name, size, lim, METADATA_FILE)
    if os.path.getsize(src) > cap:
        raise PresetError(f"{where}: {name} is larger than {cap:,} bytes ({reason}); refused, nothing was cached")
    dst = target_dir / name
    try:
        shutil.copyfile(src, dst)
    except OSError as e:
        raise cache_error(target_dir, e) from None
    return dst


def _fetch_kaggle(handle: str, name: str, target_dir: Path, lim: Limits, size: Optional[int]) -> Path:
    from keras_hub.src.utils.preset_utils import get_file

    try:  # kagglehub.model_download(handle, name): its own cache and timeouts (5 s connect, 15 s read), no hash
        src = get_file(handle, name)
    except FileNotFoundError as e:
        raise Unreachable(str(e)) from e
    except ImportError:
        raise
    except ValueError as e:
        if "Unexpected Kaggle preset" in str(e):
            raise PresetError(str(e)) from e
        raise Unreachable(f"kagglehub could not download {name}: {e}") from e
    except Exception as e:  # requests.ConnectionError and kin: offline
        raise Unreachable(f"kagglehub could not download {name}: {type(e).__name__}: {e}") from e
    return _copy_capped(src, name, target_dir, lim, size, handle)


def _fetch_hf(handle: str, name: str, target_dir: Path, lim: Limits, size: Optional[int]) -> Path:
    try:
        import huggingface_hub
        from huggingface_hub.errors import HFValidationError
    except ImportError:
        raise ImportError(f"loading {handle} needs the huggingface_hub package: pip install huggingface_hub") from None
    repo = handle[len("hf://"):]
    cap, reason = size_cap(name, size, lim, METADATA_FILE)
    try:  # the size the Hub announces, before downloading (huggingface_hub's own cache may already hold the file)
        info = huggingface_hub.hf_hub_download(repo_id=repo, filename=name, etag_timeout=lim.read, dry_run=True)
    except HFValidationError as e:
        raise PresetError(f"{handle}: Hugging Face handles have the form hf://ORG/NAME ({e})") from e
    except Exception:  # offline: the download below says why, or takes the file from huggingface_hub's cache
        info = None
    if info is not None and info.will_download and (info.file_size or 0) > cap:
        raise PresetError(f"{handle}: {name} is larger than {cap:,} bytes ({reason}; the Hub announced "
                          f"{info.file_size:,}); refused, nothing was cached")
    try:  # idle timeout of the download itself: huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT (default 10 s)
        src = huggingface_hub.hf_hub_download(repo_id=repo, filename=name, etag_timeout=lim.read)
    except HFValidationError as e:
        raise PresetError(f"{handle}: Hugging Face handles have the form hf://ORG/NAME ({e})") from e
    except Exception as e:  # offline (LocalEntryNotFoundError, OfflineModeIsEnabled), missing file, HTTP errors
        raise Unreachable(f"huggingface_hub could not download {name}: {type(e).__name__}: {e}") from e
    return _copy_capped(src, name, target_dir, lim, size, handle)


def _fetch_one(handle: str, name: str, target_dir: Path, expected: Optional[str], lim: Limits = Limits(),
               size: Optional[int] = None) -> Path:
    scheme = _scheme(handle)
    if scheme in ("http", "https"):
        return _fetch_url(handle, name, target_dir, expected, lim, size)
    fetch = _fetch_kaggle if scheme == "kaggle" else _fetch_hf
    with contextlib.redirect_stdout(sys.stderr):  # kagglehub prints failed requests on stdout
        path = fetch(handle, name, target_dir, lim, size)
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


def fetch_preset(handle: str, cache: Optional[os.PathLike] = None, sha256=None, force_download: bool = False,
                 timeout=None, max_bytes: Optional[int] = None) -> Path:
    """The local folder of a preset with its three files verified: the folder itself for a local preset, else the
    cache folder (downloaded and verified first when missing, stale or `force_download`).

    Args:
        handle: local folder, registered name, kaggle://, hf:// or http(s):// handle.
        cache: cache root (default `cache_dir()`).
        sha256: pins the files of an unregistered handle: the hash of metadata.json, or a file -> hash dict.
        force_download: download again even when cached.
        timeout: seconds to connect and to wait for the next byte, or (connect, read); default
            $KERAS_IQA_CONNECT_TIMEOUT / $KERAS_IQA_READ_TIMEOUT, else 10 / 30.
        max_bytes: the largest file accepted when no size is listed for it (registry entry, metadata.json); default
            $KERAS_IQA_MAX_DOWNLOAD_BYTES, else 4 GiB. metadata.json itself is capped at 1 MiB.

    Raises:
        PresetHashError: a file's SHA-256 differs, or it was cut short (nothing is cached).
        PresetUnavailableError: not cached and not downloadable (offline, timed out): names the handle, the cache
            folder and where to copy the files.
        PresetCacheError: the cache cannot be written (names the folder and $KERAS_IQA_CACHE).
        PresetError: not a preset / unknown name / bad entry / a file over its size cap / a refused URL or redirect.
    """
    handle = os.fspath(handle)
    pinned = _normalize_sha(sha256)
    registry = registered_presets()
    name, sizes = None, {}
    if handle in registry and _scheme(handle) is None and not Path(handle).is_dir():
        name, entry = handle, validate_entry(handle, registry[handle])
        handle = entry["handle"]
        pinned = {**{k: v.lower() for k, v in entry["sha256"].items()}, **pinned}
        sizes = dict(entry.get("bytes") or {})
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
        check_url(handle)
    lim = limits(timeout, max_bytes)
    root = cache_dir(cache)
    target = root / cache_key(handle)
    stale = ""
    if target.is_dir() and not force_download:
        try:
            return _verify_cached(target, pinned, source)
        except PresetError as e:  # incomplete or stale copy: download again (kept until the new one verifies)
            stale = f" (the cached copy was not usable: {e})"
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING}{target.name}-", dir=root))
    except OSError as e:
        raise cache_error(root, e) from None
    try:  # from here on, any failure (a timeout, a size or hash refusal, Ctrl-C) removes the staging folder
        _remove_stale_staging(root)
        try:
            _fetch_one(handle, METADATA_FILE, staging, pinned.get(METADATA_FILE), lim, sizes.get(METADATA_FILE))
            meta = _read_json(staging / METADATA_FILE, METADATA_FILE)
            expected = {**_expected_from_metadata(meta, source), **pinned}
            listed = {**_sizes_from_metadata(meta), **sizes}
            for fname in (CONFIG_FILE, WEIGHTS_FILE):
                _fetch_one(handle, fname, staging, expected[fname], lim, listed.get(fname))
        except Unreachable as e:
            raise _unavailable(source, target, str(e), stale) from None
        except PresetHashError as e:
            raise PresetHashError(f"{source}: {e}", e.file, e.expected, e.actual) from None
        try:
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except OSError as e:
            if _is_preset_dir(target):  # another process put the same preset there first: verify its copy
                return _verify_cached(target, pinned, source)
            raise cache_error(root, e) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _sizes_from_metadata(meta: dict) -> dict:
    """file -> byte count listed in metadata.json (`files.NAME.bytes`), where it is a non-negative integer."""
    files = meta.get("files") if isinstance(meta.get("files"), dict) else {}
    return {n: r["bytes"] for n, r in files.items()
            if isinstance(r, dict) and isinstance(r.get("bytes"), int) and r["bytes"] >= 0}


def _remove_stale_staging(root: Path) -> None:
    """Removes staging folders older than a day (left by a process killed outright; younger ones may be downloading)."""
    for p in root.glob(_STAGING + "*"):
        with contextlib.suppress(OSError):
            if time.time() - p.stat().st_mtime > _STALE_STAGING_S:
                shutil.rmtree(p, ignore_errors=True)


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
