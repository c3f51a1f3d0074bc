"""`IQAModel`: what every keras-iqa model offers to evaluation, export and scoring code.

- inputs: float32 RGB crops [B, crop_size, crop_size, 3] with pixel values in [0, 255] (normalisation is inside the model);
- `score(crops)`: the final quality score per crop, shape [B], on the model's `score_range` scale;
- `score_range`, `higher_better`, `crop_size`, `test_crops` (crops averaged per image at test time), `crop_policy`
  ("random" | "grid" | "resize") and `test_resize` (None | short side | (h, w), applied before cropping, as in training)
  describe the test-time contract (`data_pipeline.test_time.TestTimeCrops.from_model`); they are saved by `get_config`;
- images (a path, a `PIL.Image`, a uint8 or [H, W(, C)] array, encoded bytes, a list of them) are not crops:
  `model.score(images)` scores them through the test-time contract (`keras_iqa.score(images, model=model)`), and
  `model(images)` refuses them in one line that says so; `model(crops)` is Keras's call as ever;
- `from_config` rebuilds the architecture only: every `backbone_weights` in a saved config is ignored (set to None), so
  loading a `.keras` file or a preset never fetches a backbone (docs/security.md, Models: data and programs).
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import PIL.Image
from keras import ops

from keras_iqa import scoring
from keras_iqa.presets import save_to_preset

#: The `IQAModel` arguments that describe the test-time contract (saved by `get_config`).
CONTRACT_ARGS = ("score_range", "higher_better", "crop_size", "test_crops", "crop_policy", "test_resize")


class IQAModel(keras.Model):
    """Base class of the REQA, MetaIQA and HCL models (see the module docstring).

    Args:
        score_range: (low, high) of the output scale.
        higher_better: score direction.
        crop_size: square crop side the model was built for.
        test_crops: number of crops averaged per test image.
        crop_policy: how test crops are taken: "random" (official REQA), "grid" (deterministic) or "resize" (whole image).
        test_resize: None, an int (short side) or (h, w): the image is resized so before its crops are taken, the same
            resize training applied before its random crops (REQA's KonIQ (384, 512)); ignored by crop_policy "resize".
    """

    def __init__(self, score_range=(0.0, 100.0), higher_better=True, crop_size=224, test_crops=25, crop_policy="random",
                 test_resize=None, **kwargs):
        super().__init__(**kwargs)
        if crop_policy not in ("random", "grid", "resize"):
            raise ValueError(f"crop_policy must be 'random', 'grid' or 'resize', got {crop_policy!r}")
        self.score_range = tuple(float(v) for v in score_range)
        self.higher_better = bool(higher_better)
        self.crop_size = int(crop_size)
        self.test_crops = int(test_crops)
        self.crop_policy = crop_policy
        self.test_resize = _resize_value(test_resize)

    def use_model_config(self, cfg) -> None:
        """Keeps a family's config dataclass as `self.model_config` (as built) and its fields as attributes (`model.steps`,
        ...; the contract fields are `IQAModel`'s attributes, set by `__init__`)."""
        self.model_config = cfg
        for f in dataclasses.fields(cfg):
            if f.name not in CONTRACT_ARGS:
                setattr(self, f.name, getattr(cfg, f.name))

    def __call__(self, *args, **kwargs):
        if args and is_image_input(args[0]):
            raise TypeError(f"{type(self).__name__}(x) takes a float32 batch of crops [B, {self.crop_size}, "
                            f"{self.crop_size}, 3]; for images (a path, PIL image, uint8 array, bytes) use "
                            "model.score(x) or keras_iqa.score(x, model=model), which take the test-time crops")
        return super().__call__(*args, **kwargs)

    def score(self, crops):
        """Final score per crop, shape [B], for a batch of crops; for images (see the module docstring) the `Scores` of
        `keras_iqa.score(images, model=self)`: one per image, through the test-time contract (`float(...)` for one)."""
        if is_image_input(crops):
            return scoring.score(crops, model=self)
        return self.crop_scores(crops)

    def crop_scores(self, crops):
        """Final score per crop, shape [B]. Subclasses whose `call` returns several outputs override this."""
        out = self(crops, training=False)
        return ops.reshape(out, (-1,))

    def normalized_score(self, scores):
        """Maps scores from `score_range` to [0, 1], higher = better."""
        lo, hi = self.score_range
        x = ops.clip((scores - lo) / (hi - lo), 0.0, 1.0)
        return x if self.higher_better else 1.0 - x

    def save_to_preset(self, preset_dir, metadata=None):
        """Writes this model as a preset folder (config.json, model.weights.h5, metadata.json), keras-hub's layout;
        `keras_iqa.from_preset(preset_dir)` loads it. See `keras_iqa.presets.save_to_preset` (docs/presets.md)."""
        return save_to_preset(self, preset_dir, metadata=metadata)

    @classmethod
    def from_config(cls, config):
        """The model of a saved config; the weights come from the saved file, never from `backbone_weights`."""
        return cls(**without_layer_keys(config))

    def get_config(self):
        return {
            "score_range": list(self.score_range),
            "higher_better": self.higher_better,
            "crop_size": self.crop_size,
            "test_crops": self.test_crops,
            "crop_policy": self.crop_policy,
            "test_resize": list(self.test_resize) if isinstance(self.test_resize, tuple) else self.test_resize,
            "name": self.name,
        }


def _resize_value(value):
    """None | int (short side) | (h, w): the normalised `test_resize` value."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    h, w = (int(v) for v in value)
    return (h, w)


def split_config(config_cls, kwargs: dict):
    """`(config, rest)`: the fields of the model config dataclass `config_cls` taken out of a model's `kwargs` (the rest
    goes to `IQAModel` / `keras.Model`). The contract fields the config holds (`crop_size`, `score_range`, ...) are passed
    on in `rest` too, so a family's `__init__(**kwargs)` spells none of its hyper-parameters."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    rest = {k: v for k, v in kwargs.items() if k not in names}
    cfg = config_cls(**{k: v for k, v in kwargs.items() if k in names})
    rest.update({k: getattr(cfg, k) for k in CONTRACT_ARGS if k in names})
    return cfg, rest


