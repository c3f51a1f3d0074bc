"""`FusedAdam`: Keras Adam whose per-variable update is TensorFlow's fused `ResourceApplyAdam` kernel.

Keras 3's `Adam.update_step` updates m, v and the variable with about ten separate element-wise ops per variable, each a
full pass over memory; TensorFlow's `ResourceApplyAdam` does the same arithmetic in one multi-threaded pass. The maths is
identical (Kingma & Ba 2015, Algorithm 1 with the "epsilon hat" placement both use):

    alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
    m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2);  w -= alpha * m / (sqrt(v) + epsilon)

so `FusedAdam` is a drop-in `keras.optimizers.Adam` (same config, same slots, same `.keras` round trip); it falls back to
Keras's update on other backends, for `amsgrad=True` and for sparse (`IndexedSlices`) gradients. Weight decay, clipping, EMA
and loss scaling stay Keras's (they run outside `update_step`). Measured gains: README, Benchmarks.

Example:
>>> from keras_iqa.training.optimizers import FusedAdam
>>> opt = FusedAdam(1e-4)           # wherever keras.optimizers.Adam(1e-4) was used
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="keras_iqa")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` with TensorFlow's fused `ResourceApplyAdam` update (see module docstring)."""

    def __init__(self, *args, name="fused_adam", **kwargs):
        super().__init__(*args, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        if (keras.backend.backend() != "tensorflow" or self.amsgrad or isinstance(gradient, tf.IndexedSlices)
                or not hasattr(variable, "handle")):
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
