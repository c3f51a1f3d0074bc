"""MetaIQA's fine-tuning recipe and the paper's protocols, one job: what runs after (or instead of) meta-training.

Fine-tuning (Zhu et al. 2020, Sec. 3.2, Eq. 8-9): `finetune` / `compile_for_finetune`, presets "paper" (Adam 1e-5, weight
decay 1e-5, x0.8 every 5 epochs) and "official" (the released fine-tuning script); `load_meta_weights` loads a meta-trained
prior. Protocols, for any model builder and task list (tasks as `RecordReader.metaiqa_tasks` returns them, or in-memory):
`leave_one_distortion_out` (Table 2), `synthetic_to_authentic` (Table 3; the one implementation `keras-iqa train metaiqa`
runs, with a run directory) and `baseline_then_finetune` (Table 4). Metrics come from the shared
`keras_iqa.tasks.evaluate.evaluate`. Public path: `keras_iqa.tasks.metaiqa` (which re-exports all of it).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
import keras

from keras_iqa.optimizers import FusedAdam
from keras_iqa.tasks.evaluate import evaluate, predict_batches
from keras_iqa.training import runner
from keras_iqa.training.files import weights_writer
from keras_iqa.training.meta_learner import MetaLearner, lr_factor

__all__ = [
    "FINETUNE_PRESETS", "compile_for_finetune", "finetune", "load_meta_weights", "predict_batches", "evaluate_model",
    "lodo_splits", "lodo_reference_split", "leave_one_distortion_out", "synthetic_to_authentic", "baseline_then_finetune",
    "tasks_to_dataset",
]


# -------------------------------------------------------------------------------------------------------- fine-tuning
FINETUNE_PRESETS = {
    # paper Sec. 4.2: alpha_f = 1e-5, weight decay 1e-5, x0.8 every 5 epochs, P = 15 (read as 15 epochs, see docs)
    "paper": {"lr": 1e-5, "weight_decay": 1e-5, "epochs": 15, "batch_size": 32, "lr_schedule": "paper"},
    # MetaIQA_FineTune_WILDLIVE.py: Adam 1e-4, no weight decay, 100 epochs, batch 50, cumulative x0.8^(e//10)
    "official": {"lr": 1e-4, "weight_decay": 0.0, "epochs": 100, "batch_size": 50, "lr_schedule": "official-finetune"},
}


def _preset(preset: str) -> dict:
    if preset not in FINETUNE_PRESETS:
        raise ValueError(f"Unknown fine-tuning preset {preset!r}; use one of {sorted(FINETUNE_PRESETS)}")
    return dict(FINETUNE_PRESETS[preset])


def compile_for_finetune(model: keras.Model, preset: str = "paper", lr: Optional[float] = None,
                         weight_decay: Optional[float] = None, beta_2: float = 0.99) -> keras.Model:
    """Compiles `model` with Adam + MSE for fine-tuning (Sec. 3.2, Eq. 8-9). Keras' `weight_decay` is decoupled (AdamW style)."""
    p = _preset(preset)
    lr = p["lr"] if lr is None else float(lr)
    wd = p["weight_decay"] if weight_decay is None else float(weight_decay)
    if preset == "official":
        beta_2 = 0.999
    opt = FusedAdam(learning_rate=lr, beta_1=0.9, beta_2=beta_2, epsilon=1e-8, weight_decay=wd or None)
    model.compile(optimizer=opt, loss="mse")
    return model


def load_meta_weights(model: keras.Model, path: os.PathLike) -> keras.Model:
    """Loads meta-trained weights (`.weights.h5` from `fit_meta`/`save_weights`, or a `.keras` file) into a MetaIQA model."""
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Meta-trained weights not found: {path} (expected a .weights.h5 or .keras file from "
                                f"`keras-iqa train metaiqa`)")
    if path.endswith(".keras"):
        model.set_weights(keras.models.load_model(path, compile=False, safe_mode=True).get_weights())
    else:
        model.load_weights(path)
    return model


