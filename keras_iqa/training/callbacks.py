"""The callbacks of a run directory: resume backups, per-epoch / best checkpoints and the resumable CSV history.

Each is made by a factory (`_make_*`) so that importing this module does not import Keras.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from keras_iqa.training.backup import BackupStore
from keras_iqa.training.files import DiskFullError, atomic_write, is_disk_full, log, save_json, weights_writer


def _make_backup_callback():
    import keras

    class Backup(keras.callbacks.Callback):
        """Saves the resume state after every epoch into a `BackupStore` (weights with both optimizers' state)."""

        def __init__(self, store: BackupStore):
            super().__init__()
            self.store = store

        def on_epoch_end(self, epoch, logs=None):
            self.store.save(epoch + 1, {"weights": (".weights.h5", weights_writer(self.model))})

    return Backup


def _make_checkpoint_callback():
    import keras

    class Checkpoint(keras.callbacks.Callback):
        """`epoch_XXX.weights.h5` after every epoch and, with `monitor`, `best.weights.h5` (its value in `best.json`, so
        a resumed run keeps its best), each written atomically."""

        def __init__(self, directory, monitor: Optional[str] = None, mode: str = "max", store: Optional[BackupStore] = None):
            super().__init__()
            if mode not in ("max", "min"):
                raise ValueError(f"checkpoint mode must be 'max' or 'min', got {mode!r}")
            self.dir, self.monitor, self.mode, self.store = Path(directory), monitor, mode, store

        def _save(self, path):
            atomic_write(path, weights_writer(self.model), suffix=".weights.h5")

        def on_epoch_end(self, epoch, logs=None):
            try:
                self._on_epoch_end(epoch, logs)
            except DiskFullError as e:  # the backup of this epoch (written before) names what a re-run resumes from
                raise DiskFullError(e.path, need=e.need, note=self.store.intact_note() if self.store else e.note) from None

        def _on_epoch_end(self, epoch, logs=None):
            self.dir.mkdir(parents=True, exist_ok=True)
            self._save(self.dir / f"epoch_{epoch + 1:03d}.weights.h5")
            if not self.monitor:
                return
            value = (logs or {}).get(self.monitor)
            if value is None:
                log.warning("checkpoint: '%s' is not in the epoch logs (%s); best.weights.h5 not written", self.monitor,
                            ", ".join(sorted(logs or {})))
                return
            value = float(value)
            best_file = self.dir / "best.json"
            best = None
            if best_file.exists() and (self.dir / "best.weights.h5").exists():
                try:
                    best = float(json.loads(best_file.read_text(encoding="utf-8"))["value"])
                except Exception:
                    best = None
            better = best is None or (value > best if self.mode == "max" else value < best)
            if better and np.isfinite(value):
                self._save(self.dir / "best.weights.h5")
                save_json({"monitor": self.monitor, "mode": self.mode, "value": value, "epoch": epoch + 1}, best_file)

    return Checkpoint


def _make_csv_logger():
    import keras

    class ResumableCSVLogger(keras.callbacks.CSVLogger):
        """CSVLogger that appends and drops rows of epochs that a resumed run re-does (no duplicated history rows), and
        a row cut short by a kill."""

        def __init__(self, filename):
            super().__init__(filename, append=True)

        def on_train_begin(self, logs=None):
            self._first_epoch_seen = False
            super().on_train_begin(logs)

        def on_epoch_end(self, epoch, logs=None):
            try:
                if not self._first_epoch_seen:
                    self._first_epoch_seen = True
                    self._truncate_from(epoch)
                super().on_epoch_end(epoch, logs)
            except OSError as e:  # a full disk: the row cut short is dropped by the resumed run (`_truncate_from`)
                if not is_disk_full(e):
                    raise
                self._drop_file()
                raise DiskFullError(self.filename) from None

        def _drop_file(self):
            """Closes the history file without flushing what a full disk refused (a later flush would fail again)."""
            f, self.csv_file, self.writer = self.csv_file, None, None
            raw = getattr(getattr(f, "buffer", None), "raw", None)
            if raw is not None:
                raw.close()  # a buffered file whose raw file is closed closes without flushing

        def _truncate_from(self, epoch):
            if not os.path.exists(self.filename) or self.csv_file is None:
                return
            self.csv_file.flush()
            with open(self.filename, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            if len(rows) <= 1:
                return
            width = len(rows[0])
            keep = [rows[0]] + [r for r in rows[1:] if len(r) == width and r[0].isdigit() and int(r[0]) < epoch]
            if len(keep) != len(rows):
                self.csv_file.seek(0)
                self.csv_file.truncate()
                csv.writer(self.csv_file).writerows(keep)
                self.csv_file.flush()

    return ResumableCSVLogger


def _ResumableCSVLogger(filename):
    return _make_csv_logger()(filename)
