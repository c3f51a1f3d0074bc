"""One file over HTTP(S), bounded: connect and idle-read timeouts, a size cap checked while the bytes stream to disk,
every redirect checked against the handle rules, the SHA-256 computed on the way (docs/security.md, "Downloads and the
preset cache"). Plain Python: urllib, no Keras."""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import http.client
import ipaddress
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

from keras_iqa.presets.format import _LOOPBACK_HOSTS, CACHE_ENV, PresetCacheError, PresetError, PresetHashError

CONNECT_TIMEOUT_ENV = "KERAS_IQA_CONNECT_TIMEOUT"
READ_TIMEOUT_ENV = "KERAS_IQA_READ_TIMEOUT"
MAX_BYTES_ENV = "KERAS_IQA_MAX_DOWNLOAD_BYTES"
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds to open the connection (TLS handshake included)
DEFAULT_READ_TIMEOUT = 30.0  # seconds without a single byte from the server
DEFAULT_MAX_BYTES = 4 << 30  # any file whose size nobody told us
METADATA_MAX_BYTES = 1 << 20  # metadata.json is read into memory and parsed: a few KB in practice
MAX_REDIRECTS = 5
_CHUNK = 1 << 16


class Unreachable(Exception):
    """A file could not be fetched now (offline, refused, timed out); fetch_preset adds the cache instructions."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """How long to wait and how much to accept: `connect` and `read` (idle) seconds, `max_bytes` per file."""

    connect: float = DEFAULT_CONNECT_TIMEOUT
    read: float = DEFAULT_READ_TIMEOUT
    max_bytes: int = DEFAULT_MAX_BYTES


def _setting(value, env: str, default, kind, argument: str):
    where = argument if value is not None else env
    raw = value if value is not None else (os.environ.get(env) or default)
    try:
        out = kind(raw)
    except (TypeError, ValueError):
        out = 0
    if not out > 0:
        raise PresetError(f"{where}={raw!r}: give a number > 0 ({'seconds' if kind is float else 'bytes'})")
    return out


def limits(timeout=None, max_bytes=None) -> Limits:
    """The limits of one download: `timeout` (seconds for both, or (connect, read)) else $KERAS_IQA_CONNECT_TIMEOUT /
    $KERAS_IQA_READ_TIMEOUT else 10 s / 30 s; `max_bytes` else $KERAS_IQA_MAX_DOWNLOAD_BYTES else 4 GiB."""
    connect = read = timeout
    if isinstance(timeout, (tuple, list)):
        connect, read = timeout
    return Limits(_setting(connect, CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT, float, "timeout"),
                  _setting(read, READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT, float, "timeout"),
                  _setting(max_bytes, MAX_BYTES_ENV, DEFAULT_MAX_BYTES, int, "max_bytes"))


def check_url(url: str, via: str = "") -> None:
    """https://, or http:// to 127.0.0.1 / ::1 / localhost only; `via`: the URL that redirected here."""
    parts = urllib.parse.urlsplit(url)
    where = f"{via} redirected to {url}" if via else url
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        raise PresetError(f"{where}: not an https:// URL (https://HOST/PATH/TO/PRESET_DIR); refused, nothing was "
                          "downloaded")
    if scheme == "http" and not _is_loopback(parts.hostname or ""):
        raise PresetError(f"{where}: use https:// (plain http:// is accepted only for 127.0.0.1 / localhost); "
                          "refused, nothing was downloaded")
    if via and urllib.parse.urlsplit(via).scheme.lower() == "https" and scheme == "http":
        raise PresetError(f"{where}: an https:// server may not redirect to plain http://; refused, nothing was "
                          "downloaded")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() in _LOOPBACK_HOSTS


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        try:
            check_url(newurl, via=req.full_url)
        except PresetError:
            fp.close()
            raise
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _idle_timeout(base):
    """A connection class that waits `connect` seconds to connect, then `read_timeout` seconds per read."""

    class Connection(base):
        def __init__(self, *args, read_timeout: float, **kwargs):
            super().__init__(*args, **kwargs)
            self._read_timeout = read_timeout

        def connect(self):
            super().connect()
            self.sock.settimeout(self._read_timeout)

    return Connection


_HTTP, _HTTPS = _idle_timeout(http.client.HTTPConnection), _idle_timeout(http.client.HTTPSConnection)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout: float):
        super().__init__()
        self._read_timeout = read_timeout

    def http_open(self, req):
        return self.do_open(functools.partial(_HTTP, read_timeout=self._read_timeout), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout: float):
        super().__init__()
        self._read_timeout = read_timeout

    def https_open(self, req):
        return self.do_open(functools.partial(_HTTPS, read_timeout=self._read_timeout), req, context=self._context)


