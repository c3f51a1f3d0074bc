"""Model families: REQA, MetaIQA, HCL (one module each), imported lazily: `from keras_iqa.models import REQA` works and
`import keras_iqa.models` stays light."""

import importlib

_LAZY = {
    "IQAModel": "keras_iqa.models.base",
    "REQA": "keras_iqa.models.reqa",
    "MetaIQA": "keras_iqa.models.metaiqa",
    "HCL": "keras_iqa.models.hcl",
    "HCLSynthetic": "keras_iqa.models.hcl",
    "RestorationNet": "keras_iqa.models.hcl",
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_iqa.models' has no attribute {name!r}")
