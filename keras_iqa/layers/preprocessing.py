"""Input normalisation inside the models, so every entry point (fit, serving, TFLite) takes RGB pixels in [0, 255]."""

import keras
from keras import ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="keras_iqa")
class ImageNetNormalization(keras.layers.Layer):
    """Maps RGB pixels in [0, 255] to ImageNet mean/std-normalised values (torchvision convention, used by all three papers).

    Example:
    >>> import numpy as np
    >>> y = ImageNetNormalization()(np.full((1, 2, 2, 3), 255.0))
    >>> tuple(y.shape), [round(float(v), 2) for v in np.asarray(y)[0, 0, 0]]
    ((1, 2, 2, 3), [2.25, 2.43, 2.64])
    """

    def call(self, x):
        x = ops.cast(x, self.compute_dtype) / 255.0
        mean = ops.convert_to_tensor(IMAGENET_MEAN, self.compute_dtype)
        std = ops.convert_to_tensor(IMAGENET_STD, self.compute_dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape
