"""Keras finds the keras-iqa model classes once `keras_iqa` is imported, as it finds keras-hub's.

`keras.saving.load_model("m.keras")` (and `keras.saving.deserialize_keras_object`) looks a saved class up among the
registered ones; keras-hub registers its classes when it is imported. Registering keras-iqa's means importing the model
families (`registry.list_models`), which imports Keras and TensorFlow, while `import keras_iqa` must stay light
(`keras-iqa --help` and `keras-iqa models` never import TensorFlow, tests/test_import_policy.py). So
`register_with_keras()`, called by `import keras_iqa`, registers at once when Keras is already imported, and otherwise
adds a `sys.meta_path` finder that registers right after Keras has been imported, and removes itself. When Keras is
imported inside another watched import still running (TensorFlow, keras-hub, a keras-iqa module), registration waits
until that import has finished, so no half-imported module is used. A program that never imports Keras never pays for
the families.
"""

from __future__ import annotations

import importlib.abc
import sys
import warnings

from keras_iqa import registry

_WATCHED = ("keras", "keras_hub", "tensorflow")


def _watched(name: str) -> bool:
    """Keras, TensorFlow and keras-hub themselves (their submodules finish within them) and keras-iqa's modules."""
    return name in _WATCHED or name.startswith("keras_iqa.")


def _importing(name: str) -> bool:
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of a watched module so that registration is tried after it executes."""

    def find_spec(self, name, path=None, target=None):
        if not _watched(name):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def exec_then_register(module):
                exec_module(module)
                _register_when_ready(skip=module.__name__)

            spec.loader.exec_module = exec_then_register
        return spec


_FINDER = _RegisterAfterKeras()


def _register_when_ready(skip: str = "") -> None:
    if _FINDER not in sys.meta_path or "keras" not in sys.modules:
        return
    if any(_importing(m) for m in list(sys.modules) if m != skip and _watched(m)):
        return
    sys.meta_path.remove(_FINDER)
    _register()


def _register() -> None:
    try:
        registry.list_models()  # imports the family modules: their classes register with Keras
    except Exception as e:  # never break the user's `import keras`; keras_iqa.load_model registers on its own
        warnings.warn(f"keras_iqa could not register its model classes with Keras ({type(e).__name__}: {e}); "
                      "load keras-iqa .keras files with keras_iqa.load_model", RuntimeWarning, stacklevel=2)


def register_with_keras() -> None:
    """Registers the keras-iqa model classes with Keras now if Keras is imported, else right after it is."""
    if "keras" in sys.modules:
        _register()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
