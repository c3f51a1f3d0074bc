"""`IQAModel`: what every keras-iqa model offers to evaluation, export and scoring code.

- inputs: float32 RGB crops [B, crop_size, crop_size, 3] with pixel values in [0, 255] (normalisation is inside the model);
- `score(crops)`: the final quality score per crop, shape [B], on the model's `score_range` scale;
- `score_range`, `higher_better`, `crop_size`, `test_crops` (crops averaged per image at test time), `crop_policy`
  ("random" | "grid" | "resize") and `test_resize` (None | short side | (h, w), applied before cropping, as in training)
  describe the test-time contract (`data_pipeline.test_time.TestTimeCrops.from_model`); they are saved by `get_config`.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

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

    def score(self, crops):
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
    whose `__init__` takes only their own arguments."""
    return {k: v for k, v in config.items() if k not in ("trainable", "dtype")}


def config_json(cfg) -> dict:
    """A model config as `get_config` saves it, less the contract fields (`IQAModel.get_config` saves those from the
    model's attributes, which a training command may set after building: `test_crops`, `crop_policy`, ...): JSON types
    (tuples as lists) and `backbone_weights` None, since the weights come from the saved file (a loaded model rebuilds
    its backbone without downloading a preset)."""
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items() if k not in CONTRACT_ARGS}
    if "backbone_weights" in out:
        out["backbone_weights"] = None
    return out
