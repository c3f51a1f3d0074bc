"""keras-iqa: no-reference image quality assessment on TensorFlow 2 / Keras 3 (HCL reconstruction, REQA, MetaIQA)."""

from keras_iqa.registry import create_model, get_card, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "get_card", "list_models", "__version__"]
