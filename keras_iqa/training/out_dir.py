"""The `--out` folder of `keras-iqa train`: what a run may write into (`check_out`) and one run at a time (`OutputLock`).

`claim_output(out, kind, config)` is what every `train` command wraps its run in:

- a folder that does not exist or is empty is a new run; a folder marked by an earlier run of the same kind (its
  `MARK_FILE`, or the `run_info.json` every run directory holds) with the same config resumes (a changed number of epochs
  or `distribute` too); anything else is refused with one line naming the folder, what is in it and `--overwrite`;
- `overwrite=True` removes what a keras-iqa run writes there (`RUN_ENTRIES`: config, history, checkpoints, backups, model,
  results, the sub-runs of MetaIQA, HCL and `--split all`) and starts over; any other file is left alone;
- `OutputLock` makes two runs on one folder refuse each other: `LOCK_FILE` is created with O_CREAT | O_EXCL and holds the
  pid, host and start time; a lock whose process is gone (same host, no such pid) is taken over with a message.

Only the chief of a multi-worker run (TF_CONFIG) claims the folder; object-store paths are not claimed (docs/security.md,
Your files are never overwritten).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Optional

from data_pipeline.layout import (BACKUP_DIR, CHECKPOINTS_DIR, CONFIG_FILE, HCL_STAGE_DIRS, HISTORY_FILE, MODEL_FILE,
                                  RESULTS_FILE, RUN_INFO_FILE)
from keras_iqa.training.files import _is_remote, log, save_json

MARK_FILE = ".keras-iqa-run.json"
LOCK_FILE = ".keras-iqa.lock"
#: What a keras-iqa run writes in its `--out` (removed by `--overwrite`), besides `split_NN/` of `--split all`.
RUN_ENTRIES = (CONFIG_FILE, RUN_INFO_FILE, HISTORY_FILE, CHECKPOINTS_DIR, BACKUP_DIR, MODEL_FILE, RESULTS_FILE, MARK_FILE,
               "predictions.csv", "logs", "meta", "finetune", "lodo.csv", "head_correlation.json",
               "head_correlation.csv", "model.tmp.keras", *HCL_STAGE_DIRS.values())
_SPLIT_DIR = re.compile(r"^split_\d+$")
#: Config keys that may change between a run and its resumed re-run (the last part of a dotted key).
RESUMABLE_CHANGES = ("epochs", "meta_epochs", "finetune_epochs", "baseline_epochs", "repetitions", "distribute")

_CLAIMED: set = set()


class OutputInUse(RuntimeError):
    """Another run holds the `--out` folder's lock."""


def is_chief() -> bool:
    """False for a non-chief worker of a multi-worker run (TF_CONFIG), which writes nothing into `--out`."""
    try:
        spec = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        return True
    task, cluster = spec.get("task") or {}, spec.get("cluster") or {}
    if not task or not cluster:
        return True
    kind, index = task.get("type"), int(task.get("index") or 0)
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def claimed(path) -> bool:
    """True when `path` is (inside) a folder a `claim_output` of this process holds: its run directories need no check."""
    p = os.path.abspath(str(path))
    return any(p == root or p.startswith(root + os.sep) for root in _CLAIMED)


def _read_json(path: Path) -> Optional[dict]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def run_mark(path) -> Optional[dict]:
    """What marks `path` as a keras-iqa run: its `MARK_FILE` ({"kind", "config", ...}), else a `run_info.json` that a run
    directory wrote ({"kind": None}); None for a folder keras-iqa did not write."""
    p = Path(path)
    mark = _read_json(p / MARK_FILE)
    if mark and "kind" in mark:
        return mark
    info = _read_json(p / RUN_INFO_FILE)
    if info and "versions" in info and "started" in info:
        return {"kind": info.get("kind"), "config": None}
    return None


def _listing(names: list) -> str:
    shown = ", ".join(sorted(names)[:5])
    return f"{len(names)} entries ({shown}, ...)" if len(names) > 5 else shown


def _changed(old: dict, new: dict, prefix: str = "") -> list:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed(a, b, f"{prefix}{key}.")
        elif json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append((f"{prefix}{key}", a, b))
    return out


def _has_state(folder: Path) -> bool:
    """True when a run in `folder` wrote more than its config and run info (history, checkpoints, backups, results)."""
    bare = {MARK_FILE, LOCK_FILE, CONFIG_FILE, RUN_INFO_FILE}
    return any(f not in bare for _, _, names in os.walk(folder) for f in names)


