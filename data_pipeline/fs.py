"""One file layer for the data pipeline: local paths, and every URI Apache Beam's `FileSystems` knows (gs://, s3://, hdfs://...).

The adapters, the image reads, the record writer and the manifest all go through here, so `prepare` and `synthesize` run
where Beam runs (docs/scaling.md). Local paths use the OS directly (fast, no Beam needed). A URI uses Beam's
`FileSystems` with the pipeline's options, so a driver and its workers reach the same bucket with the same settings
(`--s3_endpoint_url`, credentials, project...): the driver calls `configure(pipeline_args)` with the arguments it gives the
pipeline, and Beam hands the same options to every worker (`FileSystems.set_options` in its worker harness). Without Beam
installed, URIs fall back to `tf.io.gfile` (gs://, hdfs://).

Object stores have no folders and no atomic rename: a "folder" here is a key prefix, `listdir` lists it, and
`replace_atomically` is a single object put there (atomic on GCS and S3) and a temporary file + `os.replace` on a local disk.

Example:
    >>> import tempfile
    >>> from data_pipeline import fs
    >>> d = tempfile.mkdtemp()
    >>> fs.write_bytes(fs.join(d, "a", "x.txt"), b"hi")
    >>> fs.listdir(d), fs.read_bytes(fs.join(d, "a", "x.txt")), fs.is_uri("s3://bucket/a"), fs.join("s3://bucket/", "a", "b")
    (['a'], b'hi', True, 's3://bucket/a/b')
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import posixpath
import re
import shutil
import socket
import threading
import time
import uuid
from typing import BinaryIO, Iterable, Optional, Sequence

_URI = re.compile(r"^([a-zA-Z][-a-zA-Z0-9+.]*)://")
_CONFIGURED: Optional[tuple] = None


def is_uri(path) -> bool:
    """True for `scheme://...` (gs, s3, hdfs, ...); False for a local path."""
    return bool(_URI.match(str(path)))


def scheme(path) -> Optional[str]:
    m = _URI.match(str(path))
    return m.group(1).lower() if m else None


def _beam():
    try:
        from apache_beam.io.filesystems import FileSystems
    except ImportError:  # the [beam] extra is not installed: URIs go through tf.io.gfile
        return None
    return FileSystems


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def configure(pipeline_args: Sequence[str] = ()) -> None:
    """Gives Beam's FileSystems the pipeline's options (S3 endpoint and keys, GCP project, ...) in this process.

    Call it on the driver with the same arguments as the pipeline; workers get them from Beam itself. No arguments: no
    change (options set earlier, by this function or by the caller, stay).
    """
    global _CONFIGURED
    args = tuple(pipeline_args or ())
    if not args:  # before Beam's import (seconds): a local run that starts no pipeline never needs it
        return
    fsys = _beam()
    if fsys is None:
        return
    if _CONFIGURED is not None and _CONFIGURED[0] == args and fsys._pipeline_options is _CONFIGURED[1]:
        return  # set already, and no pipeline has replaced them since
    from apache_beam.options.pipeline_options import PipelineOptions

    opts = PipelineOptions(list(args))
    fsys.set_options(opts)
    _CONFIGURED = (args, opts)


# ------------------------------------------------------------------------------------------------------------------- paths
def abspath(path) -> str:
    """A local path made absolute (`~` expanded); a URI unchanged but for trailing slashes."""
    p = os.fspath(path)
    return p.rstrip("/") if is_uri(p) else os.path.abspath(os.path.expanduser(p))


def isabs(path) -> bool:
    return is_uri(path) or os.path.isabs(os.fspath(path))


def join(base, *parts) -> str:
    base = os.fspath(base)
    if not is_uri(base):
        return os.path.join(base, *parts)
    out = base.rstrip("/")
    for p in parts:
        p = str(p).replace("\\", "/").strip("/")
        if p:
            out = f"{out}/{p}"
    return out


def dirname(path) -> str:
    p = os.fspath(path)
    return p.rstrip("/").rsplit("/", 1)[0] if is_uri(p) else os.path.dirname(p)


def basename(path) -> str:
    p = os.fspath(path)
    return p.rstrip("/").rsplit("/", 1)[-1] if is_uri(p) else os.path.basename(p)


def resolved(path) -> str:
    """Where `path` really is: a local path with `..` and every symlink resolved; a URI with its `..` segments removed
    (object stores have no links)."""
    p = os.fspath(path)
    if not is_uri(p):
        return os.path.realpath(os.path.expanduser(p))
    head = _URI.match(p).group(0)
    return head + posixpath.normpath("/" + p[len(head):]).lstrip("/")


def within(path, root) -> bool:
    """True when `path` stays inside the folder `root` once both are `resolved` (`..`, absolute paths and symlinks that
    lead out are all outside)."""
    if is_uri(path) != is_uri(root) or scheme(path) != scheme(root):
        return False
    p, r = resolved(path), resolved(root).rstrip("/")
    return p == r or p.startswith(r + ("/" if is_uri(p) else os.sep))


def relpath(path, start) -> str:
    path, start = os.fspath(path), os.fspath(start)
    if is_uri(path):
        prefix = start.rstrip("/") + "/"
        return path[len(prefix):] if path.startswith(prefix) else path
    return os.path.relpath(path, start)


_LOCAL = threading.local()


def _s3(path):
    """Beam's `S3IO` for an s3:// path, one per thread and options; None for other paths or without Beam's S3 support.

    Beam's S3FileSystem builds a new boto3 client for every call (0.1-0.5 s each: per image, that would dominate a job);
    this keeps one per thread (the client holds one download stream, so it is not shared between threads)."""
    if scheme(path) != "s3" or _beam() is None:
        return None
    try:
        from apache_beam.io.aws import s3io
        from apache_beam.options.value_provider import RuntimeValueProvider
    except ImportError:
        return None
    if not getattr(s3io, "BOTO3_INSTALLED", False):
        return None
    opts = _beam()._pipeline_options or RuntimeValueProvider.runtime_options
    cache = _LOCAL.__dict__.setdefault("s3", {})
    if id(opts) not in cache:
        from apache_beam.options.pipeline_options import PipelineOptions

        cache.clear()  # options changed: the clients of the old ones are not needed any more
        cache[id(opts)] = (opts, s3io.S3IO(options=opts if opts is not None else PipelineOptions([])))
    return cache[id(opts)][1]


class _S3Writer(io.RawIOBase):
    """Writes an S3 object: one PUT when it is small (sidecars, manifests, empty shards: Beam's multipart uploader cannot
    write an empty object), Beam's multipart upload past `threshold` bytes. The object appears when the file is closed."""

    def __init__(self, s3, path: str, threshold: int = 8 << 20):
        super().__init__()
        self.s3, self.path, self.threshold, self.buf, self.stream = s3, path, threshold, io.BytesIO(), None

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if self.stream is None:
            self.buf.write(b)
            if self.buf.tell() >= self.threshold:
                self.stream = self.s3.open(self.path, "wb")
                self.stream.write(self.buf.getvalue())
                self.buf = None
        else:
            self.stream.write(b)
        return len(b)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.stream is not None:
                self.stream.close()
            else:
                from apache_beam.io.aws.s3io import parse_s3_path

                bucket, key = parse_s3_path(self.path)
                self.s3.client.client.put_object(Bucket=bucket, Key=key, Body=self.buf.getvalue())
        finally:
            super().close()


