"""The multi-device meta-iteration of `MetaLearner` (`tf.distribute`), one job: spread a meta-batch's tasks over replicas.

A model built under `MirroredStrategy` / `MultiWorkerMirroredStrategy`: every replica gets the meta-batch and adapts its share
of the tasks (task i on replica i mod N) with `keras.Model.stateless_call` on fast weights held as tensors (the model's
mirrored variables stay theta); the replicas' sums of theta_i are all-reduced and the outer update (Zhu et al. 2020, Eq. 7)
is applied once, so N replicas take the same step as one device (tests/keras_iqa/test_distributed.py, to 1e-5). Moving
statistics: each replica carries them through its tasks in order; afterwards they are averaged over the replicas, weighted
by their task counts (one replica: exactly the sequential single-device statistics). Only the paper's fresh Adam state per
phase can be split this way (`adam_state="fresh"`).

`ReplicatedMetaStep` is a mixin of `keras_iqa.training.meta_learner.MetaLearner`: it reads the learner's model, variables,
loss and hyper-parameters (`inner_steps`, `inner_lr`, `outer_lr`, Adam constants, `weight_decay`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["ReplicatedMetaStep"]


class ReplicatedMetaStep:
    """The `tf.distribute` meta-iteration of `MetaLearner` (`_dist_fn`, built by the learner, runs `_dist_meta`)."""

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
