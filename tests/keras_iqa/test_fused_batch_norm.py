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
    std = np.sqrt(y.var((0, 1, 2)) + 1e-3)
    ref = (y - y.mean((0, 1, 2))) / std
    # bf16 (epsilon 2^-8): the input and the output are each rounded (<= 2^-9 relative), and the batch mean and variance
    # come from the rounded input (each off by <= 2^-9 max|y| / std once normalised); whatever the CPU's bf16 path
    tol = 2.0 ** -8 * (np.abs(ref) + 2 * np.abs(y).max((0, 1, 2)) / std)
    err = np.abs(np.asarray(tf.cast(out, tf.float32)) - ref)
    assert np.all(err <= tol), (err.max(), (err / tol).max())


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


def _conv_bn_net():
    """Conv -> BN pairs of every kind fold_batch_norm meets: no bias, bias, BN without scale/center, BN after a ReLU
    (not foldable), a conv whose output is also a model output (not foldable), a nested functional model."""
    inner_in = keras.Input((8, 8, 4))
    t = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="ic")(inner_in)
    t = FusedBatchNormalization(name="ibn")(t)
    inner = keras.Model(inner_in, keras.layers.ReLU()(t), name="inner")
    inp = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inp)
    a = keras.layers.BatchNormalization(name="bn1")(a)
    b = keras.layers.Conv2D(4, 1, use_bias=False, name="c2")(inp)
    b = keras.layers.BatchNormalization(center=False, scale=False, name="bn2")(b)
    h = keras.layers.ReLU()(keras.layers.Add()([a, b]))
    c = keras.layers.BatchNormalization(name="bn3")(h)  # after a ReLU: stays a BN
    d = keras.layers.Conv2D(4, 1, name="c4")(c)
    e = keras.layers.BatchNormalization(name="bn4")(d)  # c4's output is also an output: stays
    model = keras.Model(inp, [inner(e), d])
    rng = np.random.default_rng(3)
    for layer in list(model.layers) + list(inner.layers):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype("float32") * (1 if i % 2 else rng.choice([-1, 1]))
                               for i, w in enumerate(layer.get_weights())])
    return model


def test_fold_batch_norm_matches_inference_outputs(tmp_path):
    from keras_iqa.layers import FoldedBatchNormalization, fold_batch_norm

    model = _conv_bn_net()
    folded = fold_batch_norm(model)
    kinds = {n: type(folded.get_layer(n)).__name__ for n in ("bn1", "bn2", "bn3", "bn4")}
    assert kinds == {"bn1": "FoldedBatchNormalization", "bn2": "FoldedBatchNormalization",
                     "bn3": "BatchNormalization", "bn4": "BatchNormalization"}
    assert folded.get_layer("c2").use_bias and type(folded.get_layer("inner").get_layer("ibn")) is FoldedBatchNormalization
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    for want, got in zip(model(x, training=False), folded(x, training=False)):
        np.testing.assert_allclose(want, got, rtol=1e-4, atol=1e-5)
    assert type(model.get_layer("bn1")) is keras.layers.BatchNormalization  # the original is untouched
    folded.save(tmp_path / "f.keras")
    loaded = keras.models.load_model(tmp_path / "f.keras")
    np.testing.assert_allclose(loaded(x)[0], folded(x)[0], atol=1e-6)


def test_fold_batch_norm_resnet_and_bad_input():
    from keras_iqa.backbones import resnet_features
    from keras_iqa.layers import fold_batch_norm

    feats = resnet_features(18, width=0.25, blocks=(1, 1, 1, 1))
    rng = np.random.default_rng(1)
    for layer in feats.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), rng.uniform(0.5, 2, n)])
    folded = fold_batch_norm(feats)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    x = rng.uniform(size=(2, 64, 64, 3)).astype("float32")
    want, got = feats(x, training=False), folded(x, training=False)
    for k in want:
        np.testing.assert_allclose(want[k], got[k], rtol=1e-4, atol=2e-5)

    class Sub(keras.Model):
        def call(self, x):
            return x

    try:
        fold_batch_norm(Sub())
    except ValueError as e:
        assert "functional" in str(e)
    else:
        raise AssertionError("a subclassed model must be refused")


def test_fold_keeps_a_bf16_model_in_bf16_under_the_float32_policy():
    """Folding a mixed_bfloat16 backbone while the global policy is float32 (as `keras_iqa.score(..., precision="bf16")`
    does): the pass-throughs keep the BN's policy, so no activation is cast to float32 and back between the layers."""
    from keras_iqa.backbones import resnet_features
    from keras_iqa.layers import FoldedBatchNormalization, fold_batch_norm

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        feats = resnet_features(18, width=0.25, blocks=(1, 1, 1, 1))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    folded = fold_batch_norm(feats)
    passes = [layer for layer in folded.layers if isinstance(layer, FoldedBatchNormalization)]
    assert passes and {layer.dtype_policy.name for layer in passes} == {"mixed_bfloat16"}
    graph = tf.function(lambda x: folded(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, 64, 64, 3], tf.float32)).graph
    casts = [op for op in graph.get_operations() if op.type == "Cast" and op.outputs[0].dtype == tf.float32
             and len(op.outputs[0].shape) == 4]
    assert len(casts) <= 4, [op.name for op in casts]  # the stage outputs at most, not one per folded layer
