"""Model families, one package each in keras-hub's layout (`reqa/`, `metaiqa/`, `hcl/`: config, model, presets), plus
`base.IQAModel` (the contract every model offers) and `two_optimizer.TwoOptimizerModel` (backbone + rest optimizers).

The classes are imported lazily, so `from keras_iqa.models import REQA` works and `import keras_iqa.models` stays light;
which class lives in which family package comes from the registry's family table (`keras_iqa.registry.FAMILIES`).
"""

import importlib

from keras_iqa.registry import model_classes

_BASE = {"IQAModel": "keras_iqa.models.base", "TwoOptimizerModel": "keras_iqa.models.two_optimizer"}
__all__ = sorted({**_BASE, **model_classes()})


def __getattr__(name):
    homes = {**_BASE, **model_classes()}  # read when asked: a family added to the registry's table is found too
    if name in homes:
        return getattr(importlib.import_module(homes[name]), name)
    raise AttributeError(f"module 'keras_iqa.models' has no attribute {name!r}")
