"""FusedAdam (keras_iqa/training/optimizers.py): same updates as keras.optimizers.Adam, Keras conventions kept."""

import numpy as np
import pytest

import keras
import tensorflow as tf

from keras_iqa.training.optimizers import FusedAdam


def _run(opt, steps=5, seed=0):
    rng = np.random.default_rng(seed)
    ws = [tf.Variable(rng.normal(size=s).astype("float32")) for s in ((3, 3, 4, 8), (8,), (17,))]
    for _ in range(steps):
        grads = [tf.constant(rng.normal(size=w.shape).astype("float32")) for w in ws]
        opt.apply_gradients(zip(grads, ws))
    return [w.numpy() for w in ws], opt


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.01, "epsilon": 1e-8, "beta_2": 0.99},
                                    {"learning_rate": keras.optimizers.schedules.CosineDecay(1e-2, 10)},
                                    {"amsgrad": True}])
def test_fused_adam_matches_keras_adam(kwargs):
    kw = {"learning_rate": 1e-2, **kwargs}
    ref, _ = _run(keras.optimizers.Adam(**kw))
    got, opt = _run(FusedAdam(**kw))
    start, _ = _run(FusedAdam(learning_rate=0.0), steps=0)
    for r, g, s in zip(ref, got, start):
        assert np.abs(g - s).max() > 1e-3  # the variables moved
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    assert int(opt.iterations) == 5


def test_fused_adam_in_fit_and_keras_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=FusedAdam(1e-2), loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    hist = model.fit(x, y, epochs=5, batch_size=16, verbose=0).history["loss"]
    assert hist[-1] < hist[0]
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, FusedAdam) and int(loaded.optimizer.iterations) == 20
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