def cache_error(path: Path, err: OSError) -> PresetCacheError:
    """One line for a cache that cannot be written: the path, why, and the setting that moves it."""
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        why = f"{blocker} is a file, not a folder"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "it is read-only (permission denied)"
    elif err.errno == errno.ENOSPC:
        why = "no space left on the device"
    else:
        why = err.strerror or str(err)
    return PresetCacheError(f"the preset cache {path} cannot be written: {why}. Set {CACHE_ENV} to a writable folder "
                            "(Python: cache=DIR)")


def _count(n: int) -> str:
    return "1 byte" if n == 1 else f"{n:,} bytes"


def _size_word(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n:,} bytes"


def download(url: str, dst: Path, lim: Limits, cap: int, cap_reason: str, expected: Optional[str] = None) -> str:
    """Streams `url` to `dst` (at most `cap` bytes, `cap_reason` saying where the cap comes from); returns its SHA-256.

    Raises PresetError (scheme/host, redirect, too large), PresetHashError (hash, cut short), PresetCacheError (dst
    cannot be written), Unreachable (offline, HTTP error, timeout)."""
    check_url(url)
    opener = urllib.request.build_opener(_CheckedRedirects, _HTTPHandler(lim.read), _HTTPSHandler(lim.read))
    request = urllib.request.Request(url, headers={"User-Agent": "keras-iqa", "Accept-Encoding": "identity"})
    name = dst.name
    try:
        response = opener.open(request, timeout=lim.connect)
    except PresetError:
        raise
    except urllib.error.HTTPError as e:
        raise Unreachable(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise Unreachable(f"{url}: no connection within {lim.connect:g} s (connect timeout; set "
                              f"{CONNECT_TIMEOUT_ENV}, or timeout= in Python)") from None
        raise Unreachable(f"{url}: {e.reason}") from None
    except TimeoutError:
        raise Unreachable(f"{url}: the server sent no answer for {lim.read:g} s (read timeout; set "
                          f"{READ_TIMEOUT_ENV}, or timeout= in Python)") from None
    except (OSError, http.client.HTTPException) as e:
        raise Unreachable(f"{url}: {type(e).__name__}: {e}") from None
    too_large = (f"{url}: {name} is larger than {_size_word(cap)} ({cap_reason}); refused, nothing was cached")
    with response:
        announced = response.headers.get("Content-Length")
        announced = int(announced) if announced and announced.isdigit() else None
        if announced is not None and announced > cap:
            raise PresetError(f"{too_large} (the server announced {_size_word(announced)})")
        digest, received = hashlib.sha256(), 0
        try:
            out = open(dst, "wb")
        except OSError as e:
            raise cache_error(dst.parent, e) from None
        with out:
            while True:
                try:
                    block = response.read1(_CHUNK)  # what has arrived: counts the bytes a stall follows
                except TimeoutError:
                    raise Unreachable(f"{url}: the server stopped sending {name} for {lim.read:g} s after "
                                      f"{_count(received)} (read timeout; set {READ_TIMEOUT_ENV}, or timeout= in "
                                      "Python)") from None
                except (OSError, http.client.HTTPException) as e:
                    raise Unreachable(f"{url}: {name} broke off after {_count(received)} ({type(e).__name__}: "
                                      f"{e})") from None
                if not block:
                    break
                received += len(block)
                if received > cap:
                    raise PresetError(too_large)
                digest.update(block)
                try:
                    out.write(block)
                except OSError as e:
                    raise cache_error(dst.parent, e) from None
    actual = digest.hexdigest()
    if announced is not None and received < announced:
        raise PresetHashError(f"{url}: {name} was truncated in transit ({received:,} of {announced:,} bytes); "
                              f"expected SHA-256 {expected or '(from metadata.json)'}, got an incomplete file "
                              "(removed). Nothing was cached; download it again.", name, expected or "",
                              "incomplete download")
    if expected and actual != expected.lower():
        raise PresetHashError(f"{url}: {name} failed its SHA-256 check (corrupted, truncated or replaced): expected "
                              f"{expected.lower()}, got {actual} ({received:,} bytes). Nothing was cached.", name,
                              expected.lower(), actual)
    return actual


def size_cap(name: str, known: Optional[int], lim: Limits, metadata_name: str) -> tuple:
    """(cap, reason) for one file: its known size, else 1 MiB for metadata.json, else the global limit."""
    if known is not None:
        return int(known), "the size its preset lists"
    if name == metadata_name and METADATA_MAX_BYTES < lim.max_bytes:
        return METADATA_MAX_BYTES, f"the limit for {metadata_name}"
    return lim.max_bytes, f"the download limit; set {MAX_BYTES_ENV}, or max_bytes= in Python, to change it"