def _not_found(e: Exception) -> bool:
    return isinstance(e, FileNotFoundError) or getattr(e, "code", None) == 404


# --------------------------------------------------------------------------------------------------------------- queries
def exists(path) -> bool:
    """A file, or a folder (a non-empty key prefix on object stores)."""
    p = os.fspath(path)
    if not is_uri(p):
        return os.path.exists(p)
    fsys, s3 = _beam(), _s3(p)
    if fsys is None:
        return _gfile().exists(p)
    return (s3.exists(p) if s3 is not None else fsys.exists(p)) or isdir(p)


def isdir(path) -> bool:
    p = os.fspath(path)
    if not is_uri(p):
        return os.path.isdir(p)
    fsys = _beam()
    if fsys is None:
        return _gfile().isdir(p)
    return bool(_match(p.rstrip("/") + "/**", limit=1))


def _match(pattern: str, limit: Optional[int] = None) -> list:
    """FileMetadata of the files matching `pattern` (Beam glob: `*` within a folder, `**` across folders)."""
    from apache_beam.io.filesystem import BeamIOError, FileMetadata

    s3 = _s3(pattern)
    if s3 is not None and pattern.endswith("/**") and not re.search(r"[*?\[]", pattern[:-3]):  # a plain prefix listing
        out = []
        for path, size in s3.list_files(pattern[:-2]):
            if limit is not None and len(out) >= limit:
                break
            out.append(FileMetadata(path, size))
        return out
    try:
        return _beam().match([pattern], limits=[limit])[0].metadata_list
    except BeamIOError:
        return []


