"""The resume state of `MetaLearner.fit_meta`, one job: write it after each meta epoch and read the newest intact one back.

One committed version of a `runner.BackupStore` per epoch (the last two are kept, each with its size and SHA-256): theta
with the moving statistics (`theta-EEEE.weights.h5`), the inner Adam state m / v / t (`adam-EEEE.npz`) and the history. A
re-run resumes after the last completed epoch, falling back to the previous one when the last is damaged; the layout of
earlier versions (`theta.weights.h5`, `adam.npz`, `meta_state.json`) is still read.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from keras_iqa.training.files import weights_writer
from keras_iqa.training.runner import BackupStore, worker_info, _first_line, _h5_problem, log

__all__ = ["open_store", "save_state", "restore_state"]


def open_store(checkpoint_dir: os.PathLike, strategy):
    """The `BackupStore` of `checkpoint_dir`; the non-chief workers of a multi-worker run write a private copy."""
    chief, worker = worker_info(strategy)
    return BackupStore(checkpoint_dir, write_dir=None if chief else tempfile.mkdtemp(prefix=f"keras-iqa-meta{worker}-"))


def save_state(learner, store, epoch: int) -> None:
    """The resume state after `epoch` (0-based) as one committed version of `store`."""
    arrays = [learner._t.numpy()] + [m.numpy() for m in learner._m] + [v.numpy() for v in learner._v]

    def write_adam(path):
        with open(path, "wb") as f:
            np.savez(f, *arrays[1:], t=arrays[0])

    store.save(epoch + 1, {"theta": (".weights.h5", weights_writer(learner.model)), "adam": (".npz", write_adam)},
               history=learner.history)


def _candidates(store) -> list:
    """[(epochs done, label, theta path, adam path, history, problem() or None)], newest first; the layout of earlier
    versions (theta.weights.h5, adam.npz, meta_state.json) last."""
    out = []
    for e in store.entries():
        files = e.get("files", {})
        if "theta" in files and "adam" in files:
            out.append((int(e["epoch"]), files["theta"]["file"], store.path(files["theta"]["file"]),
                        store.path(files["adam"]["file"]), e.get("history", {}), lambda e=e: store.problem(e)))
    legacy = Path(store.dir)
    if (legacy / "meta_state.json").exists() and (legacy / "theta.weights.h5").exists():
        try:
            state = json.loads((legacy / "meta_state.json").read_text(encoding="utf-8"))
            out.append((int(state["epoch"]) + 1, "theta.weights.h5", str(legacy / "theta.weights.h5"),
                        str(legacy / "adam.npz"), state.get("history", {}), None))
        except Exception:
            pass
    return out


def restore_state(learner, store, build: Callable[[], None]) -> int:
    """Loads the newest intact saved state into `learner` (checked against its recorded size and SHA-256; older layouts
    read through) and returns the epochs it completed; damaged versions are skipped with a one-line message. `build()`
    builds the learner's state variables; it is called only when there is something to restore."""
    candidates = _candidates(store)
    if not candidates:
        return 0
    build()
    notes = []
    for done, label, theta, adam_path, history, problem in candidates:
        why = problem() if problem is not None else (lambda w: f"{label} {w}" if w else None)(_h5_problem(theta))
        if why is None:
            try:
                adam = np.load(adam_path)
                n = len(learner._m)
                arrays = [adam[f"arr_{i}"] for i in range(2 * n)], float(adam["t"])
            except Exception as e:
                why = f"{os.path.basename(adam_path)} unreadable ({_first_line(e)})"
        if why:
            notes.append(why)
            continue
        learner.model.load_weights(theta)
        learner.sync_from_model()
        (mv, t) = arrays
        learner._t.assign(t)
        for var, a in zip(learner._m + learner._v, mv):
            var.assign(a)
        learner.history = {key: list(v) for key, v in history.items()}
        if notes:
            log.warning("resume: %s; resuming after meta epoch %d from %s", "; ".join(notes), done, label)
        return done
    log.warning("resume: nothing usable in %s (%s); meta-training starts again from epoch 1", store.dir, "; ".join(notes))
    return 0
