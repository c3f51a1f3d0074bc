"""Custom Keras layers of keras-iqa (each registered for `.keras` serialisation)."""

from keras_iqa.layers.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImageNetNormalization

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageNetNormalization"]
