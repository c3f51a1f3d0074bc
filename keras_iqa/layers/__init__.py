"""Custom Keras layers of keras-iqa (each registered for `.keras` serialisation)."""

from keras_iqa.layers.fused_batch_norm import FoldedBatchNormalization, FusedBatchNormalization, fold_batch_norm
from keras_iqa.layers.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImageNetNormalization

__all__ = ["FoldedBatchNormalization", "FusedBatchNormalization", "fold_batch_norm", "IMAGENET_MEAN", "IMAGENET_STD",
           "ImageNetNormalization"]
