"""Preset downloads from servers that misbehave (`keras_iqa.presets.download`, `fetch`): a server that stalls, one that
sends a huge file, a redirect to plain http on another host, handles whose slugs collide, a cache that cannot be
written, Ctrl-C mid-download. Each test serves small fake presets (the files are only hashed, never loaded: no
TensorFlow) from a server on 127.0.0.1 that the test starts and stops."""

import errno
import functools
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import types
from pathlib import Path

import pytest

from keras_iqa.presets import (METADATA_FILE, PRESET_FILES, WEIGHTS_FILE, PresetCacheError, PresetError,
                               PresetUnavailableError, cache_key, cached_path, fetch_preset)
from keras_iqa.presets import fetch as fetch_module

_BLOCK = b" " * (1 << 16)


def _fake_preset(folder: Path, seed: int, weights_size: int = 4000, list_sizes: bool = True) -> dict:
    """Writes config.json, model.weights.h5 (random bytes) and a metadata.json listing their SHA-256 (and sizes)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    (folder / WEIGHTS_FILE).write_bytes(os.urandom(weights_size))
    files = {}
    for name in ("config.json", WEIGHTS_FILE):
        data = (folder / name).read_bytes()
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), **({"bytes": len(data)} if list_sizes else {})}
    (folder / METADATA_FILE).write_text(json.dumps({"format": "keras-iqa-preset", "name": f"fake{seed}",
                                                    "files": files}))
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in PRESET_FILES}


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files under the served folder, plus misbehaving paths:

    /stall-body/...   headers announcing 1000 bytes, 1 byte, then nothing until the test ends
    /stall-head/...   nothing at all until the test ends
    /huge/metadata.json  200 MB without Content-Length (close-delimited), counting the bytes it got out
    /huge-announced/metadata.json  Content-Length: 200 MB, counting the bytes it got out
    /to-plain/...     302 to http://example.invalid/... ; /to-local/... 302 to /ok/... on this server
    """

    state: dict = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/stall-"):
            self.send_response(200)
            if self.path.startswith("/stall-body/"):
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"{")
                self.wfile.flush()
            self.state["release"].wait(60)
            return
        if self.path.startswith("/huge"):
            self.send_response(200)
            if self.path.startswith("/huge-announced/"):
                self.send_header("Content-Length", str(200 << 20))
            self.end_headers()
            sent = 0
            try:
                while sent < 200 << 20:
                    self.wfile.write(_BLOCK)
                    sent += len(_BLOCK)
            except OSError:  # the client hung up
                pass
            finally:
                self.state["huge_sent"] = sent
                self.state["huge_done"].set()
            return
        if self.path.startswith(("/to-plain/", "/to-local/")):
            self.send_response(302)
            where = "http://example.invalid/p/" if self.path.startswith("/to-plain/") else "/ok/"
            self.send_header("Location", where + name)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """A ThreadingHTTPServer on 127.0.0.1:0 serving tmp_path/served; stopped (and stalled handlers released) at the end."""
    root = tmp_path / "served"
    root.mkdir()
    state = {"release": threading.Event(), "huge_done": threading.Event()}
    handler = type("Handler", (_Handler,), {"state": state})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{srv.server_address[1]}", "root": root, "state": state}
    finally:
        state["release"].set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _left_in(cache: Path) -> list:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# ---------------------------------------------------------------------------------------------------------- timeouts
@pytest.mark.parametrize("where", ["stall-body", "stall-head"])
def test_a_server_that_stalls_times_out_in_seconds_and_leaves_no_staging_folder(server, tmp_path, monkeypatch, where):
    monkeypatch.setenv("KERAS_IQA_READ_TIMEOUT", "1")
    cache = tmp_path / "cache"
    start = time.monotonic()
    with pytest.raises(PresetUnavailableError) as e:
        fetch_preset(f"{server['url']}/{where}/p", cache=cache)
    elapsed = time.monotonic() - start
    assert elapsed < 6, elapsed
    msg = str(e.value)
    assert "read timeout" in msg and "KERAS_IQA_READ_TIMEOUT" in msg and "1 s" in msg, msg
    if where == "stall-body":
        assert "after 1 byte " in msg, msg
    assert _left_in(cache) == [], _left_in(cache)  # no .partial-* staging folder


