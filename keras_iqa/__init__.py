"""keras-iqa: no-reference image quality assessment on TensorFlow 2 / Keras 3 (HCL reconstruction, REQA, MetaIQA)."""

import importlib

from keras_iqa.registry import create_model, get_card, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "from_preset", "get_card", "list_models", "load_model", "score", "__version__"]

# imported on first use: `import keras_iqa` stays free of TensorFlow
_LAZY = {"from_preset": "keras_iqa.presets", "load_model": "keras_iqa.scoring", "score": "keras_iqa.scoring"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_iqa' has no attribute {name!r}")


# `keras.saving.load_model` finds the keras-iqa classes once Keras is imported (see keras_iqa/serializables.py)
from keras_iqa.serializables import register_with_keras  # noqa: E402

register_with_keras()
