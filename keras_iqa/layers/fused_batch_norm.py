"""`FusedBatchNormalization`: Keras 3 `BatchNormalization` computed by TensorFlow's fused kernel (one op instead of ~10).

Keras 3's BatchNormalization upcasts its input to float32 and builds the normalisation from separate ops (moments, rsqrt,
multiply, add) -- on a CPU that is many passes over every activation tensor, and under `mixed_bfloat16` two extra casts. The
fused op (`FusedBatchNormV3`, oneDNN-accelerated on x86, bf16 input with float32 statistics) does it in one pass, and at
inference TF's graph optimiser folds it into the preceding convolution. On this project's CPU it made the ResNet-50 training
step about 1.6x faster in bf16 and 1.2x in fp32 (CPU-time measurement, bench/backbones.py; README, Benchmarks).

Same maths as Keras (Ioffe & Szegedy 2015, Alg. 1): y = gamma * (x - mu_B) / sqrt(var_B + eps) + beta with the biased batch
variance in training, moving averages m <- momentum * m + (1 - momentum) * stat (the kernel's Bessel-corrected variance is
turned back into the biased one Keras uses), moving statistics at inference. Same weights and config as
`keras.layers.BatchNormalization`, so checkpoints are interchangeable. Falls back to the Keras implementation where the fused
kernel does not apply (not rank 4, axis not last, masks, renorm, synchronized, other backends).

Example:
>>> from keras_iqa.backbones import resnet_features
>>> feats = fuse_batch_norm(resnet_features(depth=18, width=0.25, blocks=(1, 1, 1, 1)))  # BN -> fused BN, weights kept
>>> sorted({type(layer).__name__ for layer in feats.layers if "Normalization" in type(layer).__name__})
['FusedBatchNormalization']
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_iqa")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` on TensorFlow's fused kernel for NHWC inputs (same arguments and weights)."""

    def _fused_applies(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm and not self.synchronized
                and len(inputs.shape) == 4 and self.axis in (-1, 3))

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)

        x = tf.cast(inputs, self.compute_dtype)
        if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            x = tf.cast(x, tf.float32)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
        if training and self.trainable:
            empty = tf.zeros((0,), tf.float32)
            y, mean, var, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=self.epsilon,
                data_format="NHWC", is_training=True)
            n = tf.cast(tf.size(x, out_type=tf.int64) // channels, tf.float32)
            var = var * tf.maximum(n - 1.0, 1.0) / tf.maximum(n, 1.0)  # kernel returns the unbiased variance
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + var * (1.0 - self.momentum))
        else:
            y = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon, data_format="NHWC",
                is_training=False)[0]
        return tf.cast(y, self.compute_dtype)


def fuse_batch_norm(model: keras.Model) -> keras.Model:
    """A functional `model` with every plain `BatchNormalization` replaced by `FusedBatchNormalization` (weights copied).

    Layer names and weight order are kept, so `get_layer(name)` and `set_weights` keep working on the result.
    """
    if not any(type(layer) is keras.layers.BatchNormalization for layer in model._flatten_layers()):
        return model

    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return FusedBatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    fused = keras.models.clone_model(model, clone_function=clone)
    fused.set_weights(model.get_weights())
    return fused