def scan(folder) -> dict:
    """`{name: size in bytes}` of the files directly in `folder`, and `{name: None}` for its subfolders; `{}` if missing.

    One listing (paginated on object stores: all keys under the prefix), so it is how callers check many files at once.
    """
    p = os.fspath(folder)
    if not is_uri(p):
        try:
            with os.scandir(p) as it:
                return {e.name: (None if e.is_dir() else e.stat().st_size) for e in it}
        except (FileNotFoundError, NotADirectoryError):
            return {}
    fsys = _beam()
    if fsys is None:
        gf = _gfile()
        if not gf.isdir(p):
            return {}
        return {n.rstrip("/"): (None if n.endswith("/") or gf.isdir(join(p, n)) else gf.stat(join(p, n)).length)
                for n in gf.listdir(p)}
    prefix = p.rstrip("/") + "/"
    out: dict = {}
    for m in _match(prefix + "**"):
        rest = m.path[len(prefix):] if m.path.startswith(prefix) else None
        if not rest:
            continue
        head, sep, _ = rest.partition("/")
        if sep:
            out.setdefault(head, None)
        else:
            out[head] = m.size_in_bytes
    return out


def listdir(folder) -> list[str]:
    """Sorted names of the files and subfolders directly in `folder`."""
    return sorted(scan(folder))


def walk_files(folder) -> list[str]:
    """Sorted paths of every file under `folder`, recursively."""
    p = os.fspath(folder)
    if not is_uri(p):
        return sorted(os.path.join(d, f) for d, _, files in os.walk(p) for f in files)
    if _beam() is None:
        gf = _gfile()
        return sorted(join(d, f) for d, _, files in gf.walk(p) for f in files)
    return sorted(m.path for m in _match(p.rstrip("/") + "/**") if not m.path.endswith("/"))


def size(path) -> int:
    p = os.fspath(path)
    if not is_uri(p):
        return os.path.getsize(p)
    fsys, s3 = _beam(), _s3(p)
    if s3 is not None:
        return s3.size(p)
    return _gfile().stat(p).length if fsys is None else fsys.metadata(p).size_in_bytes


# ------------------------------------------------------------------------------------------------------------ read/write
def open_read(path) -> BinaryIO:
    """A binary file object; FileNotFoundError when there is nothing at `path`."""
    p = os.fspath(path)
    if not is_uri(p):
        return open(p, "rb")
    fsys = _beam()
    if fsys is None:
        if not _gfile().exists(p):
            raise FileNotFoundError(f"{p}: not found")
        return _gfile().GFile(p, "rb")
    from apache_beam.io.filesystem import BeamIOError, CompressionTypes

    s3 = _s3(p)
    try:
        if s3 is not None:
            return s3.open(p, "rb", read_buffer_size=1 << 20)
        return fsys.open(p, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as e:  # BeamIOError, S3ClientError...
        if _not_found(e) or (isinstance(e, BeamIOError) and not exists(p)):
            raise FileNotFoundError(f"{p}: not found") from e
        raise


def open_write(path) -> BinaryIO:
    """A binary file object that creates or replaces `path` (parent folders made as needed). On object stores the object
    appears only when the file is closed."""
    p = os.fspath(path)
    if not is_uri(p):
        os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
        return open(p, "wb")
    fsys = _beam()
    if fsys is None:
        return _gfile().GFile(p, "wb")
    from apache_beam.io.filesystem import CompressionTypes

    s3 = _s3(p)
    if s3 is not None:
        return _S3Writer(s3, p)
    return fsys.create(p, mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED)


def read_bytes(path) -> bytes:
    with open_read(path) as f:
        return f.read()


def read_text(path, errors: str = "strict") -> str:
    return read_bytes(path).decode("utf-8", errors=errors)


def write_bytes(path, data: bytes) -> None:
    with open_write(path) as f:
        f.write(data)


def replace_atomically(path, data) -> None:
    """Writes `data` (bytes or str) so that a reader sees the old content or the new, never a part.

    Local disk: a temporary file in the same folder, then `os.replace`. Object stores: one object put, which is atomic
    there (no rename: on S3 and GCS a rename is a copy and a delete)."""
    p = os.fspath(path)
    blob = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if is_uri(p):
        write_bytes(p, blob)
        return
    os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
    tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, p)


def makedirs(path) -> None:
    """Local folders only: object stores have none (an object's key makes its prefix), hdfs makes them on create."""
    p = os.fspath(path)
    if not is_uri(p):
        os.makedirs(p, exist_ok=True)


