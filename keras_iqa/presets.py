"""Presets: a trained keras-iqa model as a folder of three files, in keras-hub's layout (docs/presets.md).

    config.json        the model's Keras config (`keras.saving.serialize_keras_object`, no compile/build config): the
                       architecture, the score range and direction, and the test-time crop contract fields
    model.weights.h5   the weights (`model.save_weights`)
    metadata.json      the model card: card and family, paper, score range and direction, the test-time contract
                       (`TestTimeCrops.to_dict`), training data and protocol, measured metrics and the machine, licence,
                       keras-iqa / Keras / TensorFlow versions, and the SHA-256 and size of config.json and model.weights.h5

`save_to_preset(model, dir)` (also `model.save_to_preset(dir)`) writes one; `keras-iqa preset save RUN --out DIR` writes one
from a training run (card, data, protocol and test metrics taken from the run's files). `from_preset(handle)` loads:

- a local preset folder;
- a registered preset name (`keras_iqa.iqa_presets.IQA_PRESETS`, shipped empty; `register_preset` adds entries);
- `kaggle://ORG/MODEL/keras/VARIATION[/VERSION]` (kagglehub, through keras-hub's `get_file`), `hf://ORG/NAME`
  (huggingface_hub), or `https://HOST/PATH/DIR` (the three files under that URL; `http://` only for 127.0.0.1/localhost).

Every file is checked against its SHA-256 (a registry entry's, a `sha256=` argument's, else metadata.json's list) before
it enters the cache (`cache_dir()`: $KERAS_IQA_CACHE, else $KERAS_HOME/keras_iqa/presets, else ~/.keras/keras_iqa/presets;
one folder per handle). A mismatch or a truncated download raises `PresetHashError` with the expected and actual hash, and
leaves nothing in the cache. Without network, a handle that is not cached raises `PresetUnavailableError` naming the
handle, the cache folder and where to copy the files.

Only `from_preset` and `save_to_preset` import Keras; the rest (handles, cache, registry) is plain Python, so
`keras-iqa models` lists presets without TensorFlow.

Example:
>>> import tempfile
>>> import numpy as np
>>> import keras_iqa
>>> from keras_iqa.presets import from_preset, is_preset_handle, save_to_preset
>>> model = keras_iqa.create_model("metaiqa-tiny")
>>> folder = save_to_preset(model, tempfile.mkdtemp() + "/metaiqa-tiny-demo",
...                         metadata={"training": {"data": "none (random init)", "protocol": "none"}})
>>> sorted(p.name for p in folder.iterdir())
['config.json', 'metadata.json', 'model.weights.h5']
>>> is_preset_handle(str(folder)), is_preset_handle("hf://org/name"), is_preset_handle("reqa-tiny")
(True, True, False)
>>> loaded = from_preset(str(folder))
>>> x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
>>> bool(np.allclose(loaded.score(x), model.score(x), atol=1e-6)), loaded.card_name
(True, 'metaiqa-tiny')
"""

from __future__ import annotations

import contextlib
import datetime as _dt
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

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
PRESET_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)
FORMAT = "keras-iqa-preset"
FORMAT_VERSION = 1
CACHE_ENV = "KERAS_IQA_CACHE"
REMOTE_SCHEMES = ("kaggle", "hf", "https", "http")
ENTRY_METADATA_FIELDS = ("card", "description", "dataset", "protocol", "srocc", "plcc", "machine", "license", "command")
_FAMILIES = {"REQA": "reqa", "MetaIQA": "metaiqa", "HCL": "hcl"}
_LOOPBACK_HOSTS = ("localhost",)


class PresetError(ValueError):
    """A preset that cannot be used as it is (not a keras-iqa preset, a bad registry entry, an unknown name)."""


class PresetHashError(PresetError):
    """A file whose SHA-256 is not the expected one (corrupted, truncated or replaced); nothing was cached."""

    def __init__(self, message: str, file: str = "", expected: str = "", actual: str = ""):
        super().__init__(message)
        self.file, self.expected, self.actual = file, expected, actual


class PresetUnavailableError(FileNotFoundError):
    """A remote preset that is neither cached nor downloadable now (offline, host unreachable, file missing)."""