def finetune(model: keras.Model, train_data, epochs: Optional[int] = None, preset: str = "paper", lr: Optional[float] = None,
             weight_decay: Optional[float] = None, validation_data=None, run=None, callbacks: Iterable = (),
             verbose: Any = "auto", steps_per_epoch: Optional[int] = None):
    """Fine-tunes a (meta-trained) model on the target task with `model.fit` (paper: Adam 1e-5, wd 1e-5; "official": 1e-4).

    `train_data`: a `tf.data.Dataset` of (images, targets) batches or an (x, y) tuple. With `run` (a `RunDir`) the runner's
    callbacks (checkpoints, CSV history, resume) are used. Returns the Keras `History`.
    """
    p = _preset(preset)
    compile_for_finetune(model, preset, lr=lr, weight_decay=weight_decay)
    epochs = int(p["epochs"] if epochs is None else epochs)
    base_lr = float(model.optimizer.learning_rate.numpy())
    sched = keras.callbacks.LearningRateScheduler(lambda e, _lr: base_lr * lr_factor(p["lr_schedule"], e))
    cbs = [sched] + list(callbacks)
    if run is not None:
        return runner.fit(model, train_data, epochs=epochs, run=run, validation_data=validation_data, callbacks=cbs,
                          steps_per_epoch=steps_per_epoch, verbose=verbose, tensorboard=False)
    x, y = train_data if isinstance(train_data, tuple) and len(train_data) == 2 else (train_data, None)
    return model.fit(x, y, epochs=epochs, validation_data=validation_data, callbacks=cbs, verbose=verbose,
                     steps_per_epoch=steps_per_epoch)

# --------------------------------------------------------------------------------------------------------- evaluation
def evaluate_model(model: keras.Model, data) -> dict:
    """The metrics of `keras_iqa.tasks.evaluate.evaluate` (n, SROCC, KROCC, PLCC, RMSE, ...; NaN correlations and an `error`
    when they are undefined): on a `RecordReader` under the model's test-time contract, or on (x, y) batches."""
    return evaluate(model, data)["metrics"]


# ---------------------------------------------------------------------------------------------------------- protocols
def _task_name(task: dict, i: int) -> str:
    return str(task.get("name", task.get("type", i)))


def lodo_splits(tasks: Sequence[dict], held_out: Optional[Sequence] = None) -> list:
    """Leave-one-distortion-out: [(held_out_task, [the other tasks])], one per held-out type (Table 2).

    `held_out`: restrict to these task names or types (default: every task). Unknown names are errors listing the valid ones.
    """
    names = [_task_name(t, i) for i, t in enumerate(tasks)]
    types = [t.get("type") for t in tasks]
    if len(tasks) < 2:
        raise ValueError(f"leave-one-distortion-out needs at least 2 distortion tasks, got {len(tasks)}")
    if held_out is None:
        idx = list(range(len(tasks)))
    else:
        idx = []
        for h in held_out:
            hits = [i for i, (n, t) in enumerate(zip(names, types)) if h == n or (t is not None and str(h) == str(t))]
            if not hits:
                raise ValueError(f"held-out distortion {h!r} is not a task; tasks: {', '.join(names)}")
            idx += hits
    return [(tasks[i], [t for j, t in enumerate(tasks) if j != i]) for i in idx]


def _task_data(task: dict, part: str):
    """A task's support/query as something `fit` and `predict_batches` take."""
    if part in task:
        return task[part]
    x, y = task[f"{part}_x"], task[f"{part}_y"]
    if isinstance(x, (list, tuple)):
        return tf.data.Dataset.from_tensor_slices((tf.concat(list(x), 0), tf.concat(list(y), 0))).batch(32)
    return tf.data.Dataset.from_tensors((x, y))