def delete(paths: Iterable) -> None:
    """Deletes files (missing ones are ignored)."""
    paths = [os.fspath(p) for p in paths]
    local = [p for p in paths if not is_uri(p)]
    remote = [p for p in paths if is_uri(p)]
    for p in local:
        try:
            os.remove(p)
        except FileNotFoundError:
            pass
    if not remote:
        return
    fsys = _beam()
    if fsys is None:
        for p in remote:
            if _gfile().exists(p):
                _gfile().remove(p)
        return
    from apache_beam.io.filesystem import BeamIOError

    s3 = _s3(remote[0])
    if s3 is not None and all(scheme(p) == "s3" for p in remote):
        failed = {p: e for p, e in s3.delete_paths(remote).items() if e is not None and not _not_found(e)}
        if failed:
            raise BeamIOError("Delete operation failed", failed)
        return
    try:
        fsys.delete(remote)
    except BeamIOError as e:  # some were gone already
        left = [p for p in (e.exception_details or {}) if fsys.exists(p)]
        if left:
            raise


# ------------------------------------------------------------------------------------------------------------------ images
def read_image(path) -> bytes:
    """The bytes of an image file for the decode policy (`data_pipeline.images`), from any path or URI.

    Raises:
        ImageDecodeError: missing, unreadable, empty or too large file (the message names it; the size limit is checked
            before reading: `data_pipeline.images.check_file_size`), so the writer records a reject.
    """
    from data_pipeline.images import ImageDecodeError, check_file_size

    try:
        nbytes = size(path)
    except FileNotFoundError as e:
        raise ImageDecodeError(f"{path}: file not found") from e
    except Exception:  # a store that cannot tell the size: the read below reports the problem
        nbytes = 0
    check_file_size(path, nbytes)
    try:
        data = read_bytes(path)
    except FileNotFoundError as e:
        raise ImageDecodeError(f"{path}: file not found") from e
    except OSError as e:
        raise ImageDecodeError(f"{path}: cannot read file ({type(e).__name__}: {e})") from e
    if not data:
        raise ImageDecodeError(f"{path}: empty file (0 bytes)")
    return data


class named_errors:
    """Context manager: ImageDecodeErrors raised on bytes read from `path` name `path` instead of `<bytes>`."""

    def __init__(self, path):
        self.path = str(path)

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        from data_pipeline.images import ImageDecodeError

        if isinstance(exc, ImageDecodeError) and "<bytes>" in str(exc):
            raise ImageDecodeError(str(exc).replace("<bytes>", self.path, 1)) from exc
        return False


# --------------------------------------------------------------------------------------------------------------- disk full
class DiskFullError(OSError, RuntimeError):
    """A write failed for want of space: one line naming the path, the free space and the fix (`errno` ENOSPC / EDQUOT)."""


#: errno values of a full disk or an exhausted quota
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def free_space(path) -> str:
    """Free space of the local file system holding `path` ("1.2 MB"), or "unknown" for a URI or an unreadable one."""
    p = os.fspath(path)
    if is_uri(p):
        return "unknown"
    while p and not os.path.exists(p):
        p = os.path.dirname(p)
    try:
        n = float(shutil.disk_usage(p or ".").free)
    except OSError:
        return "unknown"
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return "unknown"


