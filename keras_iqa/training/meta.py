"""MetaIQA training: the bi-level first-order meta-learner (Algorithm 1), fine-tuning, and the paper's protocols.

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

Multi-device (`tf.distribute`: a model built under `MirroredStrategy` / `MultiWorkerMirroredStrategy`): every replica gets
the meta-batch and adapts its share of the tasks (task i on replica i mod N) with `keras.Model.stateless_call` on fast
weights held as tensors (the model's mirrored variables stay theta); the replicas' sums of theta_i are all-reduced and the
outer update is applied once, so N replicas take the same step as one device (tested to 1e-5). Moving statistics: each
replica carries them through its tasks in order; afterwards they are averaged over the replicas, weighted by their task
counts (one replica: exactly the sequential single-device statistics). The official code's persistent Adam state runs
through the tasks one after another and cannot be split: `adam_state="persistent"` is single-device only.

Besides `MetaLearner.fit_meta` (epochs, callbacks, progress bar, LR decay, checkpoints and resume), this module holds
fine-tuning (`finetune`, presets "paper" / "official"), evaluation helpers, and the protocols of the paper:
`leave_one_distortion_out` (Table 2: meta-train on N-1 types, test on the held-out one), `synthetic_to_authentic`
(Table 3) and `baseline_then_finetune` (Table 4).

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
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import keras

from keras_iqa.training.optimizers import FusedAdam

__all__ = [
    "MetaLearner", "lr_factor", "FINETUNE_PRESETS", "compile_for_finetune", "finetune", "load_meta_weights",
    "predict_batches", "evaluate_model", "lodo_splits", "lodo_reference_split", "leave_one_distortion_out",
    "synthetic_to_authentic", "baseline_then_finetune", "tasks_to_dataset",
]


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


class MetaLearner:
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
                "Adam state runs through the tasks one after another and cannot be split over replicas (use one device "
                "with --preset official, or --set adam_state=fresh)")
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

    # -- multi-device (tf.distribute) ------------------------------------------------------------------------------
    def _stateless_phase(self, w, nt, x, y, offsets, lo_batch, hi_batch):
        """S fresh-state Adam steps (as `_phase`) on fast weights `w` (tensors) with `stateless_call`, cycling over the
        batches lo_batch..hi_batch-1 of the packed `x`, `y`; returns (w, non-trainable state, mean loss)."""
        n = hi_batch - lo_batch
        m = [tf.zeros_like(a) for a in w]
        v = [tf.zeros_like(a) for a in w]
        total = tf.constant(0.0)
        for s in tf.range(self.inner_steps):
            j = lo_batch + s % n
            xb, yb = x[offsets[j]:offsets[j + 1]], y[offsets[j]:offsets[j + 1]]
            with tf.GradientTape() as tape:
                tape.watch(w)
                pred, nt, extra = self.model.stateless_call(w, nt, xb, training=True, return_losses=True)
                yb = tf.reshape(tf.cast(yb, pred.dtype), tf.shape(pred))
                loss = tf.reduce_mean(self.loss_fn(yb, pred))
                if extra:
                    loss = loss + tf.add_n([tf.cast(e, loss.dtype) for e in extra])
            grads = tape.gradient(loss, w)
            t = tf.cast(s + 1, tf.float32)
            lr = self.inner_lr * tf.sqrt(1.0 - tf.pow(self.beta_2, t)) / (1.0 - tf.pow(self.beta_1, t))
            new_w, new_m, new_v = [], [], []
            for wi, g, mi, vi in zip(w, grads, m, v):
                if g is None:
                    new_w.append(wi), new_m.append(mi), new_v.append(vi)
                    continue
                g = tf.convert_to_tensor(g)
                if self.weight_decay:
                    g = g + self.weight_decay * wi
                mi = mi + (g - mi) * (1.0 - self.beta_1)
                vi = vi + (tf.square(g) - vi) * (1.0 - self.beta_2)
                new_w.append(wi - tf.cast(lr, wi.dtype) * mi / (tf.sqrt(vi) + self.epsilon))
                new_m.append(mi), new_v.append(vi)
            w, m, v = new_w, new_m, new_v
            total += tf.cast(loss, tf.float32)
        return w, nt, total / float(self.inner_steps)

    def _replica_tasks(self, sx, sy, so, st, qx, qy, qo, qt):
        """This replica's tasks (i = replica id, + N, ...): their theta_i summed, with count, query loss and the moving
        statistics after them; all-reduced over the replicas."""
        ctx = tf.distribute.get_replica_context()
        rid, replicas = ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync
        theta = [tf.identity(v.value) for v in self._vars]
        nt = [tf.identity(v.value) for v in self._nt_vars]
        acc = [tf.zeros_like(a) for a in theta]
        count, q_total = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range(rid, tf.shape(st)[0] - 1, replicas):
            w, nt, _ = self._stateless_phase(theta, nt, sx, sy, so, st[i], st[i + 1])
            w, nt, q_loss = self._stateless_phase(w, nt, qx, qy, qo, qt[i], qt[i + 1])
            acc = [a + b for a, b in zip(acc, w)]
            count += 1.0
            q_total += q_loss
        first = tf.cast(tf.equal(rid, 0), tf.float64)
        stats = [tf.cast(x, tf.float64) * (tf.cast(count, tf.float64) if x.dtype.is_floating else first) for x in nt]
        acc, count, q_total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [acc, count, q_total])
        stats = ctx.all_reduce(tf.distribute.ReduceOp.SUM, stats) if stats else []
        return acc, count, q_total, stats

    def _dist_meta(self, sx, sy, so, st, qx, qy, qo, qt):
        """One meta-iteration spread over the strategy's replicas (the multi-device `meta_step`)."""
        self.trace_counts["distributed"] += 1
        per = self.strategy.run(self._replica_tasks, args=(sx, sy, so, st, qx, qy, qo, qt))
        acc, count, q_total, stats = tf.nest.map_structure(lambda r: self.strategy.experimental_local_results(r)[0], per)
        for v, a in zip(self._vars, acc):
            th = tf.convert_to_tensor(v.value)
            v.assign(th - tf.cast(self.outer_lr, th.dtype) * (th - a / tf.cast(count, th.dtype)))
        total = tf.cast(count, tf.float64)
        for v, x in zip(self._nt_vars, stats):  # moving statistics: mean weighted by task counts; other state: replica 0's
            dtype = tf.as_dtype(v.dtype)
            v.assign(tf.cast(x / total if dtype.is_floating else x, dtype))
        return q_total / count

    def _meta_step_distributed(self, packed) -> float:
        """Every task's batches in one tensor per part, with batch row offsets and task batch offsets (no retracing)."""
        args = []
        for part in ("support", "query"):
            x = tf.concat([row[part][0] for row in packed], axis=0)
            y = tf.concat([row[part][1] for row in packed], axis=0)
            sizes = [int(n) for row in packed for n in np.diff(row[part][2].numpy())]
            n_batches = [int(row[part][2].shape[0]) - 1 for row in packed]
            offsets = tf.constant(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
            tasks = tf.constant(np.concatenate([[0], np.cumsum(n_batches)]).astype(np.int32))
            args += [x, y, offsets, tasks]
        return float(self._dist_fn(*args))

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
            from keras_iqa.training.runner import BackupStore, worker_info

            chief, worker = worker_info(self.strategy)  # other workers of a multi-worker run write a private copy
            import tempfile

            store = BackupStore(state_dir, write_dir=None if chief else tempfile.mkdtemp(prefix=f"keras-iqa-meta{worker}-"))
            start_epoch = self._restore(store, sources[0], per_visit)
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
                self._save_state(store, epoch)
            if self.model.stop_training or (total_iters is not None and done >= total_iters):
                break
        cbs.on_train_end()
        return self.history

    # -- resume ---------------------------------------------------------------------------------------------------
    def _save_state(self, store, epoch: int):
        """The resume state after `epoch` (0-based) as one committed version of `store` (a `runner.BackupStore`): theta
        with the moving statistics (`theta-EEEE.weights.h5`), the Adam state (`adam-EEEE.npz`) and the history."""
        arrays = [self._t.numpy()] + [m.numpy() for m in self._m] + [v.numpy() for v in self._v]

        def write_adam(path):
            with open(path, "wb") as f:
                np.savez(f, *arrays[1:], t=arrays[0])

        store.save(epoch + 1, {"theta": (".weights.h5", lambda p: self.model.save_weights(p)), "adam": (".npz", write_adam)},
                   history=self.history)

    def _candidates(self, store) -> list:
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

    def _restore(self, store, first: "_TaskSource", per_visit: int) -> int:
        """Loads the newest intact saved state (checked against its recorded size and SHA-256; older layouts read
        through) and returns the epochs it completed; damaged versions are skipped with a one-line message."""
        from keras_iqa.training.runner import _first_line, _h5_problem, log

        candidates = self._candidates(store)
        if not candidates:
            return 0
        task = first.draw(per_visit)
        x = tf.convert_to_tensor(_as_batches(task["support_x"], "support_x")[0])
        y = tf.convert_to_tensor(_as_batches(task["support_y"], "support_y")[0])
        self._build(tf.cast(x, tf.float32) if x.dtype.is_integer else x, tf.cast(y, tf.float32))
        notes = []
        for done, label, theta, adam_path, history, problem in candidates:
            why = problem() if problem is not None else (lambda w: f"{label} {w}" if w else None)(_h5_problem(theta))
            if why is None:
                try:
                    adam = np.load(adam_path)
                    n = len(self._m)
                    arrays = [adam[f"arr_{i}"] for i in range(2 * n)], float(adam["t"])
                except Exception as e:
                    why = f"{os.path.basename(adam_path)} unreadable ({_first_line(e)})"
            if why:
                notes.append(why)
                continue
            self.model.load_weights(theta)
            self.sync_from_model()
            (mv, t) = arrays
            self._t.assign(t)
            for var, a in zip(self._m + self._v, mv):
                var.assign(a)
            self.history = {key: list(v) for key, v in history.items()}
            if notes:
                log.warning("resume: %s; resuming after meta epoch %d from %s", "; ".join(notes), done, label)
            return done
        log.warning("resume: nothing usable in %s (%s); meta-training starts again from epoch 1", store.dir,
                    "; ".join(notes))
        return 0


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
        model.set_weights(keras.models.load_model(path).get_weights())
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
        from keras_iqa.training import runner

        return runner.fit(model, train_data, epochs=epochs, run=run, validation_data=validation_data, callbacks=cbs,
                          steps_per_epoch=steps_per_epoch, verbose=verbose, tensorboard=False)
    x, y = train_data if isinstance(train_data, tuple) and len(train_data) == 2 else (train_data, None)
    return model.fit(x, y, epochs=epochs, validation_data=validation_data, callbacks=cbs, verbose=verbose,
                     steps_per_epoch=steps_per_epoch)


# --------------------------------------------------------------------------------------------------------- evaluation
def predict_batches(model: keras.Model, data) -> tuple:
    """(pred, target) numpy arrays over a dataset of (x, y) batches, an (x, y) tuple, or a list of such batches."""
    if isinstance(data, tuple) and len(data) == 2:
        data = [data]

    @tf.function(reduce_retracing=True)
    def fwd(x):
        return tf.reshape(model(x, training=False), [-1])

    preds, targets = [], []
    for x, y in data:
        preds.append(fwd(tf.convert_to_tensor(x)).numpy())
        targets.append(np.asarray(y, dtype=np.float64).reshape(-1))
    return np.concatenate(preds).astype(np.float64), np.concatenate(targets)


def evaluate_model(model: keras.Model, data) -> dict:
    """SROCC / PLCC / RMSE / n of `model` on `data`: a `RecordReader` (its eval protocol via
    `keras_iqa.evaluation.predict_reader`) or (x, y) batches (one forward each)."""
    from keras_iqa import metrics

    if hasattr(data, "eval_dataset"):
        from keras_iqa.evaluation import predict_reader

        df = predict_reader(model, data)
        pred, target = df["pred"].to_numpy(), df["target"].to_numpy()
    else:
        pred, target = predict_batches(model, data)
    out = {"n": int(len(pred))}
    for name in ("srocc", "plcc"):
        try:
            out[name] = float(getattr(metrics, name)(pred, target))
        except ValueError as e:  # too few samples or constant predictions: report NaN, keep the protocol going
            out[name] = float("nan")
            out[f"{name}_error"] = str(e)
    out["rmse"] = float(np.sqrt(np.mean((pred - target) ** 2))) if len(pred) else float("nan")
    return out


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
    import pandas as pd

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
        res = evaluate_model(model, test)
        rows.append({"held_out": _task_name(target, 0), "finetuned": bool(finetune_on_held_out), **data, **res})
    return pd.DataFrame(rows)


def synthetic_to_authentic(meta_tasks: Sequence[dict], build_model: Callable[[], keras.Model], train_data, test_data,
                           meta: Optional[dict] = None, fit: Optional[dict] = None, tune: Optional[dict] = None,
                           model: Optional[keras.Model] = None) -> dict:
    """Table 3: meta-train on synthetic distortion tasks (TID2013 + KADID-10k), fine-tune on an authentic training split,
    test on its test split (`test_data`: a RecordReader or (x, y) batches). Returns {"meta": history, "test": metrics}."""
    model = model or build_model()
    learner = MetaLearner(model, **(meta or {}))
    hist = learner.fit_meta(meta_tasks, **{"epochs": 1, "verbose": 0, **(fit or {})})
    finetune(model, train_data, **{"verbose": 0, **(tune or {})})
    return {"meta": hist, "test": evaluate_model(model, test_data), "model": model}


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