def without_layer_keys(config: dict) -> dict:
    """A saved model config less the keys Keras adds to every layer's (`trainable`, `dtype`), for `from_config` of models
    whose `__init__` takes only their own arguments; every `backbone_weights` in it, nested ones too, is None: a loaded
    model takes its weights from its own file, and a reference in a config (a hub handle, a URL, a path) is never
    fetched (docs/security.md, Models: data and programs)."""
    return _no_backbone_weights({k: v for k, v in config.items() if k not in ("trainable", "dtype")})


def _no_backbone_weights(value):
    if isinstance(value, dict):
        return {k: None if k == "backbone_weights" else _no_backbone_weights(v) for k, v in value.items()}
    return value


def is_image_input(x) -> bool:
    """True for what `keras_iqa.score` reads as images and Keras cannot take as crops: a path, encoded bytes, a
    `PIL.Image`, a numpy array that is uint8 or [H, W(, C)], or a list / tuple holding one of these."""
    if isinstance(x, (list, tuple)):
        return any(is_image_input(v) for v in x)
    if isinstance(x, np.ndarray):
        return x.dtype == np.uint8 or x.ndim in (2, 3)
    return isinstance(x, (str, bytes, os.PathLike, PIL.Image.Image))


def config_json(cfg) -> dict:
    """A model config as `get_config` saves it, less the contract fields (`IQAModel.get_config` saves those from the
    model's attributes, which a training command may set after building: `test_crops`, `crop_policy`, ...): JSON types
    (tuples as lists) and `backbone_weights` None, since the weights come from the saved file (a loaded model rebuilds
    its backbone without downloading a preset)."""
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items() if k not in CONTRACT_ARGS}
    if "backbone_weights" in out:
        out["backbone_weights"] = None
    return out