@keras.saving.register_keras_serializable(package="keras_iqa")
class FoldedBatchNormalization(keras.layers.Identity):
    """Where `fold_batch_norm` removed a BatchNormalization (now in the preceding Conv2D): passes its input through."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_spec(self, inputs, training=None, mask=None):
        return super().compute_output_spec(inputs)


def _is_functional(model) -> bool:
    """True for a functional model: one built from symbolic inputs (`keras.Model(inputs, outputs)`, or a subclass whose
    `__init__` does so, as keras-hub's backbones); False for a `keras.Sequential`, a subclassed model or any other object.

    Keras has no public `Functional` class, so this asks the public API: a functional model has symbolic `inputs` and
    `outputs` (`keras.KerasTensor`s) from its construction; a subclassed model has neither attribute.
    """
    if not isinstance(model, keras.Model) or isinstance(model, keras.Sequential):
        return False
    try:
        inputs, outputs = keras.tree.flatten(model.inputs), keras.tree.flatten(model.outputs)
    except (AttributeError, ValueError, TypeError):
        return False
    return bool(inputs) and bool(outputs) and all(isinstance(t, keras.KerasTensor) for t in inputs + outputs)


def _bn_after_conv(model: keras.Model) -> dict:
    """{BatchNormalization layer: the Conv2D whose output only it reads}, for the inference-mode folds of `fold_batch_norm`."""
    pairs, outputs = {}, {id(t) for t in keras.tree.flatten(model.outputs)}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue  # a shared BN layer has several inputs: left alone
        if layer.axis not in (-1, len(layer.input.shape) - 1):
            continue
        conv = layer.input._keras_history.operation
        if id(layer.input) in outputs:  # the convolution's own output is also a model output: keep it
            continue
        if (type(conv) is keras.layers.Conv2D and conv.data_format == "channels_last" and len(conv._inbound_nodes) == 1
                and len(conv._outbound_nodes) == 1 and conv.activation is keras.activations.linear):
            pairs[layer] = conv
    return pairs


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """An inference copy of a functional `model` with each Conv2D -> BatchNormalization pair folded into one biased Conv2D.

    W' = W * gamma / sqrt(var + eps) and b' = (b - mean) * gamma / sqrt(var + eps) + beta per output channel (the moving
    statistics: inference only; the BN layer becomes a pass-through `FoldedBatchNormalization`). TF's graph optimiser
    folds BN itself only in float32; under `mixed_bfloat16` the folded copy runs conv + bias as one oneDNN kernel instead
    of a convolution and a separate batch norm (ResNet-18 / ResNet-50 batch-1 latency -16 % / -19 %: README, Benchmarks).
    Nested functional models are folded too; outputs match the original to float rounding. Not for training: the folded
    copy has no batch statistics. `refold_batch_norm(model, copy)` refreshes the copy after more training.
    """
    if not (_is_functional(model) or isinstance(model, keras.Sequential)):
        raise ValueError(f"fold_batch_norm needs a functional or Sequential model, got {type(model).__name__}: fold its "
                         "functional parts (keras-iqa models: their `backbone`)")
    pairs = _bn_after_conv(model)
    folded_convs = {id(conv): bn for bn, conv in pairs.items()}
    if not pairs and not any(isinstance(layer, keras.Model) for layer in model.layers):
        return model

    def clone(layer):
        if isinstance(layer, keras.Model):  # nested model: folded if functional, else shared as it is
            return fold_batch_norm(layer) if _is_functional(layer) or isinstance(layer, keras.Sequential) else layer
        if layer in pairs:
            # the BN's own dtype policy: under the global float32 policy a pass-through of a bf16 model would cast every
            # activation to float32 and the next convolution back to bf16 (two full-tensor casts per layer)
            return FoldedBatchNormalization(name=layer.name, dtype=layer.dtype_policy.name)
        config = layer.get_config()
        if id(layer) in folded_convs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    out = keras.models.clone_model(model, clone_function=clone)
    _write_folded_weights(model, out, pairs, recurse=False)  # nested models got their weights when they were folded
    return out


def refold_batch_norm(model: keras.Model, folded: keras.Model) -> None:
    """Writes the current weights of `model` into `folded`, its `fold_batch_norm` copy (after more training or a
    `load_weights`): the copy's variables are assigned in place, so functions traced over it see the new values."""
    _write_folded_weights(model, folded, _bn_after_conv(model), recurse=True)


def _write_folded_weights(model, out, pairs: dict, recurse: bool) -> None:
    """Folded kernels / biases of `model`'s Conv2D -> BN pairs, and every other layer's weights, into the copy `out`."""
    folded_convs = {id(conv): bn for bn, conv in pairs.items()}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            if recurse and out.get_layer(layer.name) is not layer:
                refold_batch_norm(layer, out.get_layer(layer.name))
            continue
        if layer in pairs or not layer.weights:
            continue
        new = out.get_layer(layer.name)
        if id(layer) not in folded_convs:
            new.set_weights(layer.get_weights())
            continue
        bn = folded_convs[id(layer)]
        kernel = np.asarray(layer.kernel, np.float64)
        bias = np.asarray(layer.bias, np.float64) if layer.use_bias else 0.0
        gamma = np.asarray(bn.gamma, np.float64) if bn.scale else 1.0
        beta = np.asarray(bn.beta, np.float64) if bn.center else 0.0
        scale = gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
        new.set_weights([(kernel * scale).astype("float32"),
                         ((bias - np.asarray(bn.moving_mean, np.float64)) * scale + beta).astype("float32")])


@contextlib.contextmanager
def folded_for_inference(model: keras.Layer):
    """Inside the block, every functional sub-model of `model` (e.g. a keras-iqa model's ResNet `backbone`) that computes in
    bfloat16 / float16 and has Conv2D -> BatchNormalization pairs is replaced by its `fold_batch_norm` copy.

    For tracing an inference function (`keras_iqa.evaluation.predict.make_score_fn`): the graph traced inside the block keeps
    the folded weights (a snapshot of the current ones); the model itself is restored on exit, untouched for training and
    saving. float32 sub-models are left alone (TF's graph optimiser folds BN there itself). Yields the list of folded copies:
    keep it referenced as long as the traced function is used (a `tf.function` holds its captured variables weakly).
    """
    swapped, folded = [], []
    try:
        for layer in model._flatten_layers(include_self=True):
            for name, value in list(vars(layer).items()):
                if not (_is_functional(value) and value.compute_dtype in ("bfloat16", "float16")):
                    continue
                copy = fold_batch_norm(value)  # the model itself when there is nothing to fold
                if copy is not value:
                    object.__setattr__(copy, "_kiqa_fold_source", value)  # for refold_batch_norm(source, copy)
                    folded.append(copy)
                    object.__setattr__(layer, name, copy)  # bypasses Keras tracking on purpose
                    swapped.append((layer, name, value))
        yield folded
    finally:
        for layer, name, value in reversed(swapped):
            object.__setattr__(layer, name, value)