def test_the_timeout_argument_overrides_the_setting(server, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_IQA_READ_TIMEOUT", "600")
    start = time.monotonic()
    with pytest.raises(PresetUnavailableError, match="read timeout"):
        fetch_preset(f"{server['url']}/stall-body/p", cache=tmp_path / "cache", timeout=(2, 0.5))
    assert time.monotonic() - start < 5
    monkeypatch.setenv("KERAS_IQA_READ_TIMEOUT", "soon")
    with pytest.raises(PresetError, match="KERAS_IQA_READ_TIMEOUT='soon'"):
        fetch_preset(f"{server['url']}/stall-body/p", cache=tmp_path / "cache")


# --------------------------------------------------------------------------------------------------------- size caps
@pytest.mark.parametrize("path", ["huge", "huge-announced"])
def test_a_huge_metadata_json_is_refused_while_streaming_with_bounded_memory(server, tmp_path, path):
    cache = tmp_path / "cache"
    tracemalloc.start()
    try:
        with pytest.raises(PresetError) as e:
            fetch_preset(f"{server['url']}/{path}/p", cache=cache)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "metadata.json is larger than 1.0 MiB" in str(e.value) and "nothing was cached" in str(e.value)
    if path == "huge-announced":
        assert "announced 200.0 MiB" in str(e.value)
    assert peak < 8 << 20, peak  # Python allocations: a few 64 KiB blocks, not the file
    assert server["state"]["huge_done"].wait(10)
    assert server["state"]["huge_sent"] < 64 << 20, server["state"]["huge_sent"]  # of 200 MiB: socket buffers only
    assert _left_in(cache) == []


def test_a_file_larger_than_its_listed_size_is_refused(server, tmp_path):
    hashes = _fake_preset(server["root"] / "p", 1, weights_size=5000)
    meta = json.loads((server["root"] / "p" / METADATA_FILE).read_text())
    meta["files"][WEIGHTS_FILE]["bytes"] = 1000  # the server then sends 5000
    (server["root"] / "p" / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(PresetError, match=f"{WEIGHTS_FILE} is larger than 1,000 bytes \\(the size its preset lists"):
        fetch_preset(f"{server['url']}/p", cache=tmp_path / "cache")
    assert _left_in(tmp_path / "cache") == [] and hashes


def test_a_registered_preset_caps_each_file_at_its_listed_size(server, tmp_path):
    from keras_iqa.presets import register_preset, unregister_preset

    hashes = _fake_preset(server["root"] / "p", 12)
    sizes = {n: (server["root"] / "p" / n).stat().st_size for n in PRESET_FILES}
    entry = {"handle": f"{server['url']}/p", "sha256": hashes, "bytes": {**sizes, METADATA_FILE: 10},
             "metadata": {k: "x" for k in ("card", "description", "dataset", "protocol", "srocc", "plcc", "machine",
                                           "license", "command")}}
    with pytest.raises(PresetError, match="bytes must map files"):
        register_preset("test_capped", {**entry, "bytes": {"weights.bin": 10}})
    register_preset("test_capped", entry)
    try:
        with pytest.raises(PresetError, match="metadata.json is larger than 10 bytes \\(the size its preset lists"):
            fetch_preset("test_capped", cache=tmp_path / "cache")
        assert _left_in(tmp_path / "cache") == []
        register_preset("test_capped", {**entry, "bytes": sizes}, replace=True)
        assert fetch_preset("test_capped", cache=tmp_path / "cache").is_dir()
    finally:
        unregister_preset("test_capped")


def test_without_a_listed_size_the_global_limit_applies(server, tmp_path, monkeypatch):
    _fake_preset(server["root"] / "p", 2, weights_size=50_000, list_sizes=False)
    monkeypatch.setenv("KERAS_IQA_MAX_DOWNLOAD_BYTES", "20000")
    with pytest.raises(PresetError, match="KERAS_IQA_MAX_DOWNLOAD_BYTES") as e:
        fetch_preset(f"{server['url']}/p", cache=tmp_path / "cache")
    assert f"{WEIGHTS_FILE} is larger than 20,000 bytes" in str(e.value)
    assert _left_in(tmp_path / "cache") == []
    folder = fetch_preset(f"{server['url']}/p", cache=tmp_path / "cache", max_bytes=60_000)  # the argument wins
    assert sorted(p.name for p in folder.iterdir()) == sorted(PRESET_FILES)


# --------------------------------------------------------------------------------------------------------- redirects
def test_a_redirect_to_plain_http_on_another_host_is_refused_without_connecting(server, tmp_path, monkeypatch):
    looked_up = []
    real = socket.getaddrinfo

    def recording(host, *args, **kwargs):
        looked_up.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    cache = tmp_path / "cache"
    with pytest.raises(PresetError) as e:
        fetch_preset(f"{server['url']}/to-plain/p", cache=cache)
    msg = str(e.value)
    assert f"{server['url']}/to-plain/p/metadata.json redirected to http://example.invalid/p/metadata.json" in msg
    assert "use https://" in msg and "refused" in msg, msg
    assert "example.invalid" not in looked_up and "127.0.0.1" in looked_up, looked_up
    assert _left_in(cache) == []
    # the same URL given directly is refused with the same rule
    with pytest.raises(PresetError, match="use https://"):
        fetch_preset("http://example.invalid/p", cache=cache)
    # a redirect that keeps to the rules is followed
    hashes = _fake_preset(server["root"] / "ok", 3)
    folder = fetch_preset(f"{server['url']}/to-local/p", cache=cache)
    assert {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in PRESET_FILES} == hashes


def test_redirect_rules_are_the_handle_rules():
    from keras_iqa.presets import check_url

    check_url("https://example.org/p/metadata.json", via="https://cdn.example.org/p")
    check_url("http://127.0.0.1:9/p/metadata.json", via="http://localhost:9/p")
    for url, via, words in (("http://example.org/p", "https://example.org/p", "use https://"),
                            ("http://127.0.0.1/p", "https://example.org/p", "may not redirect to plain http://"),
                            ("file:///etc/passwd", "https://example.org/p", "not an https:// URL")):
        with pytest.raises(PresetError, match=words) as e:
            check_url(url, via=via)
        assert f"{via} redirected to {url}" in str(e.value)


# ---------------------------------------------------------------------------------------------------------- cache key
def test_handles_whose_slugs_collide_get_their_own_cache_folders(server, tmp_path):
    cache = tmp_path / "cache"
    one = _fake_preset(server["root"] / "a" / "b", 4)
    two = _fake_preset(server["root"] / "a_b", 5)
    first = fetch_preset(f"{server['url']}/a/b", cache=cache)
    second = fetch_preset(f"{server['url']}/a_b", cache=cache)
    assert first != second and sorted(_left_in(cache)) == sorted([first.name, second.name])
    assert {n: hashlib.sha256((first / n).read_bytes()).hexdigest() for n in PRESET_FILES} == one
    assert {n: hashlib.sha256((second / n).read_bytes()).hexdigest() for n in PRESET_FILES} == two
    assert cache_key(f"{server['url']}/a/b") != cache_key(f"{server['url']}/a_b")
    assert cache_key(f"{server['url']}/a/b/") == cache_key(f"{server['url']}/a/b")  # one URL, one folder
    assert first.name.startswith("http_127.0.0.1_") and cached_path(f"{server['url']}/a/b", cache) == first


# -------------------------------------------------------------------------------------------------- unwritable cache
def _cli_fetch(handle: str, cache: Path):
    env = {**os.environ, "KERAS_IQA_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "keras_iqa.cli", "preset", "fetch", handle], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize("layout", ["is-a-file", "under-a-file"])
def test_a_cache_that_is_or_lies_under_a_file_gives_one_line(server, tmp_path, layout):
    _fake_preset(server["root"] / "p", 6)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    cache = blocker if layout == "is-a-file" else blocker / "presets"
    with pytest.raises(PresetCacheError) as e:
        fetch_preset(f"{server['url']}/p", cache=cache)
    msg = str(e.value)
    assert str(cache) in msg and f"{blocker} is a file, not a folder" in msg and "KERAS_IQA_CACHE" in msg, msg
    out = _cli_fetch(f"{server['url']}/p", cache)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr and "KERAS_IQA_CACHE" in lines[0], out.stderr
    assert f"{blocker} is a file" in lines[0]


def test_a_read_only_cache_gives_one_line_and_a_cached_preset_still_loads(server, tmp_path, monkeypatch):
    _fake_preset(server["root"] / "p", 7)
    _fake_preset(server["root"] / "q", 8)
    cache = tmp_path / "cache"
    fetch_preset(f"{server['url']}/p", cache=cache)

    def read_only(*args, **kwargs):  # what a read-only file system answers (root included)
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkdtemp", read_only)
        with pytest.raises(PresetCacheError, match="read-only") as e:
            fetch_preset(f"{server['url']}/q", cache=cache)
        assert str(cache) in str(e.value) and "KERAS_IQA_CACHE" in str(e.value)
        assert fetch_preset(f"{server['url']}/p", cache=cache).is_dir()  # reading needs no write
    if os.geteuid() != 0:  # permissions bind everyone but root: check the real thing too
        cache.chmod(0o555)
        try:
            with pytest.raises(PresetCacheError, match="read-only"):
                fetch_preset(f"{server['url']}/q", cache=cache)
            assert fetch_preset(f"{server['url']}/p", cache=cache).is_dir()
        finally:
            cache.chmod(0o755)


def test_a_local_preset_with_a_huge_metadata_json_is_refused_unread(tmp_path):
    _fake_preset(tmp_path / "p", 11)
    with open(tmp_path / "p" / METADATA_FILE, "r+b") as f:
        f.truncate(1 << 30)  # 1 GiB, sparse
    tracemalloc.start()
    try:
        with pytest.raises(PresetError, match="1,073,741,824 bytes is too large for a preset's metadata.json"):
            fetch_preset(str(tmp_path / "p"))
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------------------------------- Kaggle, HF
def test_hugging_face_files_over_their_cap_are_refused_before_downloading(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.file_download import DryRunFileInfo

    calls = []

    def fake_download(repo_id, filename, etag_timeout=None, dry_run=False, **kwargs):
        calls.append((filename, dry_run, etag_timeout))
        if dry_run:
            return DryRunFileInfo(commit_hash="0" * 40, file_size=2 << 30, filename=filename, is_cached=False,
                                  local_path=str(tmp_path / filename), will_download=True)
        raise AssertionError("downloaded although the announced size is over the cap")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("KERAS_IQA_READ_TIMEOUT", "7")
    with pytest.raises(PresetError, match="metadata.json is larger than 1,048,576 bytes .*announced 2,147,483,648"):
        fetch_preset("hf://org/huge", cache=tmp_path / "cache")
    assert calls == [(METADATA_FILE, True, 7.0)]
    assert _left_in(tmp_path / "cache") == []


def test_kaggle_files_over_their_cap_are_refused_before_entering_the_cache(tmp_path, monkeypatch):
    big = tmp_path / "kagglehub" / METADATA_FILE
    big.parent.mkdir()
    with open(big, "wb") as f:
        f.truncate(5 << 20)  # 5 MiB, sparse
    fake = types.ModuleType("keras_hub.src.utils.preset_utils")  # keras-hub's get_file, without importing TensorFlow
    fake.get_file = lambda handle, name: str(big)
    monkeypatch.setitem(sys.modules, "keras_hub.src.utils.preset_utils", fake)
    with pytest.raises(PresetError, match="metadata.json is larger than 1,048,576 bytes"):
        fetch_preset("kaggle://org/model/keras/v/1", cache=tmp_path / "cache")
    assert _left_in(tmp_path / "cache") == []


# ---------------------------------------------------------------------------------------------------- interruptions
def test_ctrl_c_mid_download_leaves_no_staging_folder(server, tmp_path, monkeypatch):
    _fake_preset(server["root"] / "p", 9)
    cache = tmp_path / "cache"
    real = fetch_module.download
    seen = []

    def interrupted(url, dst, *args, **kwargs):
        if dst.name == WEIGHTS_FILE:
            dst.write_bytes(b"partial")
            seen.append(sorted(p.name for p in dst.parent.iterdir()))
            raise KeyboardInterrupt
        return real(url, dst, *args, **kwargs)

    monkeypatch.setattr(fetch_module, "download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch_preset(f"{server['url']}/p", cache=cache)
    assert seen == [sorted(PRESET_FILES)]  # it was interrupted with three files staged
    assert _left_in(cache) == []


def test_a_staging_folder_left_by_a_killed_process_is_removed_after_a_day(server, tmp_path):
    _fake_preset(server["root"] / "p", 10)
    cache = tmp_path / "cache"
    old, young = cache / ".partial-old-x", cache / ".partial-young-y"
    for p in (old, young):
        p.mkdir(parents=True)
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    folder = fetch_preset(f"{server['url']}/p", cache=cache)
    assert _left_in(cache) == sorted([folder.name, young.name])
