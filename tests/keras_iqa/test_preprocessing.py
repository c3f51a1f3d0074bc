"""`ImageNetNormalization` is Keras's `Rescaling` with the ImageNet constants, and `.keras` files written by the earlier,
hand-written layer load and give the same outputs.

fixtures/imagenet_normalization_v0.keras was saved by the hand-written layer (keras-iqa before issue 23): a model
Input -> ImageNetNormalization -> Conv2D(2, 3), seeded; imagenet_normalization_v0.npz holds its input `x` and output `y`.
"""

from pathlib import Path

import keras
import numpy as np

from keras_iqa.layers.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImageNetNormalization

FIXTURES = Path(__file__).parent / "fixtures"


def test_old_keras_file_loads_with_the_same_outputs():
    data = np.load(FIXTURES / "imagenet_normalization_v0.npz")
    # a plain Keras model holding the layer (not a keras-iqa model, which `load_keras_model` would refuse): Keras's own
    # loader finds the registered layer once keras_iqa is imported
    model = keras.saving.load_model(FIXTURES / "imagenet_normalization_v0.keras", compile=False, safe_mode=True)
    norm = model.get_layer("imagenet_norm")
    assert isinstance(norm, ImageNetNormalization) and isinstance(norm, keras.layers.Rescaling)
    np.testing.assert_allclose(np.asarray(model(data["x"])), data["y"], atol=1e-5, rtol=0)


def test_matches_the_formula_and_keeps_its_config():
    x = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3)).astype("float32")
    expected = (x / 255.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    layer = ImageNetNormalization(name="n")
    np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-5, rtol=0)
    config = layer.get_config()
    assert "scale" not in config and "offset" not in config  # the constants are the class's, not the file's
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is ImageNetNormalization and again.name == "n"
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(layer(x)), atol=0, rtol=0)
    half = ImageNetNormalization(dtype="mixed_bfloat16")(x)
    assert keras.backend.standardize_dtype(half.dtype) == "bfloat16"
    np.testing.assert_allclose(np.asarray(keras.ops.cast(half, "float32")), expected, atol=0.05, rtol=0)  # bf16 rounding