def lodo_reference_split(ids: Sequence[str], references: Sequence[str], fraction: float = 0.8, seed: int = 0) -> tuple:
    """(fine-tune ids, test ids) of one distortion type's images, split by REFERENCE: round(fraction x references)
    references (at least one, and at least one left) go to fine-tuning with all their images, the rest to the test.
    No reference image has versions on both sides (raises if `references` cannot give that, e.g. a single reference)."""
    ids, refs = [str(i) for i in ids], [str(r) for r in references]
    if len(ids) != len(refs):
        raise ValueError(f"{len(ids)} ids but {len(refs)} references")
    uniq = sorted(set(refs))
    if len(uniq) < 2 or "" in uniq:
        raise ValueError(f"a reference-disjoint fine-tune/test split needs >= 2 known references, got {uniq[:5]}")
    n_ft = min(max(int(round(fraction * len(uniq))), 1), len(uniq) - 1)
    ft_refs = set(np.asarray(uniq)[np.random.default_rng(seed).permutation(len(uniq))[:n_ft]].tolist())
    ft = [i for i, r in zip(ids, refs) if r in ft_refs]
    test = [i for i, r in zip(ids, refs) if r not in ft_refs]
    return ft, test


def _all_images(task: dict):
    """Every image of an in-memory / dataset task (support + query): the held-out type's test set."""
    parts = [_task_data(task, p) for p in ("support", "query") if p in task or f"{p}_x" in task]
    parts = [p for p in parts if p is not None]
    ds = parts[0]
    for p in parts[1:]:
        ds = ds.concatenate(p)
    return ds


def leave_one_distortion_out(tasks: Sequence[dict], build_model: Callable[[], keras.Model], held_out=None,
                             meta: Optional[dict] = None, fit: Optional[dict] = None, tune: Optional[dict] = None,
                             finetune_on_held_out: bool = False, held_out_data: Optional[Callable] = None):
    """Table 2, leave-one-distortion-out, as the paper's text describes it (Zhu et al. 2020, Sec. 4.4): "suppose there are N
    kinds of distortions in a database, we use (N-1) kinds of distortions for training and the remaining one kind of
    distortion is used for performance test."

    Default (the paper): for each held-out type, meta-train a fresh model on the other N-1 types' tasks, then test it,
    WITHOUT fine-tuning, on every image of the held-out type. With `held_out_data` the test set is a `RecordReader`, so
    the model's test-time contract (its crops, averaging and resize) is used; in-memory tasks are scored on their
    support + query samples, one forward each.

    `finetune_on_held_out=True` (an option, not in the paper's text): fine-tune on part of the held-out type and test on
    the rest, split by reference so that no reference image has versions in both the fine-tune and the test set. It needs
    `held_out_data`.

    Args:
        meta: MetaLearner kwargs; fit: `fit_meta` kwargs (e.g. epochs); tune: `finetune` kwargs (preset, epochs).
        held_out_data: `fn(task, finetune_on_held_out) -> {"test": data, "finetune": data or None, "finetune_steps":
            steps per epoch of a repeated fine-tune dataset (optional), **info}`; `info` (e.g. image / reference counts) is
            copied into the row.

    Returns a DataFrame (held_out, finetuned, srocc, plcc, rmse, n, ...).
    """
    if finetune_on_held_out and held_out_data is None:
        raise ValueError("finetune_on_held_out needs held_out_data (the held-out type's images with their references, "
                         "to split them by reference)")
    rows = []
    for target, others in lodo_splits(tasks, held_out):
        model = build_model()
        learner = MetaLearner(model, **(meta or {}))
        learner.fit_meta(others, **{"epochs": 1, "verbose": 0, **(fit or {})})
        data = dict(held_out_data(target, finetune_on_held_out)) if held_out_data else {"test": _all_images(target)}
        test = data.pop("test")
        ft, ft_steps = data.pop("finetune", None), data.pop("finetune_steps", None)
        if finetune_on_held_out:
            finetune(model, ft, **{"verbose": 0, **(tune or {}), **({"steps_per_epoch": ft_steps} if ft_steps else {})})
        res = {k: v for k, v in evaluate_model(model, test).items() if not isinstance(v, dict)}  # one CSV row: scalars
        rows.append({"held_out": _task_name(target, 0), "finetuned": bool(finetune_on_held_out), **data, **res})
    return pd.DataFrame(rows)


