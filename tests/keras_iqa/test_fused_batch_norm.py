"""FusedBatchNormalization matches keras.layers.BatchNormalization (outputs, moving statistics, gradients, saving)."""

import numpy as np
import keras
import tensorflow as tf

from keras_iqa.layers.fused_batch_norm import FusedBatchNormalization, fuse_batch_norm


def _pair(shape, **kw):
    a, b = keras.layers.BatchNormalization(**kw), FusedBatchNormalization(**kw)
    a.build(shape)
    b.build(shape)
    rng = np.random.default_rng(1)
    w = [rng.uniform(0.5, 1.5, shape[-1]).astype("float32") for _ in range(4)]
    a.set_weights(w)
    b.set_weights(w)
    return a, b


def test_matches_keras_batch_norm_train_and_inference():
    x = np.random.default_rng(0).normal(2, 3, (4, 6, 6, 5)).astype("float32")
    a, b = _pair(x.shape, momentum=0.9, epsilon=1e-5)
    for training in (True, False, True):
        np.testing.assert_allclose(a(x, training=training), b(x, training=training), atol=2e-5)
    for wa, wb in zip(a.get_weights(), b.get_weights()):  # moving mean / biased variance updated alike
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    xv = tf.constant(x)
    grads = []
    for layer in (a, b):
        with tf.GradientTape() as tape:
            tape.watch(xv)
            loss = tf.reduce_sum(layer(xv, training=True) ** 2)
        grads.append(tape.gradient(loss, [xv] + layer.trainable_variables))
    for ga, gb in zip(*grads):
        np.testing.assert_allclose(ga, gb, rtol=1e-3, atol=1e-3)


def test_falls_back_off_the_fused_path_and_bf16():
    x = np.random.default_rng(0).normal(size=(3, 7)).astype("float32")  # rank 2: Keras implementation
    a, b = _pair(x.shape)
    np.testing.assert_allclose(a(x, training=True), b(x, training=True), atol=1e-5)
    y = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    c = FusedBatchNormalization(dtype="mixed_bfloat16")
    out = c(y, training=True)
    assert out.dtype == "bfloat16" and c.moving_mean.dtype == "float32"
    ref = (y - y.mean((0, 1, 2))) / np.sqrt(y.var((0, 1, 2)) + 1e-3)
    np.testing.assert_allclose(np.asarray(tf.cast(out, tf.float32)), ref, atol=0.05)


def test_fuse_model_keeps_names_weights_and_round_trips(tmp_path):
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="c")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    model = keras.Model(inp, keras.layers.ReLU()(h))
    model.get_layer("bn").set_weights([np.full(4, v, "float32") for v in (2.0, 0.5, 0.1, 3.0)])
    fused = fuse_batch_norm(model)
    assert type(fused.get_layer("bn")) is FusedBatchNormalization
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(model(x), fused(x), atol=1e-5)
    fused.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("bn")) is FusedBatchNormalization
    np.testing.assert_allclose(loaded(x), fused(x), atol=1e-6)
    assert fuse_batch_norm(fused) is fused  # nothing left to fuse
