"""The input/output contract of an exported model, written as JSON beside every export (SavedModel `assets.extra/keras_iqa.json`,
TFLite sidecar `<file>.json`) and read back by `keras_iqa.scoring`."""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from data_pipeline.test_time import TestTimeCrops

CONTRACT_VERSION = 2  # 2: "test_time" (the crop contract with its positions) replaces "served_crop_policy" / "grid"


def model_contract(model, **extra) -> dict:
    """Describes how to feed `model` (an `IQAModel`) and read its output."""
    for attr in ("score_range", "higher_better", "crop_size", "test_crops", "crop_policy"):  # test_resize: optional
        if not hasattr(model, attr):
            raise ValueError(f"{type(model).__name__} has no attribute {attr!r}: export needs a keras_iqa IQAModel "
                             "(keras_iqa.models.base.IQAModel subclass)")
    test_time = TestTimeCrops.from_model(model)
    n = test_time.num_crops
    try:
        import keras  # late: reading a contract (TFLite scoring) needs no TensorFlow
        import tensorflow as tf

        versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    except Exception:  # pragma: no cover
        versions = {}
    return {
        "contract_version": CONTRACT_VERSION,
        "model_class": type(model).__name__,
        "model_name": model.name,
        "score_range": list(model.score_range),
        "higher_better": bool(model.higher_better),
        "score_normalized": "(score - low) / (high - low) clipped to [0, 1], flipped when lower is better: 1 = best quality",
        "crop_size": int(model.crop_size),
        "test_crops": int(model.test_crops),
        "crop_policy": model.crop_policy,
        "test_resize": test_time.resize if not isinstance(test_time.resize, tuple) else list(test_time.resize),
        "test_time": test_time.to_dict(),
        "input": {
            "pixels": "RGB, float32 values in [0, 255] (no normalisation: ImageNet mean/std is applied inside the model)",
            "crop_shape": [int(model.crop_size), int(model.crop_size), 3],
        },
        "image_score": f"mean of the per-crop scores over the {n} {test_time.policy} crop(s) of the image (test_time)",
        "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
        **extra,
    }


def write_json(obj: dict, path: os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
    return path


def read_json(path: os.PathLike) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
