"""The `--out` folder of `keras-iqa train`: what a run may write into (`check_out`) and one run at a time (`fs.lock`).

`claim_output(out, kind, config)` is what every `train` command wraps its run in:

- a folder that does not exist or is empty is a new run; a folder marked by an earlier run of the same kind (its
  `MARK_FILE`, or the `run_info.json` every run directory holds) with the same config resumes (a changed number of epochs
  or `distribute` too); anything else is refused with one line naming the folder, what is in it and `--overwrite`;
- `overwrite=True` removes what a keras-iqa run writes there (`RUN_ENTRIES`: config, history, checkpoints, backups, model,
  results, the sub-runs of MetaIQA, HCL and `--split all`) and starts over; any other file is left alone;
- `fs.lock` (`LOCK_FILE`) makes two runs on one folder refuse each other, on a local disk (O_CREAT | O_EXCL) and on an
  object store (a conditional create on s3://); a lock whose process is gone (same host, no such pid) is taken over with
  a message.

Only the chief of a multi-worker run (TF_CONFIG) claims the folder; object-store folders are locked but not checked or
marked (docs/security.md, Your files are never overwritten).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
from pathlib import Path
from typing import Optional

from data_pipeline.layout import (BACKUP_DIR, CHECKPOINTS_DIR, CONFIG_FILE, HCL_STAGE_DIRS, HISTORY_FILE, MODEL_FILE,
                                  RESULTS_FILE, RUN_INFO_FILE)
from data_pipeline import fs
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


@contextlib.contextmanager
def claim_output(out, kind: str, config: Optional[dict] = None, overwrite: bool = False):
    """The block runs as the one run of `kind` in `out` (see the module docstring); yields "new", "resume" or
    "overwrite". A block that fails before the run wrote any state (`_has_state`) leaves no folder it created and no mark.
    Object-store folders are locked (`fs.lock`: a conditional create on s3://) but not checked or marked."""
    if not is_chief():
        yield "new"
        return
    lock_path = fs.join(os.fspath(out), LOCK_FILE)
    if _is_remote(out):
        with fs.lock(lock_path, command=f"keras-iqa {kind}"):
            yield "new"
        return
    check_out(out, kind, config, overwrite)  # before anything is created
    folder = Path(out)
    existed = folder.exists()
    root = os.path.abspath(str(folder))
    lock = fs.lock(lock_path, command=f"keras-iqa {kind}")
    lock.__enter__()  # creates the folder; fs.LockedError when another run holds it (nothing of ours to undo)
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
            lock.__exit__(None, None, None)
            shutil.rmtree(folder, ignore_errors=True) if not existed else (folder / MARK_FILE).unlink(missing_ok=True)
        raise
    finally:
        _CLAIMED.discard(root)
        lock.__exit__(None, None, None)