class disk_full:
    """Context manager: an OSError ENOSPC / EDQUOT raised in the block becomes a `DiskFullError` naming `path` and the
    free space left, and saying that re-running the same command resumes (complete shards are kept)."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if isinstance(exc, OSError) and not isinstance(exc, DiskFullError) and exc.errno in DISK_FULL_ERRNOS:
            err = DiskFullError(f"{self.path}: no space left on the device ({free_space(self.path)} free); free some space "
                                "and re-run the same command to resume (the complete shards are kept)")
            err.errno = exc.errno
            raise err from exc
        return False


# ----------------------------------------------------------------------------------------------------------------- locking
class LockedError(RuntimeError):
    """Another run holds the lock of the output (the message names it, its process and how to clear a dead one)."""


def _holder(info: dict) -> str:
    return (f"{info.get('command') or 'a run'} started {info.get('started', '?')} by pid {info.get('pid', '?')} on "
            f"{info.get('host', '?')}")


def _dead_here(info: dict) -> bool:
    """True when the lock was taken on this host by a process that no longer runs (the only stale lock judged safely)."""
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, another user's
        return False
    return False


class lock:
    """An exclusive lock file at `path`, local or on an object store, held for a `with` block.

    Taken by an atomic create that fails when the file exists: `O_CREAT | O_EXCL` on a local disk (NFS v3+ too), S3's
    conditional put (`If-None-Match: *`) on `s3://`. Other URIs (gs://, hdfs://...) get a check, a write and a read-back
    that narrows but does not close the race (docs/security.md). The file holds the holder's pid, host, start time and
    command. A lock left by a dead process on this host is removed with a warning (on S3 with a delete conditional on
    the object's ETag, so a fresh lock taken meanwhile stays); any other holder raises `LockedError`. Released on exit
    (only if it is still ours)."""

    def __init__(self, path, command: str = ""):
        self.path, self.command = os.fspath(path), command
        self.info = {"pid": os.getpid(), "host": socket.gethostname(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": command,
                     "token": uuid.uuid4().hex}
        self._etag = None

    # -------------------------------------------------------------------------------------------------------- acquire
    def __enter__(self):
        for attempt in range(3):
            held = self._create()
            if held is None:
                return self
            info, etag = held
            if info is None:  # released between our create and our read: try again
                continue
            if attempt == 0 and _dead_here(info):
                if self._break(info, etag):
                    logging.getLogger(__name__).warning(
                        "%s: removed a stale lock (%s; that process is no longer running)", self.path, _holder(info))
                continue
            break
        info = info or {}
        raise LockedError(
            f"{dirname(self.path)}: another run is writing here ({_holder(info)}); wait for it to finish, or, if it is no "
            f"longer running, delete {self.path} and re-run")

    def _body(self) -> bytes:
        return json.dumps(self.info).encode("utf-8")

    def _create(self):
        """None once the lock is ours; else (holder's info, its ETag or None)."""
        p = self.path
        if not is_uri(p):
            os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return self._read(), None
            try:
                with disk_full(p), os.fdopen(fd, "wb") as f:
                    f.write(self._body())
            except BaseException:  # no half-written lock left behind (a full disk, Ctrl-C)
                os.remove(p)
                raise
            return None
        s3 = _s3(p)
        if s3 is not None:
            from apache_beam.io.aws.s3io import parse_s3_path

            bucket, key = parse_s3_path(p)
            client = s3.client.client
            try:
                self._etag = client.put_object(Bucket=bucket, Key=key, Body=self._body(), IfNoneMatch="*")["ETag"]
                return None
            except client.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise
            try:
                got = client.get_object(Bucket=bucket, Key=key)
                return _parse(got["Body"].read()), got["ETag"]
            except client.exceptions.NoSuchKey:  # released meanwhile
                return None, None
        if exists(p):  # no conditional create here: check, write, read back
            return self._read(), None
        write_bytes(p, self._body())
        info = self._read()
        return None if info.get("token") == self.info["token"] else (info, None)

    def _read(self) -> dict:
        try:
            return _parse(read_bytes(self.path))
        except OSError:
            return {}

    def _break(self, info: dict, etag) -> bool:
        """Removes the stale lock `info` unless another process replaced it meanwhile; True when it is gone."""
        p = self.path
        if not is_uri(p):
            aside = f"{p}.stale-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(p, aside)  # atomic: whatever is there now is ours to inspect
            except FileNotFoundError:
                return True
            if _parse(open(aside, "rb").read()) == info:
                os.remove(aside)
                return True
            try:  # a fresh lock was taken between our read and the rename: put it back
                os.link(aside, p)
            except FileExistsError:
                pass
            os.remove(aside)
            return False
        s3 = _s3(p)
        if s3 is not None and etag:
            from apache_beam.io.aws.s3io import parse_s3_path

            bucket, key = parse_s3_path(p)
            client = s3.client.client
            try:
                client.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
            except client.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "NoSuchKey", "404"):
                    return False
                raise
            return True
        delete([p])
        return True

    # -------------------------------------------------------------------------------------------------------- release
    def __exit__(self, typ, exc, tb):
        p = self.path
        try:
            s3 = _s3(p) if is_uri(p) else None
            if s3 is not None and self._etag:
                from apache_beam.io.aws.s3io import parse_s3_path

                bucket, key = parse_s3_path(p)
                s3.client.client.delete_object(Bucket=bucket, Key=key, IfMatch=self._etag)
            elif self._read().get("token") == self.info["token"]:
                delete([p])
        except Exception as e:  # the run's own outcome matters more than a lock left behind (the next run clears it)
            logging.getLogger(__name__).warning("%s: could not remove the lock (%s)", p, e)
        return False


def _parse(blob: bytes) -> dict:
    try:
        out = json.loads(blob)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}
