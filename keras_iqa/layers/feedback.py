"""REQA feedback block (code: `LDPM` / `ConvLSTMCell` / `FeedbackModule`): a ConvLSTM run T times on the same feature map.

Gates (paper Sec. III-B, official convlstmcell.py), for the input x = fm_d (same at every step) and the previous hidden h:
    i = σ(BN(W_xi*x) + BN(W_hi*h)),  f = σ(BN(W_xf*x) + BN(W_hf*h)),  g = tanh(BN(W_xg*x) + BN(W_hg*h)),
    o = σ(BN(W_xo*x) + BN(W_ho*h)),  c_t = f⊙c_{t-1} + i⊙g,  h_t = o⊙tanh(c_t),   h_0 = c_0 = 0,
with 1x1 convolutions without bias and affine BatchNorm. Each step's h_t is average-pooled (kernel = stride = `pool_size`,
7 at 224 input), flattened channel-major (PyTorch NCHW order) and projected linearly to `proj_dim` (32): v_{d,t}.

Implementation: the four x-path convs (and the four h-path convs) are one 1x1 conv with 4·hidden outputs followed by one
BatchNorm over 4·hidden channels, which is exactly four separate conv+BN pairs (BN is per-channel). The T steps are a static
Python unroll (no `ConvLSTM2D`, no while loop / TensorList), so the graph stays TFLite-builtin-only. The x-path is computed once
(the input does not change across steps) but its BatchNorm sees the same batch every step, as in the official code.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_iqa")
class FeedbackBlock(keras.layers.Layer):
    """ConvLSTM feedback block of REQA; `call(x)` -> [B, steps, proj_dim] (one projected vector per step).

    Args:
        hidden: ConvLSTM hidden channels (16 / 32 / 64 for the three scales).
        steps: number of recurrent steps T (4 in the paper).
        pool_size: average-pool kernel and stride applied to h_t (7 at 224 input; 2 for 64-px tiny models).
        proj_dim: projected vector size (32).
        bn_momentum, bn_epsilon: BatchNorm settings (torch defaults: momentum 0.1 there = 0.9 here, eps 1e-5).
    """

    def __init__(self, hidden=16, steps=4, pool_size=7, proj_dim=32, bn_momentum=0.9, bn_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if int(steps) < 1:
            raise ValueError(f"FeedbackBlock steps must be >= 1, got {steps!r}")
        self.hidden, self.steps, self.pool_size, self.proj_dim = int(hidden), int(steps), int(pool_size), int(proj_dim)
        self.bn_momentum, self.bn_epsilon = float(bn_momentum), float(bn_epsilon)
        init = keras.initializers.HeNormal()
        bn = dict(momentum=self.bn_momentum, epsilon=self.bn_epsilon)
        self.x_conv = keras.layers.Conv2D(4 * self.hidden, 1, use_bias=False, kernel_initializer=init, name="x_conv")
        self.x_bn = keras.layers.BatchNormalization(name="x_bn", **bn)
        self.h_conv = keras.layers.Conv2D(4 * self.hidden, 1, use_bias=False, kernel_initializer=init, name="h_conv")
        self.h_bn = keras.layers.BatchNormalization(name="h_bn", **bn)
        self.pool = keras.layers.AveragePooling2D(self.pool_size, strides=self.pool_size, padding="valid", name="pool")
        self.proj = keras.layers.Dense(self.proj_dim, kernel_initializer=init, name="proj")

    def build(self, input_shape):
        h, w, c = input_shape[1], input_shape[2], input_shape[3]
        if h is None or w is None:
            raise ValueError("FeedbackBlock needs a static spatial size (the projection's input size depends on it)")
        if h < self.pool_size or w < self.pool_size:
            raise ValueError(f"FeedbackBlock input {h}x{w} is smaller than pool_size={self.pool_size}; use a smaller "
                             "pool_size (REQA: 7 at 224 px input, 2 at 64 px) or a larger crop")
        ph, pw = h // self.pool_size, w // self.pool_size
        self.x_conv.build(input_shape)
        self.x_bn.build((None, h, w, 4 * self.hidden))
        self.h_conv.build((None, h, w, self.hidden))
        self.h_bn.build((None, h, w, 4 * self.hidden))
        self.proj.build((None, ph * pw * self.hidden))
        self._pooled = (ph, pw)
        self.built = True

    def _vector(self, h):
        p = self.pool(h)  # [B, ph, pw, hid]
        p = ops.transpose(p, (0, 3, 1, 2))  # channel-major flatten, as PyTorch's view(B, -1) on NCHW
        return self.proj(ops.reshape(p, (-1, self._pooled[0] * self._pooled[1] * self.hidden)))

    def call(self, x, training=None):
        xg = self.x_bn(self.x_conv(x), training=training)  # same input every step
        hd = self.hidden
        h = ops.zeros_like(xg[..., :hd])
        c = h
        outs = []
        for _ in range(self.steps):  # static unroll (T is a Python int)
            z = xg + self.h_bn(self.h_conv(h), training=training)
            i = ops.sigmoid(z[..., :hd])
            f = ops.sigmoid(z[..., hd:2 * hd])
            g = ops.tanh(z[..., 2 * hd:3 * hd])
            o = ops.sigmoid(z[..., 3 * hd:])
            c = f * c + i * g
            h = o * ops.tanh(c)
            outs.append(self._vector(h))
        return ops.stack(outs, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.steps, self.proj_dim)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(hidden=self.hidden, steps=self.steps, pool_size=self.pool_size, proj_dim=self.proj_dim,
                   bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)
        return cfg
