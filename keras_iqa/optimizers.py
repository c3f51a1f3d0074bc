"""Optimizers and the multi-optimizer update that models and trainers share (imported by `keras_iqa.models`, so it lives
outside `keras_iqa.training`; `keras_iqa.training.optimizers` re-exports it).

`FusedAdam`: Keras Adam whose per-variable update is TensorFlow's fused `ResourceApplyAdam` kernel.

Keras 3's `Adam.update_step` updates m, v and the variable with about ten separate element-wise ops per variable, each a
full pass over memory; TensorFlow's `ResourceApplyAdam` does the same arithmetic in one multi-threaded pass. The maths is
identical (Kingma & Ba 2015, Algorithm 1 with the "epsilon hat" placement both use):

    alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
    m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2);  w -= alpha * m / (sqrt(v) + epsilon)

so `FusedAdam` is a drop-in `keras.optimizers.Adam` (same config, same slots, same `.keras` round trip); it falls back to
Keras's update on other backends, for `amsgrad=True`, for sparse (`IndexedSlices`) gradients and under a `tf.distribute`
strategy (the raw kernel on mirrored variables' handles does not run inside a distributed update). Weight decay, clipping, EMA
and loss scaling stay Keras's (they run outside `update_step`). Measured gains: README, Benchmarks.

Example:
>>> from keras_iqa.optimizers import FusedAdam
>>> opt = FusedAdam(1e-4)           # wherever keras.optimizers.Adam(1e-4) was used
"""

from __future__ import annotations

import keras
from keras import ops
import tensorflow as tf

__all__ = ["FusedAdam", "replicas_in_sync", "scale_for_replicas", "build_optimizer_groups", "apply_optimizer_groups"]


@keras.saving.register_keras_serializable(package="keras_iqa")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` with TensorFlow's fused `ResourceApplyAdam` update (see module docstring)."""

    def __init__(self, *args, name="fused_adam", **kwargs):
        super().__init__(*args, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        if (keras.backend.backend() != "tensorflow" or self.amsgrad or isinstance(gradient, tf.IndexedSlices)
                or not hasattr(variable, "handle") or tf.distribute.has_strategy()):  # tf.distribute: Keras's update
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        i = self._get_variable_index(variable)
        m, v = self._momentums[i], self._velocities[i]
        m, v = getattr(m, "value", m), getattr(v, "value", v)  # Keras variables -> their tf.Variable
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle, beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype), use_locking=False, use_nesterov=False)


# ------------------------------------------------------------------------------------------------ custom train steps
def replicas_in_sync() -> int:
    """Replicas that the current `tf.distribute` strategy runs a step on (1 outside any strategy)."""
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def scale_for_replicas(loss):
    """`loss / replicas_in_sync()`: Keras's distribution rule for a loss computed in a replica's step.

    Each replica's loss is the mean over ITS share of the global batch, and the optimizer all-reduces gradients with a SUM
    over replicas (`keras.optimizers.Optimizer.apply` under `tf.distribute`), so dividing by the number of replicas makes the
    summed gradient the gradient of the mean over the global batch, as on one device. Keras's own `Loss` objects and
    `train_step` do the same; a custom `train_step` / `compute_loss` must do it itself. Logged values use the unscaled loss.
    """
    n = replicas_in_sync()
    return loss if n == 1 else loss * (1.0 / n)


def build_optimizer_groups(groups) -> None:
    """Builds each `(optimizer, variables)` of a model's `optimizer_groups()` on its WHOLE variable group (its slot
    variables then match what `save_weights` wrote), before a resume loads them or a step applies a subset."""
    for opt, variables in groups:
        if opt is not None and not opt.built:
            opt.build(list(variables))


def apply_optimizer_groups(tape, loss, groups, extra_gradient=None) -> None:
    """One update of a model trained by several optimizers (`groups` = [(optimizer, variables)]) from one `loss`.

    `loss` must be computed inside `tape` and already scaled for the replicas (`scale_for_replicas`, or what a Keras
    `compute_loss` returns): one backward pass serves every group. `extra_gradient(g, v)` adds a term to each non-None
    gradient (e.g. coupled L2 `wd * v`), divided by the replicas like the loss, so the all-reduced sum adds it exactly
    once. Loss scaling (mixed float16: `keras.optimizers.LossScaleOptimizer`): the backward pass is seeded with the
    smallest of the optimizers' scales (as if the loss were multiplied by it, so float16 gradients do not underflow; an
    optimizer whose gradients overflowed lowers its scale, so the next pass uses the lowered one), the float32
    gradients are divided by it again, and each scaling optimizer gets them multiplied by its own scale, which its
    `apply` divides out (skipping the step and lowering the scale on inf/NaN). Variables without a gradient are skipped
    (each optimizer is built on its whole group first, `build_optimizer_groups`, so its state matches saved files).
    """
    groups = [(opt, list(vs)) for opt, vs in groups if opt is not None and len(vs)]
    build_optimizer_groups(groups)
    all_vars = [v for _, vs in groups for v in vs]
    scales = [ops.cast(f, "float32") for f in (opt.scale_loss(1.0) for opt, _ in groups) if not isinstance(f, float)]
    seed = ops.min(ops.stack(scales)) if scales else None
    raw = tape.gradient(loss, all_vars, output_gradients=None if seed is None else ops.cast(seed, loss.dtype))
    if seed is not None:
        raw = [g if g is None else g / ops.cast(seed, g.dtype) for g in raw]
    grads = dict(zip((id(v) for v in all_vars), raw))
    n = replicas_in_sync()
    for opt, variables in groups:
        gs = [grads[id(v)] for v in variables]
        if extra_gradient is not None:
            gs = [g if g is None else g + extra_gradient(g, v) * (1.0 / n) for g, v in zip(gs, variables)]
        factor = opt.scale_loss(1.0)
        if not isinstance(factor, float):  # a loss-scaling optimizer
            gs = [g if g is None else g * ops.cast(factor, g.dtype) for g in gs]
        pairs = [(g, v) for g, v in zip(gs, variables) if g is not None]
        if pairs:
            opt.apply_gradients(pairs)
