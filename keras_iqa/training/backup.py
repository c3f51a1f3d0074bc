"""`BackupStore`: the verified, versioned resume state of a run (the last epochs' files, each committed by an index)."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from typing import Optional

from keras_iqa.training.files import (DiskFullError, _exists, _first_line, _gfile_open, _human, _is_remote, _join,
                                      _sha256, _size, _write_text, atomic_write, log)


def _test_seam(epoch: int, moment: str, path: Optional[str] = None) -> None:
    """Test seam: KERAS_IQA_KILL_BACKUP="EPOCH:MOMENT" SIGKILLs this process while it saves the backup of EPOCH
    (MOMENT "write": half of the weights file written; "commit": files written, index not yet). Tests only."""
    spec = os.environ.get("KERAS_IQA_KILL_BACKUP")
    if not spec or spec != f"{epoch}:{moment}":
        return
    if path and os.path.exists(path):
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class BackupStore:
    """Verified, versioned training state in one folder: the last `keep` epochs, written then committed.

    `save(epoch, files)` writes each file under a new name (`<name>-<epoch>.<suffix>`, atomically), then commits them by
    writing a new index `index-<epoch>.json` (atomically) that lists the kept versions with each file's size and
    SHA-256, then deletes the files and indexes no kept version names. Nothing is ever overwritten in place, so a kill
    at any moment leaves the last committed index and its files intact, on object stores too (`gs://...`, where each
    file is published whole by its upload, `atomic_write`). `entries()` reads the newest readable index: the committed
    versions, newest first; `problem(entry)` says what is wrong with one (missing file, size, hash), None if intact.
    Non-chief workers pass `write_dir` (a temporary folder): they write their copy there and read the chief's.

    Example:
    >>> import tempfile
    >>> from keras_iqa.training.backup import BackupStore
    >>> store = BackupStore(tempfile.mkdtemp())
    >>> def write(text):
    ...     return lambda path: open(path, "w").write(text)
    >>> store.save(1, {"state": (".txt", write("epoch 1"))})["files"]["state"]["file"]
    'state-0001.txt'
    >>> _ = store.save(2, {"state": (".txt", write("epoch 2"))})
    >>> [e["epoch"] for e in store.entries()], store.problem(store.entries()[0])
    ([2, 1], None)
    """

    INDEX = "index-{epoch:04d}.json"

    def __init__(self, directory, keep: int = 2, write_dir=None):
        if int(keep) < 1:
            raise ValueError(f"BackupStore keeps at least 1 version, got keep={keep!r}")
        self.dir, self.keep = str(directory), int(keep)
        self.write_dir = str(write_dir) if write_dir is not None else self.dir

    def path(self, name: str) -> str:
        return _join(self.dir, name)

    def _listdir(self, directory) -> list:
        if _is_remote(directory):
            import tensorflow as tf

            return [n.rstrip("/") for n in tf.io.gfile.listdir(directory)] if tf.io.gfile.isdir(directory) else []
        return os.listdir(directory) if os.path.isdir(directory) else []

    def _read_index(self, directory, warn: bool = False) -> list:
        """Entries of the newest index of `directory` that reads as one (an unreadable one is skipped, with a message
        when `warn`); [] without any."""
        names = sorted((n for n in self._listdir(directory) if re.fullmatch(r"index-\d{4}\.json", n)), reverse=True)
        for name in names:
            path = _join(directory, name)
            opener = _gfile_open if _is_remote(path) else (lambda p, m: open(p, m, encoding="utf-8"))
            try:
                with opener(path, "r") as f:
                    doc = json.loads(f.read())
                entries = doc.get("entries") if isinstance(doc, dict) else None
                if not isinstance(entries, list) or not all(isinstance(e, dict) and "epoch" in e for e in entries):
                    raise ValueError("no list of entries")
                return sorted(entries, key=lambda e: -int(e["epoch"]))
            except Exception as e:  # written atomically: only outside damage does this
                if warn:
                    log.warning("resume: %s is unreadable (%s); trying the previous index", path, _first_line(e))
        return []

    def entries(self) -> list:
        """Committed versions, newest first: [{"epoch": int, "files": {name: {"file", "size", "sha256"}}, ...}]."""
        return self._read_index(self.dir, warn=True)

    def problem(self, entry: dict) -> Optional[str]:
        """None if every file of `entry` exists with its recorded size and SHA-256, else a short description."""
        for info in entry.get("files", {}).values():
            path = self.path(info["file"])
            if not _exists(path):
                return f"{info['file']} is missing"
            size = _size(path)
            if size != info.get("size"):
                return f"{info['file']} has {_human(size)} of {_human(info.get('size', 0))}"
            if info.get("sha256") and _sha256(path) != info["sha256"]:
                return f"{info['file']} does not match its SHA-256"
        return None

    def intact_note(self) -> str:
        """What a full disk leaves to resume from: "the last good backup (epoch N, <dir>) is intact" or that there is none."""
        entries = self._read_index(self.write_dir)
        if not entries:
            return f"no backup was committed yet in {self.write_dir}"
        return f"the last good backup (epoch {int(entries[0]['epoch'])}, {self.write_dir}) is intact"

    def save(self, epoch: int, files: dict, **meta) -> dict:
        """Writes `files` = {name: (suffix, write(path))} as the state after `epoch`, commits it and returns the entry. A full
        disk raises `DiskFullError` naming the file and the last committed backup, which stays intact."""
        try:
            return self._save(epoch, files, **meta)
        except DiskFullError as e:
            raise DiskFullError(e.path, need=e.need, note=self.intact_note()) from None

    def _save(self, epoch: int, files: dict, **meta) -> dict:
        local = not _is_remote(self.write_dir)
        if local:
            os.makedirs(self.write_dir, exist_ok=True)
        else:
            import tensorflow as tf

            tf.io.gfile.makedirs(self.write_dir)
        written = {}
        for name, (suffix, write) in files.items():
            fname = f"{name}-{int(epoch):04d}{suffix}"
            target = _join(self.write_dir, fname)

            def seam_write(tmp, write=write):
                write(tmp)
                _test_seam(int(epoch), "write", tmp)

            atomic_write(target, seam_write, suffix=suffix)
            written[name] = {"file": fname, "size": _size(target), "sha256": _sha256(target)}
        _test_seam(int(epoch), "commit")
        old = self._read_index(self.write_dir)
        entry = {"epoch": int(epoch), "files": written, **meta}
        # older versions only: after a resume from an earlier epoch, later (abandoned) versions leave the index
        kept = [entry] + [e for e in old if int(e["epoch"]) < int(epoch)][: self.keep - 1]
        atomic_write(_join(self.write_dir, self.INDEX.format(epoch=int(epoch))),
                     _write_text(json.dumps({"format": 1, "entries": kept}, indent=2)), suffix=".json")
        self._prune(kept)
        return entry

    def _prune(self, kept: list) -> None:
        """Deletes this store's files that no kept entry names (older versions, `.partial` leftovers of a kill)."""
        names = {info["file"] for e in kept for info in e.get("files", {}).values()}
        names |= {self.INDEX.format(epoch=int(e["epoch"])) for e in kept}  # the previous index stays a fallback
        pattern = re.compile(r"^[A-Za-z0-9_]+-\d{4}(\.partial)?\.")
        if _is_remote(self.write_dir):
            import tensorflow as tf

            listing, remove = tf.io.gfile.listdir(self.write_dir), tf.io.gfile.remove
        else:
            listing, remove = os.listdir(self.write_dir), os.remove
        for name in listing:
            if name not in names and pattern.match(name):
                try:
                    remove(_join(self.write_dir, name))
                except Exception:  # already gone (another cleaner), or a store that refuses: left for the next save
                    pass
