"""The common training runner used by every method: run directory, resume, checkpoints, logs, distribution strategy.

A run directory holds:
    config.json      the resolved config            run_info.json  package versions, seed, command line, start time
    history.csv      one row per epoch (appended)   checkpoints/   epoch_XXX.weights.h5 (+ best.weights.h5 with a monitor)
    backup/          BackupAndRestore state          logs/          TensorBoard
    model.keras      the final model (`save_final`)  results.json   metrics written by the evaluation code

A killed run restarted with the same run directory resumes at the epoch after its last completed one
(`keras.callbacks.BackupAndRestore`), without duplicated history rows.

Example:
>>> import tempfile
>>> from pathlib import Path
>>> import keras
>>> import numpy as np
>>> from keras_iqa.training.runner import RunDir, fit, get_strategy
>>> run = RunDir.create(Path(tempfile.mkdtemp()) / "runs" / "demo", config={"epochs": 2}, seed=42)
>>> sorted(p.name for p in run.path.iterdir())
['checkpoints', 'config.json', 'run_info.json']
>>> with get_strategy("auto").scope():
...     model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
...     model.compile(optimizer="adam", loss="mse")
>>> x, y = np.ones((8, 4), "float32"), np.zeros((8, 1), "float32")
>>> history = fit(model, (x, y), epochs=2, run=run, verbose=0, tensorboard=False)
>>> len(history.history["loss"]), (run.path / "history.csv").exists()
(2, True)
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import sys
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np


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


def save_json(obj: Any, path: os.PathLike) -> None:
    """Writes JSON atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=_json_default)
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


class RunDir:
    """A run directory (see the module docstring). `RunDir.create` writes config and run info; `RunDir(path)` opens one."""

    def __init__(self, path: os.PathLike):
        self.path = Path(path)

    @classmethod
    def create(cls, path: os.PathLike, config: Any = None, seed: Optional[int] = None, extra: Optional[dict] = None) -> "RunDir":
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        run.checkpoints.mkdir(exist_ok=True)
        if config is not None:
            save_json(config, run.path / "config.json")
        info = {
            "versions": package_versions(),
            "seed": seed,
            "argv": sys.argv,
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
            **(extra or {}),
        }
        save_json(info, run.path / "run_info.json")
        if seed is not None:
            set_seed(seed)
        return run

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def history_csv(self) -> Path:
        return self.path / "history.csv"

    @property
    def final_model(self) -> Path:
        return self.path / "model.keras"

    def config(self) -> dict:
        with open(self.path / "config.json", encoding="utf-8") as f:
            return json.load(f)

    def save_results(self, results: dict, name: str = "results.json") -> Path:
        save_json(results, self.path / name)
        return self.path / name

    def save_final(self, model) -> Path:
        """Saves `model.keras` atomically."""
        tmp = self.path / "model.tmp.keras"
        model.save(tmp)
        os.replace(tmp, self.final_model)
        return self.final_model

    def callbacks(self, monitor: Optional[str] = None, mode: str = "max", tensorboard: bool = True, backup: bool = True) -> list:
        """BackupAndRestore, per-epoch weights, best weights (with `monitor`), CSV history and TensorBoard."""
        import keras

        cbs = []
        if backup:
            cbs.append(keras.callbacks.BackupAndRestore(str(self.path / "backup"), delete_checkpoint=False))
        cbs.append(
            keras.callbacks.ModelCheckpoint(str(self.checkpoints / "epoch_{epoch:03d}.weights.h5"), save_weights_only=True)
        )
        if monitor:
            cbs.append(
                keras.callbacks.ModelCheckpoint(
                    str(self.checkpoints / "best.weights.h5"), monitor=monitor, mode=mode, save_best_only=True,
                    save_weights_only=True,
                )
            )
        cbs.append(_ResumableCSVLogger(str(self.history_csv)))
        if tensorboard:
            cbs.append(keras.callbacks.TensorBoard(str(self.path / "logs"), write_graph=False, profile_batch=0))
        return cbs


def _make_csv_logger():
    import keras

    class ResumableCSVLogger(keras.callbacks.CSVLogger):
        """CSVLogger that appends and drops rows of epochs that a resumed run re-does (no duplicated history rows)."""

        def __init__(self, filename):
            super().__init__(filename, append=True)

        def on_train_begin(self, logs=None):
            self._first_epoch_seen = False
            super().on_train_begin(logs)

        def on_epoch_end(self, epoch, logs=None):
            if not self._first_epoch_seen:
                self._first_epoch_seen = True
                self._truncate_from(epoch)
            super().on_epoch_end(epoch, logs)

        def _truncate_from(self, epoch):
            import csv

            if not os.path.exists(self.filename) or self.csv_file is None:
                return
            self.csv_file.flush()
            with open(self.filename, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            if len(rows) <= 1:
                return
            keep = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) < epoch]
            if len(keep) != len(rows):
                self.csv_file.seek(0)
                self.csv_file.truncate()
                csv.writer(self.csv_file).writerows(keep)
                self.csv_file.flush()

    return ResumableCSVLogger


def _ResumableCSVLogger(filename):
    return _make_csv_logger()(filename)


def get_strategy(name: str = "auto"):
    """`tf.distribute` strategy by name: auto (default strategy), mirrored (all local GPUs), multiworker (TF_CONFIG hosts)."""
    import tensorflow as tf

    name = (name or "auto").lower()
    if name in ("auto", "none", "default"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name in ("multiworker", "multi_worker", "multi-worker"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown --distribute {name!r}; use auto, mirrored or multiworker")


def fit(
    model,
    train_data,
    epochs: int,
    run: RunDir,
    validation_data=None,
    callbacks: Iterable = (),
    monitor: Optional[str] = None,
    steps_per_epoch: Optional[int] = None,
    validation_steps: Optional[int] = None,
    verbose: Any = "auto",
    tensorboard: bool = True,
):
    """`model.fit` with the run directory's callbacks (resume, checkpoints, CSV, TensorBoard) plus `callbacks`.

    `train_data` is a `tf.data.Dataset` (or anything `fit` takes as x) or an `(x, y)` tuple of arrays.
    """
    cbs = run.callbacks(monitor=monitor, tensorboard=tensorboard) + list(callbacks)
    x, y = train_data if isinstance(train_data, tuple) and len(train_data) == 2 else (train_data, None)
    return model.fit(
        x,
        y,
        epochs=epochs,
        validation_data=validation_data,
        callbacks=cbs,
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
        verbose=verbose,
    )
