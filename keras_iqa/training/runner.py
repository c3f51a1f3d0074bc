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
import hashlib
import json
import logging
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from data_pipeline.layout import (BACKUP_DIR, CHECKPOINTS_DIR, CONFIG_FILE, HISTORY_FILE, MODEL_FILE, RESULTS_FILE,
                                  RUN_INFO_FILE)


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
        f.flush()
        os.fsync(f.fileno())
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


log = logging.getLogger("keras_iqa")


# ------------------------------------------------------------------------------------------------ atomic files, backups
def _is_remote(path) -> bool:
    return "://" in str(path)


def _join(directory, name) -> str:
    return f"{str(directory).rstrip('/')}/{name}" if _is_remote(directory) else os.path.join(str(directory), name)


def _sha256(path) -> str:
    h = hashlib.sha256()
    opener = open if not _is_remote(path) else _gfile_open
    with opener(str(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _gfile_open(path, mode):
    import tensorflow as tf

    return tf.io.gfile.GFile(path, mode)


def _exists(path) -> bool:
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def _size(path) -> int:
    if _is_remote(path):
        import tensorflow as tf

        return int(tf.io.gfile.stat(path).length)
    return os.path.getsize(path)


def _fsync(path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write, suffix: str = "") -> None:
    """Writes the file at `path` so that a reader sees the old file or the complete new one, never a part.

    `write(tmp_path)` writes the content to a temporary path (ending in `suffix`, e.g. ".weights.h5", which Keras checks).
    Local paths: temporary name in the same folder, fsync, `os.replace` (atomic on POSIX). Object stores (`gs://`, `s3://`,
    ...; any path with "://"): written to a local temporary file, then uploaded to `path`: an object store publishes an
    object only once its upload completes (write-then-commit), whereas their "rename" is a copy and delete, not atomic.
    """
    path = str(path)
    if _is_remote(path):
        import tensorflow as tf

        local = tempfile.mkdtemp(prefix="keras-iqa-upload-")
        try:
            tmp = os.path.join(local, "upload" + suffix)
            write(tmp)
            tf.io.gfile.copy(tmp, path, overwrite=True)
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return
    folder, name = os.path.split(path)
    stem = name[: -len(suffix)] if suffix and name.endswith(suffix) else name
    tmp = os.path.join(folder, f"{stem}.partial{suffix}")
    write(tmp)
    _fsync(tmp)
    os.replace(tmp, path)


def _write_text(text: str):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write


def _h5_problem(path) -> Optional[str]:
    """None if `path` is a readable HDF5 file (every dataset read through), else what is wrong with it."""
    import h5py

    try:
        with h5py.File(str(path), "r") as f:
            def touch(name, obj):
                if isinstance(obj, h5py.Dataset):
                    obj[()]

            f.visititems(touch)
    except Exception as e:  # truncated / overwritten files raise OSError, KeyError, ...
        return f"unreadable ({_first_line(e)})"
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return str(n)


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
    >>> from keras_iqa.training.runner import BackupStore
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
        import re

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

    def save(self, epoch: int, files: dict, **meta) -> dict:
        """Writes `files` = {name: (suffix, write(path))} as the state after `epoch`, commits it and returns the entry."""
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
        import re

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


def worker_info(strategy=None) -> tuple:
    """(is_chief, task_id) of this process in a multi-worker `strategy` (TF_CONFIG); (True, 0) otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True, 0
    cluster = resolver.cluster_spec().as_dict()
    if not cluster:
        return True, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
    return chief, task_id


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
        """Creates (or reopens, to resume) a run directory; with a multi-worker `strategy` only its chief writes it."""
        chief, worker = worker_info(strategy)
        run = cls(path, chief=chief, worker=worker)
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
        """Saves `model.keras` atomically."""
        tmp = self.path / "model.tmp.keras"
        model.save(tmp)
        os.replace(tmp, self.final_model)
        return self.final_model

    def callbacks(self, monitor: Optional[str] = None, mode: str = "max", tensorboard: bool = True, backup: bool = True) -> list:
        """Backup (resume state), per-epoch weights, best weights (with `monitor`), CSV history and TensorBoard; every
        file written atomically. Resuming is `restore` (which `fit` calls before `model.fit`)."""
        import keras

        # the history row first: a committed backup then always has its epoch's row (a kill between the two leaves a row
        # that the resumed run re-does and drops, never a backup whose row is missing)
        cbs = [_ResumableCSVLogger(str(self.history_csv))]
        if backup:
            cbs.append(_make_backup_callback()(self.backup_store()))
        cbs.append(_make_checkpoint_callback()(self.checkpoints, monitor=monitor, mode=mode))
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
        import re

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


def _build_optimizers(model) -> None:
    """Builds every optimizer of `model` on its variables (`model.optimizer_groups()` for models trained by two), so a
    weights file restores their state too (Keras skips the state of an optimizer that is not built)."""
    from keras_iqa.training.optimizers import build_optimizer_groups

    if hasattr(model, "optimizer_groups"):
        build_optimizer_groups(model.optimizer_groups())
    elif getattr(model, "optimizer", None) is not None:
        build_optimizer_groups([(model.optimizer, model.trainable_variables)])


def _make_backup_callback():
    import keras

    class Backup(keras.callbacks.Callback):
        """Saves the resume state after every epoch into a `BackupStore` (weights with both optimizers' state)."""

        def __init__(self, store: BackupStore):
            super().__init__()
            self.store = store

        def on_epoch_end(self, epoch, logs=None):
            self.store.save(epoch + 1, {"weights": (".weights.h5", lambda p: self.model.save_weights(p))})

    return Backup


def _make_checkpoint_callback():
    import keras

    class Checkpoint(keras.callbacks.Callback):
        """`epoch_XXX.weights.h5` after every epoch and, with `monitor`, `best.weights.h5` (its value in `best.json`, so
        a resumed run keeps its best), each written atomically."""

        def __init__(self, directory, monitor: Optional[str] = None, mode: str = "max"):
            super().__init__()
            if mode not in ("max", "min"):
                raise ValueError(f"checkpoint mode must be 'max' or 'min', got {mode!r}")
            self.dir, self.monitor, self.mode = Path(directory), monitor, mode

        def _save(self, path):
            atomic_write(path, lambda p: self.model.save_weights(p), suffix=".weights.h5")

        def on_epoch_end(self, epoch, logs=None):
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


_STRATEGIES: dict = {}


def get_strategy(name: str = "auto"):
    """`tf.distribute` strategy by name: auto (default strategy), mirrored (all local GPUs; the CPU without GPUs),
    multiworker (the hosts of TF_CONFIG). One instance per name and process (a multi-worker strategy can be created only
    once, before other TensorFlow work: commands create it first)."""
    import tensorflow as tf

    name = (name or "auto").lower()
    if name in ("auto", "none", "default"):
        return tf.distribute.get_strategy()
    key = {"multi_worker": "multiworker", "multi-worker": "multiworker"}.get(name, name)
    if key not in ("mirrored", "multiworker"):
        raise ValueError(f"Unknown --distribute {name!r}; use auto, mirrored or multiworker")
    if key not in _STRATEGIES:
        if key == "mirrored":
            _STRATEGIES[key] = tf.distribute.MirroredStrategy()
        else:
            _STRATEGIES[key] = tf.distribute.MultiWorkerMirroredStrategy()
    return _STRATEGIES[key]


def check_global_batch(batch_size: int, strategy, name: str = "batch_size") -> None:
    """Raises a ValueError unless `batch_size` splits into equal shares over the strategy's replicas (each replica's loss
    is the mean over its share; equal shares make the replica average the mean over the global batch)."""
    replicas = int(getattr(strategy, "num_replicas_in_sync", 1))
    if replicas > 1 and int(batch_size) % replicas:
        raise ValueError(f"{name}={batch_size} does not split into {replicas} equal shares over the {replicas} replicas of "
                         f"--distribute; use a multiple of {replicas} (--set {name}=...)")


def shard_by_data(dataset):
    """`dataset` with `tf.data` auto-sharding by DATA: every worker runs the whole (seeded, identical) pipeline and keeps
    its part of each global batch, so sampler batches (e.g. REQA's quality-bin micro-batches) stay whole; file-based
    sharding would give each worker other files and break them."""
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


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


class _multi_worker_fit:
    """Works around two Keras 3.15 failures of `fit` under `MultiWorkerMirroredStrategy` (for the duration of `fit`):

    - before the first step, Keras's TF trainer reduces a distributed input batch with `strategy.reduce("MEAN", (x, y))`
      for its symbolic build, and the multi-worker strategy rejects a nested value ("Attempt to convert a value
      (PerReplica...) to a Tensor"). A model whose layers are all built needs no symbolic build: the model forgets its
      creation strategy (Keras then takes the current one, `tf.distribute.get_strategy()`, inside the same
      `strategy.scope()`), which skips that step;
    - each step's logs are reduced with `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars ("Invalid
      reduction dimension 0 for input with 0 dimensions"): the steps return each scalar log as a 1-vector, which that
      reduction averages over the workers back to a scalar. Epoch logs still come from every replica's metrics.
    """

    def __init__(self, model):
        import tensorflow as tf

        strategy = getattr(model, "distribute_strategy", None)
        self.model, self.strategy = model, strategy
        self.active = (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and model.built
                       and getattr(model, "_distribute_strategy", None) is strategy)
        self.scope = strategy.scope() if self.active else None

    @staticmethod
    def _vector_logs(step):
        import tensorflow as tf

        def wrapped(data):
            logs = step(data)
            return {k: tf.reshape(v, [1]) if getattr(v, "shape", None) is not None and len(v.shape) == 0 else v
                    for k, v in logs.items()} if isinstance(logs, dict) else logs

        return wrapped

    def __enter__(self):
        if self.active:
            self.scope.__enter__()
            self.model._distribute_strategy = None
            self.model.train_step = self._vector_logs(type(self.model).train_step.__get__(self.model))
            self.model.test_step = self._vector_logs(type(self.model).test_step.__get__(self.model))
        return self

    def __exit__(self, *exc):
        if self.active:
            self.model._distribute_strategy = self.strategy
            for name in ("train_step", "test_step"):
                self.model.__dict__.pop(name, None)
            self.scope.__exit__(*exc)
        return False
