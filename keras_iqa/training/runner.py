"""The common training runner used by every method: run directory, resume, checkpoints, logs, distribution strategy.

A run directory holds:
    config.json      the resolved config            run_info.json  package versions, seed, command line, start time
    history.csv      one row per epoch (appended)   checkpoints/   epoch_XXX.weights.h5 (+ best.weights.h5 with a monitor)
    backup/          the resume state (BackupStore)  logs/          TensorBoard
    model.keras      the final model (`save_final`)  results.json   metrics written by the evaluation code

A run killed at any moment and restarted with the same run directory resumes at the epoch after its last completed one,
without duplicated history rows (`fit` calls `RunDir.restore`, then `model.fit(initial_epoch=...)`). Every file is
written atomically (a temporary name, then a rename; see `BackupStore` for object stores): a kill leaves the previous
version, never a truncated file. `backup/` keeps the last two epochs' weights (both optimizers' state included) with their
size and SHA-256 in `backup/index-EEEE.json`; a damaged or missing backup falls back to the previous one, then to the newest
readable `checkpoints/epoch_XXX.weights.h5`, with a one-line message instead of a traceback.

Multi-worker training (`get_strategy("multiworker")`): every worker runs the same program; the chief writes the run
directory, the other workers write into a temporary folder (they take part in every save, as collective reads need) and
resume from the chief's backup, so the run directory must be on storage that every worker reads.

The parts live in modules of their own, each re-exported here (`keras_iqa.training.runner.NAME` keeps working):
`files` (atomic writes, JSON), `backup` (`BackupStore`), `run_dir` (`RunDir` and its resume), `callbacks` (backup,
checkpoints, CSV history) and `distribute` (strategies, batch checks, the multi-worker workarounds of `fit`).

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

from typing import Any, Iterable, Optional

from keras_iqa.training.backup import BackupStore, _test_seam  # noqa: F401 (re-exported)
from keras_iqa.training.callbacks import (_make_backup_callback, _make_checkpoint_callback,  # noqa: F401
                                          _make_csv_logger, _ResumableCSVLogger)
from keras_iqa.training.distribute import (_STRATEGIES, _multi_worker_fit, check_global_batch,  # noqa: F401
                                           get_strategy, shard_by_data, worker_info)
from keras_iqa.training.files import (_exists, _first_line, _fsync, _gfile_open, _h5_problem, _human,  # noqa: F401
                                      _is_remote, _join, _json_default, _sha256, _size, _write_text, atomic_write,
                                      log, save_json)
from keras_iqa.training.run_dir import RunDir, _build_optimizers, package_versions, set_seed  # noqa: F401

__all__ = ["BackupStore", "RunDir", "atomic_write", "check_global_batch", "fit", "get_strategy", "package_versions",
           "save_json", "set_seed", "shard_by_data", "worker_info"]


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
    """`model.fit` resumed from the run directory (`RunDir.restore`) with its callbacks (backup, checkpoints, CSV,
    TensorBoard) plus `callbacks`.

    `train_data` is a `tf.data.Dataset` (or anything `fit` takes as x) or an `(x, y)` tuple of arrays.
    """
    initial_epoch = run.restore(model)
    cbs = run.callbacks(monitor=monitor, tensorboard=tensorboard) + list(callbacks)
    x, y = train_data if isinstance(train_data, tuple) and len(train_data) == 2 else (train_data, None)
    with _multi_worker_fit(model):
        return model.fit(
            x,
            y,
            epochs=epochs,
            initial_epoch=min(initial_epoch, int(epochs)),
            validation_data=validation_data,
            callbacks=cbs,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            verbose=verbose,
        )
