"""Input normalisation inside the models, so every entry point (fit, serving, TFLite) takes RGB pixels in [0, 255]."""

import keras
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="keras_iqa")
class ImageNetNormalization(keras.layers.Rescaling):
    """Maps RGB pixels in [0, 255] to ImageNet mean/std-normalised values (torchvision convention, used by all three papers).

    Keras's `Rescaling` with per-channel `scale = 1 / (255 std)` and `offset = -mean / std`, i.e. `(x / 255 - mean) / std`
    (keras-hub's image converters normalise the same way). The constants are fixed: the config holds only the base layer
    fields, so `.keras` files written by earlier versions (a hand-written layer with the same config) load unchanged.

    Example:
    >>> import numpy as np
    >>> y = ImageNetNormalization()(np.full((1, 2, 2, 3), 255.0))
    >>> tuple(y.shape), [round(float(v), 2) for v in np.asarray(y)[0, 0, 0]]
    ((1, 2, 2, 3), [2.25, 2.43, 2.64])
    """

    def __init__(self, **kwargs):
        for key in ("scale", "offset"):  # fixed by the class
            kwargs.pop(key, None)
        mean, std = np.asarray(IMAGENET_MEAN, np.float64), np.asarray(IMAGENET_STD, np.float64)
        super().__init__(scale=tuple(1.0 / (255.0 * std)), offset=tuple(-mean / std), **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("scale", None)
        config.pop("offset", None)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