def check_out(out, kind: str, config: Optional[dict] = None, overwrite: bool = False) -> str:
    """"new", "resume" or "overwrite" for a run of `kind` with `config` into `out`; a ValueError (one line: the folder,
    what is in it, the fix) when it would write over files that are not a keras-iqa run of that kind and config."""
    p = Path(out)
    if _is_remote(out) or not p.exists():
        return "new"
    if not p.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: choose a folder for the run")
    names = [n for n in os.listdir(p) if n != LOCK_FILE]
    if not names:
        return "new"
    if overwrite:
        return "overwrite"
    mark = run_mark(p)
    fix = "choose a new or empty folder, or add --overwrite to replace what a keras-iqa run writes there"
    if mark is None:
        raise ValueError(f"--out {out} is not a keras-iqa run folder (it holds {_listing(names)}): {fix}")
    if not _has_state(p):  # a run that stopped before its first epoch (a wrong --data, say): nothing to keep
        return "new"
    if mark.get("kind") and mark["kind"] != kind:
        raise ValueError(f"--out {out} holds a keras-iqa '{mark['kind']}' run, not '{kind}': {fix}")
    if config is not None and isinstance(mark.get("config"), dict):
        changes = [c for c in _changed(mark["config"], config) if c[0].split(".")[-1] not in RESUMABLE_CHANGES]
        if changes:
            shown = "; ".join(f"{k}: {json.dumps(a, default=str)} -> {json.dumps(b, default=str)}" for k, a, b in changes[:3])
            more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
            raise ValueError(f"--out {out} holds a '{kind}' run with another config ({shown}{more}): re-run with its "
                             f"settings to resume it, choose a new folder, or add --overwrite to start it over")
    return "resume"


def clear_run(out) -> list:
    """Removes what a keras-iqa run writes in `out` (`RUN_ENTRIES`, `split_NN/`); returns the names removed."""
    p, removed = Path(out), []
    for name in sorted(os.listdir(p)):
        if name in RUN_ENTRIES or (_SPLIT_DIR.match(name) and (p / name).is_dir()):
            target = p / name
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """`LOCK_FILE` in a folder, created atomically (O_CREAT | O_EXCL) with this process's pid, host and start time."""

    def __init__(self, folder):
        self.path = Path(folder) / LOCK_FILE
        self.held = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        doc = {"pid": os.getpid(), "host": socket.gethostname(),
               "started": _dt.datetime.now().isoformat(timespec="seconds"), "argv": sys.argv}
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        self.held = True
        return True

    def _owner(self):
        """(text, pid, started) of a stale lock (its process gone, on this host); None without a lock; `OutputInUse`
        for a lock a live process (or one on another host, or an unreadable one) holds."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        try:
            owner = json.loads(text)
            pid, host, started = int(owner["pid"]), str(owner["host"]), owner.get("started", "?")
        except (ValueError, KeyError, TypeError):
            raise OutputInUse(f"{self.path.parent}: another keras-iqa run holds {self.path} (unreadable); if none is "
                              f"running, delete that file") from None
        if host != socket.gethostname() or _alive(pid):
            raise OutputInUse(f"{self.path.parent} is in use by another keras-iqa run (pid {pid} on {host}, since "
                              f"{started}): wait for it to end or choose another --out; if it is not running, delete "
                              f"{self.path}")
        return text, pid, started

    def check(self) -> None:
        """`OutputInUse` when another live run holds the lock (reads only)."""
        self._owner()

    def acquire(self) -> "OutputLock":
        if self._create():
            return self
        stale = self._owner()
        if stale is None:  # released in between
            return self.acquire()
        text, pid, started = stale
        # stale: its process is gone. Move it aside (one taker wins the rename) and check it was the one we read.
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            pass
        else:
            moved = aside.read_text(encoding="utf-8", errors="replace")
            if moved != text:  # a live lock created in between: put it back
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)
                aside.unlink()
                raise OutputInUse(f"{self.path.parent} is in use by another keras-iqa run: wait for it to end or choose "
                                  "another --out")
            aside.unlink()
        if not self._create():
            raise OutputInUse(f"{self.path.parent} is in use by another keras-iqa run: wait for it to end or choose "
                              "another --out")
        log.warning("%s: took over the lock of keras-iqa run pid %d (started %s), which is no longer running",
                    self.path.parent, pid, started)
        return self

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.held = False


@contextlib.contextmanager
def claim_output(out, kind: str, config: Optional[dict] = None, overwrite: bool = False):
    """The block runs as the one run of `kind` in `out` (see the module docstring); yields "new", "resume" or
    "overwrite". A block that fails before the run wrote any state (`_has_state`) leaves no folder it created and no mark."""
    if _is_remote(out) or not is_chief():
        yield "new"
        return
    if Path(out).is_dir():
        OutputLock(out).check()  # a run in progress is the first thing to say
    check_out(out, kind, config, overwrite)  # before anything is created
    folder = Path(out)
    existed = folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(folder).acquire()
    root = os.path.abspath(str(folder))
    try:
        state = check_out(out, kind, config, overwrite)  # again, under the lock
        if state == "overwrite":
            removed = clear_run(folder)
            if removed:
                log.warning("--overwrite: removed %s from %s; starting over", ", ".join(removed), out)
        save_json({"kind": kind, "config": config, "claimed": _dt.datetime.now().isoformat(timespec="seconds")},
                  folder / MARK_FILE)
        _CLAIMED.add(root)
        yield state
    except BaseException:
        if not _has_state(folder):  # stopped before its first epoch (a bad value, a wrong --data): leave no trace
            lock.release()
            shutil.rmtree(folder, ignore_errors=True) if not existed else (folder / MARK_FILE).unlink(missing_ok=True)
        raise
    finally:
        _CLAIMED.discard(root)
        lock.release()