def synthetic_to_authentic(meta_tasks: Sequence[dict], build_model: Callable[[], keras.Model], train_data, test_data,
                           meta: Optional[dict] = None, fit: Optional[dict] = None, tune: Optional[dict] = None,
                           model: Optional[keras.Model] = None, run=None, run_config: Any = None) -> dict:
    """Table 3: meta-train on synthetic distortion tasks (TID2013 + KADID-10k), fine-tune on an authentic training split,
    test on its test split (`test_data`: a RecordReader or (x, y) batches). `train_data=None` stops after meta-training.

    With `run` (a `RunDir`, as `keras-iqa train metaiqa` passes it) the meta-training writes `run/meta/` (history.csv, the
    resume state `meta_state/`, `meta.weights.h5`) and the fine-tuning `run/finetune/` (the runner's checkpoints, history
    and resume); `run_config` is the config written into both. Returns {"meta": history, "meta_traces": the learner's
    trace counts, "test": metrics (after fine-tuning), "model": the model}.
    """
    model = model or build_model()
    learner = MetaLearner(model, **(meta or {}))
    fit = {"epochs": 1, "verbose": 0, **(fit or {})}
    meta_run = None
    if run is not None:
        meta_run = runner.RunDir.create(run.shared / "meta", config=run_config, strategy=learner.strategy)
        fit["callbacks"] = meta_run.callbacks(backup=False, tensorboard=False) + list(fit.get("callbacks", ()))
        fit.setdefault("checkpoint_dir", meta_run.shared / "meta_state")
    out = {"meta": learner.fit_meta(meta_tasks, **fit), "model": model}
    out["meta_traces"] = dict(learner.trace_counts)
    if meta_run is not None:
        runner.atomic_write(meta_run.path / "meta.weights.h5", weights_writer(model), suffix=".weights.h5")
    if train_data is not None:
        ft_run = None
        if run is not None:
            ft_run = runner.RunDir.create(run.shared / "finetune", config=run_config, strategy=learner.strategy)
        finetune(model, train_data, run=ft_run, **{"verbose": 0, **(tune or {})})
        out["test"] = evaluate_model(model, test_data)
    return out


def tasks_to_dataset(tasks: Sequence[dict]):
    """All images of all tasks (support + query) as one dataset of (x, y) batches: the Table 4 baseline's training data."""
    parts = [_task_data(t, p) for t in tasks for p in ("support", "query")]
    ds = parts[0]
    for p in parts[1:]:
        ds = ds.concatenate(p)
    return ds


def baseline_then_finetune(synthetic_data, build_model: Callable[[], keras.Model], train_data, test_data,
                           pretrain_epochs: int = 1, pretrain_lr: float = 1e-4, tune: Optional[dict] = None,
                           shuffle_buffer: int = 0, verbose: Any = 0) -> dict:
    """Table 4 "Baseline": the same network trained with plain Adam (lr `pretrain_lr`, beta_2 0.99) on all distortion-specific
    images (a dataset of (x, y) batches, or a task list), then fine-tuned and tested exactly like MetaIQA."""
    if isinstance(synthetic_data, (list, tuple)) and synthetic_data and isinstance(synthetic_data[0], dict):
        synthetic_data = tasks_to_dataset(synthetic_data)
    if shuffle_buffer:
        synthetic_data = synthetic_data.shuffle(shuffle_buffer)
    model = build_model()
    model.compile(optimizer=FusedAdam(pretrain_lr, beta_2=0.99), loss="mse")
    hist = model.fit(synthetic_data, epochs=int(pretrain_epochs), verbose=verbose)
    finetune(model, train_data, **{"verbose": 0, **(tune or {})})
    return {"pretrain": hist.history, "test": evaluate_model(model, test_data), "model": model}
