"""The bi-level first-order meta-learner of MetaIQA (Algorithm 1), one job: meta-train any Keras regression model.

`MetaLearner(model)` works for ANY Keras regression model (image in, one score out). For a meta-batch of k tasks
(Zhu et al. 2020, Alg. 1, Eq. 4-7):

    for each task i:   theta_i' = S Adam steps from theta on the support set   (fresh Adam state: m = v = 0, t = 0)
                       theta_i  = S Adam steps from theta_i' on the query set  (fresh Adam state again)
    theta <- theta - beta * (1/k) * sum_i (theta - theta_i)                    (first order, Eq. 7)

Adam is the Keras Adam update written out in TF ops over the variable lists (so the state can be reset per phase):
`m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`, with an optional
coupled L2 term `g += weight_decay * w` (PyTorch Adam's `weight_decay`, the paper's 1e-5).

Where the state lives:
- fast weights = the model's own trainable variables (the forward pass uses them directly);
- theta (meta weights), the sum of theta_i over the meta-batch, Adam m / v / t, and both learning rates are `tf.Variable`s;
- one `tf.function` runs a whole task (copy theta -> model, S support steps, S query steps, accumulate theta_i) with a
  `tf.while_loop` over steps; a second applies the outer update. Both are traced once (`trace_counts` shows it); batches of
  any sizes are packed into one tensor + row offsets so shapes never retrace.
- non-trainable state (BatchNorm moving mean / variance, dropout seeds) is NOT part of theta: the model keeps updating its
  moving statistics through every inner step of every task and they are never reset or averaged (what the official code
  does: its working model keeps its own running statistics). After `meta_step` the model holds theta plus these running
  statistics; `k = 1, beta = 1` is therefore exactly 2*S plain sequential Adam steps, moving statistics included (tested).

Multi-device (`tf.distribute`, a model built under a mirrored strategy): each meta-batch's tasks are spread over the
replicas and N replicas take the same step as one device (`keras_iqa.training.meta_replicas`); the official code's
persistent Adam state runs through the tasks one after another and cannot be split (`adam_state="persistent"` is
single-device only).

`MetaLearner.fit_meta` adds epochs, callbacks, a progress bar, LR decay and checkpoints with resume
(`keras_iqa.training.meta_state`). Fine-tuning and the paper's protocols (Tables 2-4) are MetaIQA's task:
`keras_iqa.tasks.metaiqa`.

Example:
>>> import numpy as np
>>> import keras_iqa
>>> model = keras_iqa.create_model("metaiqa-tiny")
>>> learner = MetaLearner(model, inner_steps=2, inner_lr=1e-4, outer_lr=1e-2)  # paper: inner_steps=6
>>> rng = np.random.default_rng(0)
>>> def batch(n):  # n crops in [0, 255] and their scores
...     return rng.uniform(0, 255, (n, 64, 64, 3)).astype("float32"), rng.uniform(0, 1, (n, 1)).astype("float32")
>>> (xs, ys), (xq, yq) = batch(4), batch(4)
>>> task = {"support_x": xs, "support_y": ys, "query_x": xq, "query_y": yq}
>>> loss = learner.meta_step([task, task])  # k = 2 tasks; the mean query loss
>>> isinstance(loss, float) and loss >= 0
True
>>> # one task per distortion type of a prepared synthetic dataset (`keras-iqa prepare`):
>>> learner.fit_meta(reader.metaiqa_tasks(batch_size=32), epochs=100, checkpoint_dir="runs/meta/state")  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import keras

from keras_iqa.caller import setting
from keras_iqa.training import meta_state
from keras_iqa.training.meta_replicas import ReplicatedMetaStep

__all__ = ["MetaLearner", "lr_factor"]


# ----------------------------------------------------------------------------------------------------------- schedules
def lr_factor(schedule: Union[str, Callable[[int], float], None], epoch: int) -> float:
    """Multiplier of the initial learning rates at `epoch` (0-based).

    "paper": x0.8 every 5 epochs (Sec. 4.2): 0.8 ** (epoch // 5).
    "official": the released code's cumulative decay, lr_e = lr_0 * prod_{j<=e} 0.9 ** (j // 2) (meta-training script).
    "official-finetune": cumulative 0.8 ** (j // 10) (fine-tuning script).  "constant" / None: 1.  A callable: its value.
    """
    if schedule is None or schedule == "constant":
        return 1.0
    if callable(schedule):
        return float(schedule(epoch))
    if schedule == "paper":
        return 0.8 ** (epoch // 5)
    if schedule == "official":
        return float(np.prod([0.9 ** (j // 2) for j in range(epoch + 1)]))
    if schedule == "official-finetune":
        return float(np.prod([0.8 ** (j // 10) for j in range(epoch + 1)]))
    raise ValueError(f"Unknown LR schedule {schedule!r}; use 'paper', 'official', 'official-finetune', 'constant' or a callable")


# ------------------------------------------------------------------------------------------------------------ learner
def _as_batches(v, what: str) -> list:
    if isinstance(v, (list, tuple)):
        if not v:
            raise ValueError(f"task {what!r} is an empty list of batches")
        return list(v)
    return [v]


def _pack(batches: list):
    """Batches of possibly different sizes -> (concatenated tensor, int32 row offsets [n + 1])."""
    sizes = [int(tf.shape(b)[0]) for b in batches]
    if min(sizes) <= 0:
        raise ValueError(f"a task holds an empty batch (batch sizes {sizes})")
    flat = batches[0] if len(batches) == 1 else tf.concat(batches, axis=0)
    return flat, tf.constant(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))


class MetaLearner(ReplicatedMetaStep):
    """Bi-level first-order meta-learner of MetaIQA (Algorithm 1) for any Keras regression model.

    Args:
        model: a built-or-unbuilt `keras.Model` mapping a batch of inputs to scores [B] or [B, 1].
        inner_steps: S, Adam steps per phase (support, then query); paper 6.
        inner_lr: alpha, inner Adam learning rate; paper 1e-4.
        outer_lr: beta, outer (meta) learning rate; paper 1e-2.
        beta_1, beta_2, epsilon: Adam constants; paper 0.9, 0.99, 1e-8 (the official code uses beta_2 0.999).
        loss: "mse" (paper, squared Euclidean distance) or any Keras loss name / callable(y_true, y_pred).
        weight_decay: coupled L2 added to the inner gradients (PyTorch Adam `weight_decay`); paper 1e-5, default 0.
        adam_state: "fresh" (paper: m = v = 0, t = 0 at the start of every support and every query phase) or "persistent"
            (one Adam state carried across phases and tasks, as the official code's single optimiser).

    Example:
    >>> import keras
    >>> import numpy as np
    >>> x, y = np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")
    >>> learner = MetaLearner(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]), inner_steps=2)
    >>> loss = learner.meta_step([{"support_x": x, "support_y": y, "query_x": x, "query_y": y}])
    >>> type(loss).__name__
    'float'
    """

    def __init__(self, model: keras.Model, inner_steps: int = 6, inner_lr: float = 1e-4, outer_lr: float = 1e-2,
                 beta_1: float = 0.9, beta_2: float = 0.99, epsilon: float = 1e-8, loss: Any = "mse",
                 weight_decay: float = 0.0, adam_state: str = "fresh"):
        if int(inner_steps) < 1:
            raise ValueError(f"inner_steps (S) must be >= 1, got {inner_steps!r}")
        if adam_state not in ("fresh", "persistent"):
            raise ValueError(f"adam_state must be 'fresh' (paper) or 'persistent' (official code), got {adam_state!r}")
        for name, val in (("inner_lr", inner_lr), ("outer_lr", outer_lr), ("epsilon", epsilon)):
            if not float(val) > 0:
                raise ValueError(f"{name} must be > 0, got {val!r}")
        self.model = model
        self.inner_steps = int(inner_steps)
        self.initial_inner_lr, self.initial_outer_lr = float(inner_lr), float(outer_lr)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.weight_decay = float(weight_decay)
        self.adam_state = adam_state
        self.loss_fn = keras.losses.get(loss) if isinstance(loss, str) else loss
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "loss")
        self.inner_lr = tf.Variable(self.initial_inner_lr, trainable=False, dtype=tf.float32, name="meta_inner_lr")
        self.outer_lr = tf.Variable(self.initial_outer_lr, trainable=False, dtype=tf.float32, name="meta_outer_lr")
        self.trace_counts = collections.Counter()
        self.history: dict = {}
        self._built = False

    # -- state ----------------------------------------------------------------------------------------------------
    @property
    def strategy(self):
        """The `tf.distribute` strategy the model was built under (Keras's default one-device strategy otherwise)."""
        return getattr(self.model, "distribute_strategy", None) or tf.distribute.get_strategy()

    @property
    def distributed(self) -> bool:
        """True when the model lives under a `tf.distribute` strategy: meta steps spread the tasks over its replicas."""
        return type(self.strategy).__name__ != "_DefaultDistributionStrategy"

    def _build(self, x_example, y_example):
        if self._built:
            return
        if self.distributed and self.adam_state != "fresh":
            raise NotImplementedError(
                "MetaLearner under tf.distribute needs adam_state='fresh' (the paper's): the official code's persistent "
                "Adam state runs through the tasks one after another and cannot be split over replicas (use one device, "
                f"or {setting('adam_state', 'fresh')})")
        if not self.model.built:
            with self.strategy.scope():
                self.model(x_example[:1])
        self._vars = list(self.model.trainable_variables)
        if not self._vars:
            raise ValueError("MetaLearner: the model has no trainable variables")

        def like(v, tag):
            return tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"{tag}_{v.name.replace('/', '_')}")

        self.theta = [tf.Variable(tf.convert_to_tensor(v), trainable=False, name=f"theta_{i}") for i, v in enumerate(self._vars)]
        self._acc = [like(v, "acc") for v in self._vars]
        self._m = [like(v, "adam_m") for v in self._vars]
        self._v = [like(v, "adam_v") for v in self._vars]
        self._t = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="adam_t")
        self._nt_vars = list(self.model.non_trainable_variables)
        x_spec = tf.TensorSpec([None] + list(x_example.shape[1:]), x_example.dtype)
        y_spec = tf.TensorSpec([None] + list(y_example.shape[1:]), y_example.dtype)
        o_spec = tf.TensorSpec([None], tf.int32)
        self._task_fn = tf.function(self._task, input_signature=[x_spec, y_spec, o_spec, x_spec, y_spec, o_spec])
        self._outer_fn = tf.function(self._outer, input_signature=[tf.TensorSpec([], tf.float32)])
        self._sync_fn = tf.function(self._sync_theta_from_model, input_signature=[])
        self._dist_fn = tf.function(self._dist_meta, input_signature=[x_spec, y_spec, o_spec, o_spec] * 2)
        self._built = True

    def _sync_theta_from_model(self):
        self.trace_counts["sync"] += 1
        for th, v in zip(self.theta, self._vars):
            th.assign(v)
        return tf.constant(0)

    def sync_from_model(self):
        """theta <- the model's current weights (after loading weights into the model, e.g. on resume)."""
        if self._built:
            self._sync_fn()

    # -- compiled pieces ------------------------------------------------------------------------------------------
    def _reset_adam(self):
        for m, v in zip(self._m, self._v):
            m.assign(tf.zeros_like(m))
            v.assign(tf.zeros_like(v))
        self._t.assign(0.0)

    def _loss(self, x, y):
        pred = self.model(x, training=True)
        y = tf.reshape(tf.cast(y, pred.dtype), tf.shape(pred))
        loss = tf.reduce_mean(self.loss_fn(y, pred))
        if self.model.losses:
            loss = loss + tf.add_n([tf.cast(l, loss.dtype) for l in self.model.losses])
        return loss

    def _adam_step(self, x, y):
        """One Keras-Adam step on the fast weights (Eq. 4-5 with bias correction)."""
        with tf.GradientTape() as tape:
            loss = self._loss(x, y)
        grads = tape.gradient(loss, self._vars)
        self._t.assign_add(1.0)
        t = self._t
        lr = self.inner_lr * tf.sqrt(1.0 - tf.pow(self.beta_2, t)) / (1.0 - tf.pow(self.beta_1, t))
        for w, g, m, v in zip(self._vars, grads, self._m, self._v):
            if g is None:
                continue
            g = tf.convert_to_tensor(g)
            if self.weight_decay:
                g = g + self.weight_decay * w
            m.assign_add((g - m) * (1.0 - self.beta_1))
            v.assign_add((tf.square(g) - v) * (1.0 - self.beta_2))
            w.assign_sub(tf.cast(lr, w.dtype) * m / (tf.sqrt(v) + self.epsilon))
        return loss

    def _phase(self, x, y, offsets):
        """S Adam steps cycling over the packed batches; returns the mean loss over the S steps."""
        if self.adam_state == "fresh":
            self._reset_adam()
        n = tf.shape(offsets)[0] - 1
        total = tf.constant(0.0)
        for s in tf.range(self.inner_steps):
            j = s % n
            lo, hi = offsets[j], offsets[j + 1]
            total += tf.cast(self._adam_step(x[lo:hi], y[lo:hi]), tf.float32)
        return total / float(self.inner_steps)

    def _task(self, sx, sy, so, qx, qy, qo):
        self.trace_counts["task"] += 1  # Python side effect: runs only while tracing
        for w, th in zip(self._vars, self.theta):
            w.assign(th)
        support_loss = self._phase(sx, sy, so)
        query_loss = self._phase(qx, qy, qo)
        for a, w in zip(self._acc, self._vars):
            a.assign_add(w)
        return support_loss, query_loss

    def _outer(self, k):
        """theta <- theta - beta * mean_i(theta - theta_i) (Eq. 7); then the model holds theta again."""
        self.trace_counts["outer"] += 1
        for th, a, w in zip(self.theta, self._acc, self._vars):
            th.assign_sub(tf.cast(self.outer_lr, th.dtype) * (th - a / tf.cast(k, th.dtype)))
            a.assign(tf.zeros_like(a))
            w.assign(th)
        return tf.constant(0)


    # -- public API -----------------------------------------------------------------------------------------------
    def meta_step(self, tasks: Sequence[dict]) -> float:
        """One meta-iteration over `tasks` (k = len(tasks)); returns the mean query loss (over tasks and the S query steps).

        Each task is a dict with `support_x, support_y, query_x, query_y`: one batch each (reused for the S steps) or lists
        of batches (cycled; sizes may differ).
        """
        if not tasks:
            raise ValueError("meta_step needs at least one task")
        packed = []
        for i, task in enumerate(tasks):
            missing = [k for k in ("support_x", "support_y", "query_x", "query_y") if k not in task]
            if missing:
                raise ValueError(f"task {i} lacks {missing}; each task needs support_x, support_y, query_x, query_y "
                                 f"(got keys {sorted(task)})")
            row = []
            for part in ("support", "query"):
                xs = [tf.convert_to_tensor(b) for b in _as_batches(task[f"{part}_x"], f"{part}_x")]
                ys = [tf.convert_to_tensor(b) for b in _as_batches(task[f"{part}_y"], f"{part}_y")]
                if len(xs) != len(ys):
                    raise ValueError(f"task {i}: {len(xs)} {part}_x batches but {len(ys)} {part}_y batches")
                xs = [tf.cast(x, tf.float32) if x.dtype.is_integer or x.dtype == tf.float64 else x for x in xs]
                ys = [tf.cast(y, tf.float32) for y in ys]
                (x, xo), (y, _) = _pack(xs), _pack(ys)
                row += [x, y, xo]
            packed.append(row)
        self._build(packed[0][0], packed[0][1])
        if self.distributed:
            return self._meta_step_distributed([{"support": row[:3], "query": row[3:]} for row in packed])
        q_losses = [self._task_fn(*row)[1] for row in packed]
        self._outer_fn(tf.constant(float(len(packed))))
        return float(tf.reduce_mean(tf.stack(q_losses)))

    def set_lr_factor(self, factor: float):
        """Sets both learning rates to factor x their initial values (no retracing: they are variables)."""
        self.inner_lr.assign(self.initial_inner_lr * factor)
        self.outer_lr.assign(self.initial_outer_lr * factor)

    def fit_meta(self, tasks: Sequence[dict], epochs: Optional[int] = None, meta_iterations: Optional[int] = None,
                 callbacks: Iterable = (), tasks_per_batch: int = 5, iterations_per_epoch: Optional[int] = None,
                 batches_per_visit: Optional[int] = None, lr_schedule: Union[str, Callable, None] = "paper",
                 checkpoint_dir: Optional[os.PathLike] = None, eval_fn: Optional[Callable] = None, seed: Optional[int] = 0,
                 verbose: int = 1) -> dict:
        """Meta-trains over `tasks`; returns the history dict {metric: [per-epoch values]}.

        Args:
            tasks: list of tasks as `RecordReader.metaiqa_tasks` returns them (dicts with "support" / "query" `tf.data` datasets
                of (x, y) batches, plus "name"/"type") or in `meta_step` form (support_x, ...).
            epochs / meta_iterations: how long; an epoch is `iterations_per_epoch` meta-iterations (default
                ceil(#tasks / k): every task visited once per epoch in a shuffled order, the last meta-batch may be smaller).
            callbacks: Keras callbacks (ModelCheckpoint, CSVLogger, ...) called with epoch logs; the model holds theta.
            tasks_per_batch: k (paper 5).
            batches_per_visit: batches drawn per task visit from each of its (repeated) datasets; default S, so each inner
                step sees a new batch, cycling through the support / query set.
            lr_schedule: "paper" (x0.8 every 5 epochs), "official", "constant" or callable(epoch) -> factor; applied to both LRs.
            checkpoint_dir: resume state (weights of theta + BN statistics, Adam state, epoch, history) of the last two
                epochs, each committed atomically with its size and SHA-256 (`runner.BackupStore`); a re-run resumes after
                the last completed epoch, falling back to the previous one if the last is damaged.
            eval_fn: callable(model) -> dict of extra epoch logs (e.g. SROCC on a validation set).
            seed: task order and sampling seed.
        """
        if not tasks:
            raise ValueError("fit_meta needs at least one task")
        k = int(tasks_per_batch)
        if k < 1:
            raise ValueError(f"tasks_per_batch (k) must be >= 1, got {tasks_per_batch!r}")
        ipe = int(iterations_per_epoch or math.ceil(len(tasks) / k))
        if epochs is None and meta_iterations is None:
            raise ValueError("fit_meta: give epochs or meta_iterations")
        total_iters = int(meta_iterations) if meta_iterations is not None else None
        n_epochs = int(epochs) if epochs is not None else math.ceil(total_iters / ipe)
        per_visit = int(batches_per_visit or self.inner_steps)
        sources = [_TaskSource(t, i) for i, t in enumerate(tasks)]

        start_epoch, state_dir = 0, Path(checkpoint_dir) if checkpoint_dir else None
        store = None
        if state_dir is not None:
            store = meta_state.open_store(state_dir, self.strategy)
            start_epoch = meta_state.restore_state(self, store, lambda: self._build_from(sources[0].draw(per_visit)))
        base_seed = int(seed) if seed is not None else int(np.random.SeedSequence().entropy % 2**31)
        cbs = keras.callbacks.CallbackList(list(callbacks), add_history=False, add_progbar=verbose > 0, model=self.model,
                                           verbose=verbose, epochs=n_epochs, steps=ipe)
        self.model.stop_training = False
        cbs.on_train_begin()
        done = start_epoch * ipe
        for epoch in range(start_epoch, n_epochs):
            self.set_lr_factor(lr_factor(lr_schedule, epoch))
            cbs.on_epoch_begin(epoch)
            rng = np.random.default_rng([base_seed, epoch])  # per-epoch stream: a resumed run draws the same task order
            if iterations_per_epoch is None:  # one pass over the tasks in a shuffled order; the last meta-batch may be smaller
                perm = rng.permutation(len(sources))
                chunks = [perm[i * k:(i + 1) * k] for i in range(ipe)]
            else:
                stream = np.concatenate([rng.permutation(len(sources)) for _ in range(math.ceil(ipe * k / len(sources)))])
                chunks = [stream[i * k:(i + 1) * k] for i in range(ipe)]
            losses = []
            for it, chosen in enumerate(chunks):
                if total_iters is not None and done >= total_iters:
                    break
                cbs.on_train_batch_begin(it)
                batch = [sources[j].draw(per_visit) for j in chosen]
                loss = self.meta_step(batch)
                losses.append(loss)
                done += 1
                cbs.on_train_batch_end(it, {"query_loss": loss})
            logs = {"query_loss": float(np.mean(losses)) if losses else float("nan"),
                    "inner_lr": float(self.inner_lr.numpy()), "outer_lr": float(self.outer_lr.numpy())}
            if eval_fn is not None:
                logs.update({key: float(v) for key, v in eval_fn(self.model).items()})
            for key, v in logs.items():
                self.history.setdefault(key, []).append(v)
            cbs.on_epoch_end(epoch, logs)
            if store is not None:
                meta_state.save_state(self, store, epoch)
            if self.model.stop_training or (total_iters is not None and done >= total_iters):
                break
        cbs.on_train_end()
        return self.history

    def _build_from(self, task: dict):
        """Builds the state variables from a task's first support batch (before a resume loads into them)."""
        x = tf.convert_to_tensor(_as_batches(task["support_x"], "support_x")[0])
        y = tf.convert_to_tensor(_as_batches(task["support_y"], "support_y")[0])
        self._build(tf.cast(x, tf.float32) if x.dtype.is_integer else x, tf.cast(y, tf.float32))


class _TaskSource:
    """Draws batches for one task: from repeated `tf.data` iterators (reader tasks) or fixed arrays (in-memory tasks)."""

    def __init__(self, task: dict, index: int):
        self.task, self.index = task, index
        if "support" in task and "query" in task:
            if task["support"] is None or task["query"] is None:
                part = "support" if task["support"] is None else "query"
                raise ValueError(f"task {index} ({task.get('name', '?')}) has no {part} set (too few images of this "
                                 "distortion type); drop it from the task list")
            self._it = {p: iter(task[p].repeat()) for p in ("support", "query")}
        elif all(key in task for key in ("support_x", "support_y", "query_x", "query_y")):
            self._it = None
        else:
            raise ValueError(f"task {index} ({task.get('name', '?')}): expected keys 'support'/'query' (tf.data datasets) or "
                             f"support_x/support_y/query_x/query_y, got {sorted(task)}")

    def draw(self, n: int) -> dict:
        if self._it is None:
            return self.task
        out = {}
        for part in ("support", "query"):
            xs, ys = zip(*[next(self._it[part]) for _ in range(n)])
            out[f"{part}_x"], out[f"{part}_y"] = list(xs), list(ys)
        return out