# ------------------------------------------------------------------------------------------------------------- registry
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
    meta = entry["metadata"]
    missing = [k for k in ENTRY_METADATA_FIELDS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise PresetError(f"{where}: metadata lacks {', '.join(missing)} (every entry names its card, data, protocol, "
                          "measured SROCC/PLCC, machine, licence and the command that made it)")
    from keras_iqa.registry import CARD_INDEX

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


# ------------------------------------------------------------------------------------------------------- handles, cache
def _scheme(text: str) -> Optional[str]:
    return text.split("://", 1)[0].lower() if "://" in text else None


def _is_sha256(text) -> bool:
    return isinstance(text, str) and re.fullmatch(r"[0-9a-fA-F]{64}", text) is not None


def _is_preset_dir(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in PRESET_FILES)


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


def sha256_file(path: os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _file_records(folder: Path, names=(CONFIG_FILE, WEIGHTS_FILE)) -> dict:
    return {n: {"sha256": sha256_file(folder / n), "bytes": (folder / n).stat().st_size} for n in names}


# ------------------------------------------------------------------------------------------------------------- metadata
def _read_json(path: Path, what: str) -> dict:
    try:
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


# ------------------------------------------------------------------------------------------------------------ downloads
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


# ------------------------------------------------------------------------------------------------------------ save/load
def _family(model) -> str:
    for cls in type(model).__mro__:
        if cls.__name__ in _FAMILIES:
            return _FAMILIES[cls.__name__]
    return type(model).__name__.lower()


def model_card(model, metadata: Optional[dict] = None) -> dict:
    """The metadata.json of `model` (without the file hashes): `metadata` (user fields: card, name, training, metrics,
    machine, license, description, ...) completed from the model and its registry card; the contract fields always come
    from the model."""
    import keras

    from data_pipeline.test_time import TestTimeCrops
    from keras_iqa import __version__, registry

    user = dict(metadata or {})
    card_name = user.get("card") or getattr(model, "card_name", None) or _family(model)
    try:
        card = registry.get_card(card_name)
    except ValueError:
        card = None
    lo, hi = (float(v) for v in model.score_range)
    higher = bool(model.higher_better)
    versions = {"keras_iqa": __version__, "keras": keras.version()}
    try:
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    except ImportError:
        versions["tensorflow"] = None
    out = {
        "name": user.pop("name", None),
        "description": user.pop("description", None) or (card.description if card else ""),
        "card": card_name,
        "family": _family(model),
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "paper": user.pop("paper", None) or (card.paper if card else ""),
        "training": user.pop("training", None) or {"data": "not recorded", "protocol": "not recorded"},
        "metrics": user.pop("metrics", None) or {},
        "machine": user.pop("machine", None),
        "license": user.pop("license", None),
    }
    out.update(user)
    out.update({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "score_range": [lo, hi],
        "higher_better": higher,
        "direction": "higher = better" if higher else "lower = better",
        "test_time": TestTimeCrops.from_model(model).to_dict(),
        "versions": versions,
        "parameter_count": int(model.count_params()),
        "date_saved": _dt.datetime.now().isoformat(timespec="seconds"),
    })
    return out


def _strip(config, keys=("compile_config", "build_config")):
    if isinstance(config, dict):
        for k in keys:
            config.pop(k, None)
        for v in config.values():
            _strip(v, keys)
    return config


def save_to_preset(model, preset_dir: os.PathLike, metadata: Optional[dict] = None) -> Path:
    """Writes `model` as a preset folder (config.json, model.weights.h5, metadata.json; see the module docstring).

    Args:
        model: a keras-iqa model (`IQAModel`: REQA, MetaIQA, HCL).
        preset_dir: the folder to write (created; files already there are replaced).
        metadata: model-card fields: card (registry card name; default: the model's `card_name`), name, description,
            training {data, protocol, ...}, metrics {srocc, plcc, ...}, machine, license, anything else JSON-ready.

    Returns:
        The folder.
    """
    import keras

    for attr in ("score_range", "higher_better", "crop_size", "test_crops", "crop_policy"):
        if not hasattr(model, attr):
            raise PresetError(f"save_to_preset: {type(model).__name__} is not a keras-iqa model (no {attr}); presets hold "
                              "REQA, MetaIQA or HCL models")
    folder = Path(preset_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    meta = model_card(model, metadata)
    if not meta.get("name"):
        meta["name"] = folder.resolve().name
    config = _strip(keras.saving.serialize_keras_object(model))
    _write_atomic(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    tmp = folder / ("tmp." + WEIGHTS_FILE)
    model.save_weights(str(tmp))
    os.replace(tmp, folder / WEIGHTS_FILE)
    meta["files"] = _file_records(folder)
    _write_atomic(folder / METADATA_FILE, json.dumps(meta, indent=2, default=_json_default) + "\n")
    return folder


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def from_preset(handle, load_weights: bool = True, cache: Optional[os.PathLike] = None, sha256=None,
                force_download: bool = False, **overrides):
    """Loads a preset as a keras-iqa model (`keras.Model`), like keras-hub's `from_preset`.

    Args:
        handle: local folder, registered preset name, kaggle://, hf:// or http(s):// handle (see the module docstring).
        load_weights: False builds the architecture with random weights.
        cache: cache root (default `cache_dir()`).
        sha256: pins an unregistered handle's files (metadata.json's hash, or a file -> hash dict).
        force_download: download again even when cached.
        **overrides: config fields replaced before the model is built, e.g. `test_crops=10`, `crop_policy="grid"`
            (architecture fields must match the weights).

    Returns:
        The model, built, weights loaded; `model.card_name` is the card it came from and `model.preset_metadata` its
        metadata.json.

    Raises:
        PresetHashError, PresetUnavailableError, PresetError: see `fetch_preset`.
    """
    import keras
    import numpy as np

    from keras_iqa import registry

    folder = fetch_preset(handle, cache=cache, sha256=sha256, force_download=force_download)
    meta = _read_json(folder / METADATA_FILE, METADATA_FILE)
    config = _read_json(folder / CONFIG_FILE, CONFIG_FILE)
    if overrides:
        inner = config.get("config")
        if not isinstance(inner, dict):
            raise PresetError(f"{folder / CONFIG_FILE}: no 'config' object to apply {sorted(overrides)} to")
        inner.update(overrides)
    registry.list_models()  # imports the families: registers their serializable classes
    try:
        model = keras.saving.deserialize_keras_object(config)
    except (TypeError, ValueError) as e:
        raise PresetError(f"{folder / CONFIG_FILE}: cannot build the model ({type(e).__name__}: {e})") from e
    c = int(model.crop_size)
    model(np.zeros((1, c, c, 3), "float32"), training=False)  # builds every variable, as the registry builders do
    if load_weights:
        try:
            model.load_weights(str(folder / WEIGHTS_FILE))
        except Exception as e:
            raise PresetError(f"{folder / WEIGHTS_FILE}: the weights do not fit the model of {CONFIG_FILE} "
                              f"({type(e).__name__}: {e})") from e
    model.card_name = meta.get("card")
    object.__setattr__(model, "preset_metadata", meta)  # a plain attribute: not tracked by Keras
    return model


# ------------------------------------------------------------------------------------------------------------- listing
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
        "metadata": {
            "card": meta.get("card"), "description": meta.get("description"),
            "dataset": training.get("data"), "protocol": training.get("protocol"),
            "srocc": metrics.get("srocc"), "plcc": metrics.get("plcc"), "machine": meta.get("machine"),
            "license": meta.get("license"), "command": command or training.get("command") or "",
        },
    }


def metadata_from_run(run_dir: os.PathLike) -> dict:
    """Model-card fields from a training run directory: card (config.json / results.json "model"), training data,
    split and protocol, test metrics (results.json "test") and the machine and versions (run_info.json)."""
    from data_pipeline import layout

    run = Path(run_dir)
    cfg = _maybe_json(run / layout.CONFIG_FILE)
    res = _maybe_json(run / layout.RESULTS_FILE)
    info = _maybe_json(run / layout.RUN_INFO_FILE)
    card = _run_card(res.get("model"), cfg.get("model"))
    data = res.get("data") or cfg.get("data") or info.get("data") or res.get("dataset")
    training = {k: v for k, v in {
        "data": data, "split": res.get("split") or cfg.get("split"), "protocol": res.get("protocol") or cfg.get("protocol"),
        "run": str(run), "command": _command(info.get("argv")),
        "seed": info.get("seed"), "started": info.get("started"), "precision": res.get("precision"),
    }.items() if v is not None}
    test = res.get("test") if isinstance(res.get("test"), dict) else {}
    metrics = {k: test[k] for k in ("n", "srocc", "plcc", "krocc", "rmse") if k in test}
    if metrics:
        metrics["on"] = "the run's test split (results.json 'test')"
    versions = info.get("versions") or {}
    machine = {k: v for k, v in {"platform": versions.get("platform"), "python": versions.get("python"),
                                 "tensorflow": versions.get("tensorflow"), "keras": versions.get("keras"),
                                 "cpu": res.get("cpu")}.items() if v}
    out = {"training": training or {"data": "not recorded", "protocol": "not recorded"}, "metrics": metrics,
           "machine": machine or None}
    if card:
        out["card"] = card
    return out


def _run_card(*candidates) -> Optional[str]:
    """The card name of a run: a card name recorded as "model" (REQA, MetaIQA runs), or the card whose config equals
    the run's "model" section (HCL runs record the model config itself)."""
    from keras_iqa.registry import CARD_INDEX

    for c in candidates:
        if isinstance(c, str) and c in CARD_INDEX:
            return c
    for c in candidates:
        if isinstance(c, dict):
            import dataclasses

            from keras_iqa import registry

            for name in registry.list_models():
                card = registry.get_card(name)
                try:
                    defaults = json.loads(json.dumps(dataclasses.asdict(card.config()), default=list))
                except TypeError:
                    continue
                if {k: c.get(k) for k in defaults if k != "backbone_weights"} == \
                        {k: v for k, v in defaults.items() if k != "backbone_weights"}:
                    return name
    return None


def _command(argv) -> Optional[str]:
    """The command line of a run (run_info.json "argv"), its program as its file name (`keras-iqa train ...`)."""
    if not isinstance(argv, list) or not argv:
        return None
    return " ".join([Path(str(argv[0])).name, *(str(a) for a in argv[1:])])


def _maybe_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


__all__ = ["PresetError", "PresetHashError", "PresetUnavailableError", "cache_dir", "cached_path", "fetch_preset",
           "from_preset", "is_preset_handle", "list_presets", "load_metadata", "metadata_from_run", "model_card",
           "register_preset", "registered_presets", "registry_entry", "save_to_preset", "sha256_file",
           "unregister_preset", "validate_entry"]
