"""What every training task shares: the `Task` interface, the backbone-weights rule and the test-time contract.

A task (TF Model Garden's `base_task.Task` in spirit, without its trainer) is one method's training recipe: its config
dataclass (`config_cls`), `build_model(cfg)`, `build_inputs(cfg, ...)` (datasets from `data_pipeline.input.RecordReader`)
and `train(cfg, ...)` (run directory, callbacks, fit, save, evaluate, `results.json`). The `keras-iqa train METHOD`
commands are thin adapters: arguments -> config -> task.

Example:
>>> from keras_iqa.registry import get_card
>>> from keras_iqa.tasks.base import resolve_backbone_weights
>>> resolve_backbone_weights("auto", get_card("reqa").config())
'imagenet'
>>> resolve_backbone_weights("auto", get_card("reqa-tiny").config()) is None
True
>>> resolve_backbone_weights(None, get_card("reqa").config()) is None
True
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["AUTO", "Task", "is_full_size", "resolve_backbone_weights", "set_test_contract"]

AUTO = "auto"


def is_full_size(model_config) -> bool:
    """True for a card at the paper's size (full-width, standard-depth backbone): the size ImageNet weights exist for."""
    return getattr(model_config, "width", 1.0) == 1.0 and getattr(model_config, "blocks", None) is None


def resolve_backbone_weights(value: Optional[str], model_config) -> Optional[str]:
    """`backbone_weights` of a training config: "auto" means "imagenet" for full-size cards (`is_full_size`) and None (random
    init) for tiny ones, whose narrower / shallower backbones have no ImageNet weights; any other value is used as is."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return "imagenet" if is_full_size(model_config) else None
    return value


def set_test_contract(model, resize=None, eval_crops: Optional[int] = None, eval_mode: Optional[str] = None):
    """Sets the model's test-time contract from a training config, BEFORE training, so validation, `model.keras`, `score`,
    the SavedModel and TFLite all use it: `test_resize` = the training `resize` (the test image is resized exactly as the
    training images were before their crops), `crop_policy` = `eval_mode`, `test_crops` = `eval_crops` (1 for "resize",
    one pass over the whole image). None keeps the model's (its card's) value. Returns the model."""
    from keras_iqa.models.base import _resize_value

    model.test_resize = _resize_value(resize)
    if eval_mode is not None:
        model.crop_policy = eval_mode
    if eval_mode == "resize":
        model.test_crops = 1
    elif eval_crops is not None:
        model.test_crops = int(eval_crops)
    return model


class Task:
    """One method's training recipe. Subclasses set `name` and `config_cls` and implement the three steps; the module of a
    task exposes one instance as `TASK` (found by `keras_iqa.tasks.get_task`)."""

    name: str = ""
    config_cls: type = object
    description: str = ""

    def build_model(self, cfg) -> Any:
        """The model of `cfg`, its test-time contract set (`set_test_contract`)."""
        raise NotImplementedError

    def build_inputs(self, cfg, *args, **kwargs) -> Any:
        """The training / evaluation data of `cfg` (readers and `tf.data` datasets)."""
        raise NotImplementedError

    def train(self, cfg, *args, **kwargs) -> dict:
        """Trains, saves and evaluates into a run directory; returns what it wrote to `results.json`. A task without a
        command module of its own is run by `keras-iqa train NAME --data DIR --out DIR` as `train(cfg, data, out)`
        (`data`: the one --data directory, or a list when the flag is repeated)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        cls = getattr(self.config_cls, "__name__", self.config_cls)
        return f"{type(self).__name__}(name={self.name!r}, config_cls={cls})"
