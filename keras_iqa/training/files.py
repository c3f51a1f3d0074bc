"""Files of a run written so that a kill never leaves a part: atomic writes (local and object stores), JSON, checks.

`atomic_write` writes a temporary name then renames (local paths) or uploads a finished local file (`gs://`, `s3://`, ...:
an object store publishes an object only once its upload completes); `save_json` writes JSON that way. The small helpers
(`_is_remote`, `_join`, `_sha256`, `_exists`, `_size`, `_h5_problem`) read both kinds of path for `BackupStore` and
`RunDir.restore`.

A full disk ends in one `DiskFullError` naming the file and the free space, the old file left as it was. HDF5 must never
meet it: an HDF5 write that fails with ENOSPC leaves the library in a state that crashes the process at exit (a
segmentation fault), so weights are serialised in memory (`weights_writer`) and written with Python's own file I/O, after
a check that the disk has room for them (docs/security.md, Faults end cleanly).
"""

from __future__ import annotations

import errno
import hashlib
import io
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


#: Room kept free beyond the bytes of a file about to be written (file system metadata, the HDF5 index, logs).
SPACE_MARGIN = 1 << 20

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError, RuntimeError):
    """No room left on the disk of `path` (ENOSPC / EDQUOT, or too little free space for a file of known size). One line:
    the file, the free space, and that re-running the same command once there is room resumes. A `RuntimeError` too, so
    the CLI reports it without a traceback."""

    def __init__(self, path, need: Optional[int] = None, note: str = ""):
        self.note = note
        self.path, self.need, self.free = str(path), need, free_bytes(path)
        wanted = f", {_human(need)} needed" if need else ""
        free = f"{_human(self.free)} free" if self.free is not None else "free space unknown"
        text = (f"disk full: cannot write {self.path} ({free}{wanted}); {note or 'the files written before are intact'}: "
                "free some space, then re-run the same command to resume")
        super().__init__(errno.ENOSPC, text)

    def __str__(self) -> str:
        return self.strerror


def free_bytes(path) -> Optional[int]:
    """Bytes free for this user on the file system holding `path` (its nearest existing parent); None for object-store
    paths or when it cannot be read."""
    if _is_remote(path):
        return None
    p = Path(os.path.abspath(str(path)))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def check_space(path, need: int) -> None:
    """Raises `DiskFullError` before writing `need` bytes to `path` when its disk has less than that plus `SPACE_MARGIN`
    free (local paths; object stores are not checked)."""
    free = free_bytes(path)
    if free is not None and free < int(need) + SPACE_MARGIN:
        raise DiskFullError(path, need=int(need) + SPACE_MARGIN)


def is_disk_full(e: BaseException) -> bool:
    """True for the OSError of a full disk or quota (h5py's OSError carries the same errno)."""
    return isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in _NO_SPACE)


class _MemoryWeightsFile(io.BytesIO):
    """A `.weights.h5` target in memory: `model.save_weights` takes it (Keras's HDF5 store writes to an `io.BytesIO`;
    its name check reads `str()`)."""

    def __str__(self) -> str:
        return "memory.weights.h5"


def weights_bytes(model) -> bytes:
    """`model.save_weights` (weights and every built optimizer's state) as the bytes of a `.weights.h5` file."""
    buf = _MemoryWeightsFile()
    model.save_weights(buf)
    return buf.getvalue()


def weights_writer(model):
    """`write(path)` for `atomic_write`: the model's weights serialised in memory, the disk checked for room, then written
    with Python's file I/O (a full disk raises `DiskFullError`; HDF5 never writes to the disk)."""
    def write(path):
        data = weights_bytes(model)
        check_space(path, len(data))
        write_bytes(path, data)

    return write


def write_bytes(path, data: bytes) -> None:
    """Writes `data` to `path` with Python's file I/O (the one place weights reach the disk)."""
    with open(path, "wb") as f:
        f.write(data)


def save_json(obj: Any, path: os.PathLike) -> None:
    """Writes JSON atomically (temporary name, then rename); a full disk raises `DiskFullError`, the old file kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if not is_disk_full(e):
            raise
        _remove_quietly(tmp)
        raise (e if isinstance(e, DiskFullError) else DiskFullError(path)) from None


def _remove_quietly(path) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


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
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:  # a full disk: the partial file goes (its space with it), the old file stays
        if not is_disk_full(e):
            raise
        _remove_quietly(tmp)
        raise (DiskFullError(path, need=e.need) if isinstance(e, DiskFullError) else DiskFullError(path)) from None


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
