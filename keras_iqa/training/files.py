"""Files of a run written so that a kill never leaves a part: atomic writes (local and object stores), JSON, checks.

`atomic_write` writes a temporary name then renames (local paths) or uploads a finished local file (`gs://`, `s3://`, ...:
an object store publishes an object only once its upload completes); `save_json` writes JSON that way. The small helpers
(`_is_remote`, `_join`, `_sha256`, `_exists`, `_size`, `_h5_problem`) read both kinds of path for `BackupStore` and
`RunDir.restore`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

log = logging.getLogger("keras_iqa")


def save_json(obj: Any, path: os.PathLike) -> None:
    """Writes JSON atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if is_dataclass(o):
        from keras_iqa.config import to_dict

        return to_dict(o)
    return str(o)



def _is_remote(path) -> bool:
    return "://" in str(path)


def _join(directory, name) -> str:
    return f"{str(directory).rstrip('/')}/{name}" if _is_remote(directory) else os.path.join(str(directory), name)


def _sha256(path) -> str:
    h = hashlib.sha256()
    opener = open if not _is_remote(path) else _gfile_open
    with opener(str(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _gfile_open(path, mode):
    import tensorflow as tf

    return tf.io.gfile.GFile(path, mode)


def _exists(path) -> bool:
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def _size(path) -> int:
    if _is_remote(path):
        import tensorflow as tf

        return int(tf.io.gfile.stat(path).length)
    return os.path.getsize(path)


def _fsync(path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write, suffix: str = "") -> None:
    """Writes the file at `path` so that a reader sees the old file or the complete new one, never a part.

    `write(tmp_path)` writes the content to a temporary path (ending in `suffix`, e.g. ".weights.h5", which Keras checks).
    Local paths: temporary name in the same folder, fsync, `os.replace` (atomic on POSIX). Object stores (`gs://`, `s3://`,
    ...; any path with "://"): written to a local temporary file, then uploaded to `path`: an object store publishes an
    object only once its upload completes (write-then-commit), whereas their "rename" is a copy and delete, not atomic.
    """
    path = str(path)
    if _is_remote(path):
        import tensorflow as tf

        local = tempfile.mkdtemp(prefix="keras-iqa-upload-")
        try:
            tmp = os.path.join(local, "upload" + suffix)
            write(tmp)
            tf.io.gfile.copy(tmp, path, overwrite=True)
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return
    folder, name = os.path.split(path)
    stem = name[: -len(suffix)] if suffix and name.endswith(suffix) else name
    tmp = os.path.join(folder, f"{stem}.partial{suffix}")
    write(tmp)
    _fsync(tmp)
    os.replace(tmp, path)


def _write_text(text: str):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write


def _h5_problem(path) -> Optional[str]:
    """None if `path` is a readable HDF5 file (every dataset read through), else what is wrong with it."""
    import h5py

    try:
        with h5py.File(str(path), "r") as f:
            def touch(name, obj):
                if isinstance(obj, h5py.Dataset):
                    obj[()]

            f.visititems(touch)
    except Exception as e:  # truncated / overwritten files raise OSError, KeyError, ...
        return f"unreadable ({_first_line(e)})"
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return str(n)
