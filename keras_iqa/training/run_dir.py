"""`RunDir`: a run directory (config, run info, history, checkpoints, backups, final model) and its resume (`restore`).

The layout is described in `keras_iqa.training.runner`; file names come from `data_pipeline.layout`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from data_pipeline.layout import (BACKUP_DIR, CHECKPOINTS_DIR, CONFIG_FILE, HISTORY_FILE, MODEL_FILE, RESULTS_FILE,
                                  RUN_INFO_FILE)
from keras_iqa.training.backup import BackupStore
from keras_iqa.training.callbacks import _make_backup_callback, _make_checkpoint_callback, _ResumableCSVLogger
from keras_iqa.training.distribute import worker_info
from keras_iqa.training.files import DiskFullError, _first_line, _h5_problem, is_disk_full, log, save_json
from keras_iqa.training.out_dir import LOCK_FILE, claimed, run_mark


def set_seed(seed: int) -> None:
    """Seeds Python, NumPy, TensorFlow and Keras."""
    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def package_versions() -> dict:
    """Versions of the packages that decide numerical results."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("tensorflow", "keras", "keras_hub", "numpy", "scipy", "PIL", "skimage", "apache_beam"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "?")
        except Exception:
            out[name] = None
    return out


class RunDir:
    """A run directory (see the module docstring). `RunDir.create` writes config and run info; `RunDir(path)` opens one.

    `chief=False` (a non-chief worker of a multi-worker run): `path` is a temporary folder for this worker's writes and
    `shared` the run directory, which `restore` reads."""

    def __init__(self, path: os.PathLike, chief: bool = True, worker: int = 0):
        self.shared = Path(path)
        self.chief = bool(chief)
        self.path = self.shared if self.chief else Path(tempfile.mkdtemp(prefix=f"keras-iqa-worker{int(worker)}-"))

    @classmethod
    def create(cls, path: os.PathLike, config: Any = None, seed: Optional[int] = None, extra: Optional[dict] = None,
               strategy=None) -> "RunDir":
        """Creates (or reopens, to resume) a run directory; with a multi-worker `strategy` only its chief writes it. A folder
        that holds files but is not a keras-iqa run is refused (`keras_iqa.training.out_dir`; the `train` commands check it
        first, with `--overwrite`)."""
        chief, worker = worker_info(strategy)
        run = cls(path, chief=chief, worker=worker)
        if chief and not claimed(path):
            _refuse_foreign(Path(path))
        run.path.mkdir(parents=True, exist_ok=True)
        run.checkpoints.mkdir(exist_ok=True)
        if config is not None:
            save_json(config, run.path / CONFIG_FILE)
        info = {
            "versions": package_versions(),
            "seed": seed,
            "argv": sys.argv,
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
            **(extra or {}),
        }
        save_json(info, run.path / RUN_INFO_FILE)
        if seed is not None:
            set_seed(seed)
        return run

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def history_csv(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def final_model(self) -> Path:
        return self.path / MODEL_FILE

    def backup_store(self, keep: int = 2) -> BackupStore:
        """The resume state of this run (`backup/`); non-chief workers write theirs to their own folder."""
        return BackupStore(self.shared / BACKUP_DIR, keep=keep, write_dir=None if self.chief else self.path / BACKUP_DIR)

    def config(self) -> dict:
        with open(self.path / CONFIG_FILE, encoding="utf-8") as f:
            return json.load(f)

    def save_results(self, results: dict, name: str = RESULTS_FILE) -> Path:
        save_json(results, self.path / name)
        return self.path / name

    def save_final(self, model) -> Path:
        """Saves `model.keras` atomically (Keras writes its HDF5 part in memory, then the zip with Python's file I/O); a full
        disk raises `DiskFullError`, the backups left intact."""
        tmp = self.path / "model.tmp.keras"
        try:
            model.save(tmp)
            os.replace(tmp, self.final_model)
        except OSError as e:
            if not is_disk_full(e):
                raise
            tmp.unlink(missing_ok=True)
            raise DiskFullError(self.final_model, note=self.backup_store().intact_note()) from None
        return self.final_model

    def callbacks(self, monitor: Optional[str] = None, mode: str = "max", tensorboard: bool = True, backup: bool = True) -> list:
        """Backup (resume state), per-epoch weights, best weights (with `monitor`), CSV history and TensorBoard; every
        file written atomically. Resuming is `restore` (which `fit` calls before `model.fit`)."""
        import keras

        # the history row first: a committed backup then always has its epoch's row (a kill between the two leaves a row
        # that the resumed run re-does and drops, never a backup whose row is missing)
        cbs = [_ResumableCSVLogger(str(self.history_csv))]
        store = self.backup_store() if backup else None
        if backup:
            cbs.append(_make_backup_callback()(store))
        cbs.append(_make_checkpoint_callback()(self.checkpoints, monitor=monitor, mode=mode, store=store))
        if tensorboard:
            cbs.append(keras.callbacks.TensorBoard(str(self.path / "logs"), write_graph=False, profile_batch=0))
        return cbs

    def restore(self, model) -> int:
        """Loads the newest intact saved state of this run into `model` (weights and every optimizer's state) and returns
        the number of epochs it completed (0: nothing to resume; the model is left as it is).

        Candidates, newest epoch first: the backups listed in `backup/index-EEEE.json` (size and SHA-256 checked), a backup in the
        layout of `keras.callbacks.BackupAndRestore` (runs of earlier versions), and `checkpoints/epoch_XXX.weights.h5`
        (read through before loading). Damaged ones are skipped with a one-line message naming them; an intact file that
        does not fit the model (another config in the same run directory) is an error.
        """
        candidates = self._candidates()
        if not candidates:
            return 0
        if not model.built:
            raise ValueError(f"{self.shared}: build the model (call it on a batch) before resuming the run")
        notes = []
        for epoch, label, path, problem in candidates:
            why = problem()
            if why:
                notes.append(why)
                continue
            _build_optimizers(model)
            tmp = None
            if not str(path).endswith(".weights.h5"):  # Keras loads only *.weights.h5 (e.g. Keras's latest.weights.h5.bkp)
                tmp = tempfile.mkdtemp(prefix="keras-iqa-restore-")
                path = shutil.copyfile(path, os.path.join(tmp, "restore.weights.h5"))
            try:
                model.load_weights(path)
            except Exception as e:
                raise ValueError(f"{path} is intact but does not fit this model ({_first_line(e)}): was the run directory "
                                 f"{self.shared} written with another config? Use a new --out, or the same config to "
                                 "resume") from None
            finally:
                if tmp:
                    shutil.rmtree(tmp, ignore_errors=True)
            if notes:
                log.warning("resume: %s; resuming after epoch %d from %s", "; ".join(notes), epoch, label)
            return int(epoch)
        log.warning("resume: nothing usable in %s (%s); training starts again from epoch 1", self.shared, "; ".join(notes))
        return 0

    def _candidates(self) -> list:
        """[(epoch, label, weights path, problem() -> None or a note)] newest first (backups before checkpoints of one
        epoch)."""
        def readable(label, path):
            return lambda: (lambda why: f"{label} {why}" if why else None)(_h5_problem(path))

        out = []
        store = self.backup_store()
        for e in store.entries():
            info = e.get("files", {}).get("weights")
            if info:
                out.append((int(e["epoch"]), f"backup/{info['file']}", store.path(info["file"]),
                            lambda e=e: (lambda why: f"backup/{why}" if why else None)(store.problem(e))))
        legacy = self.shared / "backup"
        for weights, meta in (("latest.weights.h5", "training_metadata.json"),
                              ("latest.weights.h5.bkp", "training_metadata.json.bkp")):
            if (legacy / weights).exists():
                try:
                    epoch = int(json.loads((legacy / meta).read_text(encoding="utf-8"))["epoch"])
                except Exception:
                    continue
                out.append((epoch, f"backup/{weights}", str(legacy / weights),
                            readable(f"backup/{weights}", str(legacy / weights))))
        ckpt = self.shared / CHECKPOINTS_DIR
        if ckpt.is_dir():
            for p in ckpt.iterdir():
                m = re.fullmatch(r"epoch_(\d+)\.weights\.h5", p.name)
                if m:
                    out.append((int(m.group(1)), f"checkpoints/{p.name}", str(p), readable(f"checkpoints/{p.name}", str(p))))
        out.sort(key=lambda c: -c[0])  # stable: at one epoch, backups (listed first) before checkpoints
        return out


def _refuse_foreign(path: Path) -> None:
    """A ValueError when `path` holds files and is not a keras-iqa run (`out_dir.run_mark`)."""
    names = sorted(n for n in os.listdir(path) if n != LOCK_FILE) if path.is_dir() else []
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder: choose a folder for the run")
    if names and run_mark(path) is None:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ValueError(f"{path} is not a keras-iqa run folder (it holds {shown}): choose a new or empty folder; "
                         "keras-iqa does not write over files it did not make")


def _build_optimizers(model) -> None:
    """Builds every optimizer of `model` on its variables (`model.optimizer_groups()` for models trained by two), so a
    weights file restores their state too (Keras skips the state of an optimizer that is not built)."""
    from keras_iqa.training.optimizers import build_optimizer_groups

    if hasattr(model, "optimizer_groups"):
        build_optimizer_groups(model.optimizer_groups())
    elif getattr(model, "optimizer", None) is not None:
        build_optimizer_groups([(model.optimizer, model.trainable_variables)])
