"""HCL (reconstruction) curriculum 2 building blocks: K per-dataset subnetworks and the CQAC module (docs/methods/hcl.md, Design (ours)).

The HCL paper's body is not available; everything here is OUR design built from its abstract ("multiple lightweight
subnetworks" each learning one synthetic dataset's scoring rule, tied by a "cross-dataset quality assessment correlation"
(CQAC) module). See README, HCL.

- `DatasetSubnetworks`: K lightweight MLPs S_k = Dense(256) + ReLU + Dropout(0.1) + Dense(64), evaluated together as one
  batched einsum (no Python loop over k): q [B, F] -> z [B, K, 64].
- `CQAC`: z'_k = LN(z_k + MHA(z)_k) (one self-attention layer over the K dataset tokens), then one affine head per dataset
  s_k = w_k . z'_k + b_k -> scores [B, K]. `attention=False` is the "CQAC off" ablation (independent heads).
- `batch_plcc` (from `keras_iqa.losses`): differentiable Pearson correlation over the batch axis.
- `cqac_loss`: L = MSE(s_k, y) + lambda * mean_{j != k} (1 - PLCC_batch(s_j, y)) for a batch from dataset k.
- `head_correlation_matrix`: the K x K batch PLCC between the heads' scores (logged per epoch).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_iqa.losses import batch_plcc

__all__ = ["batch_plcc", "head_correlation_matrix", "cqac_loss", "DatasetSubnetworks", "CQAC"]


def head_correlation_matrix(scores, eps=1e-8):
    """K x K PLCC between the columns of `scores` [B, K] (one matmul; diagonal 1 unless a head is constant)."""
    s = ops.convert_to_tensor(scores)
    sc = s - ops.mean(s, axis=0, keepdims=True)
    norm = ops.sqrt(ops.sum(sc * sc, axis=0) + eps)
    sn = sc / norm[None, :]
    return ops.matmul(ops.transpose(sn), sn)


def cqac_loss(scores, targets, dataset_id, lam=0.1, num_datasets=None):
    """Correlation-consistency loss of CQAC (docs/methods/hcl.md, Curriculum 2); returns (total, mse, corr).

    Every batch comes from ONE dataset k (`multi_dataset` guarantees it); k is read from `dataset_id[0]`.
    mse = mean_b (s_k(b) - y(b))^2 (only head k is held to dataset k's scale);
    corr = mean_{j != k} (1 - PLCC_batch(s_j, y)) (every other head should rank dataset k's images like its raters);
    total = mse + lam * corr. With K = 1 (or lam = 0) the total is the per-dataset MSE.
    """
    scores = ops.cast(scores, "float32")  # the loss in fp32 also under mixed precision
    y = ops.reshape(ops.cast(targets, "float32"), (-1,))
    k_count = int(num_datasets or scores.shape[-1])
    ids = ops.reshape(ops.cast(dataset_id, "int32"), (-1,))
    onehot = ops.one_hot(ids, k_count, dtype=scores.dtype)  # [B, K]
    own = ops.sum(scores * onehot, axis=-1)
    mse = ops.mean(ops.square(own - y))
    if k_count < 2:
        return mse, mse, ops.zeros_like(mse)
    plcc = batch_plcc(y[:, None], scores, axis=0)  # [K]
    others = 1.0 - onehot[0]  # heads j != k of this batch's dataset
    corr = ops.sum((1.0 - plcc) * others) / ops.maximum(ops.sum(others), 1.0)
    return mse + lam * corr, mse, corr


@keras.saving.register_keras_serializable(package="keras_iqa")
class DatasetSubnetworks(keras.layers.Layer):
    """K lightweight subnetworks applied to the same feature vector: q [B, F] -> z [B, K, units[-1]].

    S_k = Dense(units[0]) + ReLU + Dropout(dropout) + Dense(units[1]) (docs/methods/hcl.md, Design (ours)), stacked as [K, F, U] kernels and
    evaluated with one einsum per layer.

    Args:
        num_datasets: K.
        units: (hidden, embedding) widths, default (256, 64).
        dropout: dropout after the hidden layer.

    Example:
    >>> import numpy as np
    >>> tuple(DatasetSubnetworks(3)(np.zeros((2, 3840), "float32")).shape)
    (2, 3, 64)
    """

    def __init__(self, num_datasets, units=(256, 64), dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        if int(num_datasets) < 1:
            raise ValueError(f"num_datasets (K) must be >= 1, got {num_datasets!r}")
        self.num_datasets = int(num_datasets)
        self.units = tuple(int(u) for u in units)
        if len(self.units) != 2:
            raise ValueError(f"units must be (hidden, embedding), got {units!r}")
        self.dropout = float(dropout)
        self.drop = keras.layers.Dropout(self.dropout)

    def build(self, input_shape):
        f = int(input_shape[-1])
        k, (h, e) = self.num_datasets, self.units
        init = keras.initializers.GlorotUniform()
        self.w1 = self.add_weight(name="w1", shape=(k, f, h), initializer=init)
        self.b1 = self.add_weight(name="b1", shape=(k, h), initializer="zeros")
        self.w2 = self.add_weight(name="w2", shape=(k, h, e), initializer=init)
        self.b2 = self.add_weight(name="b2", shape=(k, e), initializer="zeros")

    def call(self, q, training=None):
        h = ops.relu(ops.einsum("bf,kfh->bkh", q, self.w1) + self.b1)
        h = self.drop(h, training=training)
        return ops.einsum("bkh,khe->bke", h, self.w2) + self.b2

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_datasets, self.units[1])

    def get_config(self):
        return {**super().get_config(), "num_datasets": self.num_datasets, "units": list(self.units), "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="keras_iqa")
class CQAC(keras.layers.Layer):
    """Cross-dataset quality assessment correlation module (HCL reconstruction, our design; docs/methods/hcl.md, Design (ours)).

    z [B, K, D] -> (z' [B, K, D], scores [B, K]) with z'_k = LN(z_k + MHA(z)_k) (self-attention across the K dataset
    embeddings of one image) and s_k = w_k . z'_k + b_k (one affine head per dataset). With `attention=False` (ablation
    "CQAC off") z' = z and the heads are independent.

    Args:
        num_datasets: K.
        num_heads, key_dim: multi-head attention size (4 heads, key dim 16).
        attention: use the attention + LayerNorm refinement.

    Example:
    >>> import numpy as np
    >>> z2, s = CQAC(3)(np.zeros((2, 3, 64), "float32"))
    >>> tuple(z2.shape), tuple(s.shape)
    ((2, 3, 64), (2, 3))
    """

    def __init__(self, num_datasets, num_heads=4, key_dim=16, attention=True, head_bias=0.0, head_stddev=None, **kwargs):
        super().__init__(**kwargs)
        self.head_bias = float(head_bias)  # initial bias of every per-dataset head (HCLSynthetic: 0.5, mid of [0, 1] targets)
        self.head_stddev = None if head_stddev is None else float(head_stddev)  # None: Glorot-uniform head kernel
        self.num_datasets = int(num_datasets)
        self.num_heads, self.key_dim = int(num_heads), int(key_dim)
        self.attention = bool(attention)
        if self.attention:
            self.mha = keras.layers.MultiHeadAttention(self.num_heads, self.key_dim, name="mha")
            self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="ln")

    def build(self, input_shape):
        k, d = int(input_shape[1]), int(input_shape[2])
        if k != self.num_datasets:
            raise ValueError(f"CQAC built for K={self.num_datasets} dataset embeddings, got input shape {tuple(input_shape)}")
        if self.attention:
            self.mha.build(input_shape, input_shape)
            self.norm.build(input_shape)
        # the per-dataset heads stay float32 under mixed precision (autocast=False: never read as bf16)
        w_init = ("glorot_uniform" if self.head_stddev is None
                  else keras.initializers.RandomNormal(stddev=self.head_stddev))
        self.head_w = self.add_weight(name="head_w", shape=(k, d), initializer=w_init, dtype="float32", autocast=False)
        self.head_b = self.add_weight(name="head_b", shape=(k,), initializer=keras.initializers.Constant(self.head_bias),
                                      dtype="float32", autocast=False)

    def call(self, z, training=None):
        if self.attention:
            z = self.norm(z + self.mha(z, z, training=training))
        scores = ops.einsum("bkd,kd->bk", ops.cast(z, "float32"), self.head_w) + self.head_b  # float32 scores
        return z, scores

    def compute_output_shape(self, input_shape):
        return tuple(input_shape), (input_shape[0], self.num_datasets)

    def get_config(self):
        return {**super().get_config(), "num_datasets": self.num_datasets, "num_heads": self.num_heads,
                "key_dim": self.key_dim, "attention": self.attention, "head_bias": self.head_bias,
                "head_stddev": self.head_stddev}
