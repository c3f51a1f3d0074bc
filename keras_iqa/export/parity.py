"""Parity of exported .tflite files with the Keras model, run with the `ai-edge-litert` interpreter.

For a set of images, every image's test-time crops (`data_pipeline.test_time`) are scored by the Keras model and by each .tflite:
- `max_abs_diff`: largest |tflite - keras| over all crops, also as a fraction of the score range (`max_abs_diff_rel`);
- `srocc_vs_keras`: Spearman correlation of the per-image scores (mean over crops) with the Keras model's.
Targets (issue #9): fp32 `max_abs_diff_rel` <= 1e-4, fp16 <= 1e-2; int8 (and dynamic) SROCC vs the fp32 Keras model >= 0.98.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf
from scipy.stats import spearmanr

from data_pipeline.test_time import TestTimeCrops, scale_to_photo_size
from keras_iqa.export.samples import synthetic_images
from keras_iqa.export.tflite_scorer import TFLiteScorer
from keras_iqa.progress import progress as make_bar

TARGETS = {
    "none": {"max_abs_diff_rel": 1e-4},
    "fp16": {"max_abs_diff_rel": 1e-2},
    "dynamic": {"srocc_vs_keras": 0.98},
    "int8": {"srocc_vs_keras": 0.98},
}


def _srocc(a, b) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).correlation)


def keras_crop_scores(model, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Per-crop scores of the Keras model (one traced function, fixed signature)."""
    c = int(model.crop_size)
    fn = tf.function(lambda x: tf.reshape(model.score(x), [-1]),
                     input_signature=[tf.TensorSpec([None, c, c, 3], tf.float32)])
    return np.concatenate([np.asarray(fn(crops[i:i + batch_size])) for i in range(0, len(crops), batch_size)])


def _variant_entry(q: str, path, scorer, got, ref, got_img, ref_img, score_span: float) -> dict:
    """One variant's parity entry: differences per scored input (crop or photo), SROCC per image, targets checked."""
    diff = float(np.max(np.abs(got - ref)))
    entry = {
        "file": str(path),
        "max_abs_diff": diff,
        "max_abs_diff_rel": diff / score_span,
        "mean_abs_diff": float(np.mean(np.abs(got - ref))),
        "srocc_vs_keras": _srocc(got_img, ref_img),
        "xnnpack": bool(getattr(scorer.interp, "xnnpack", True)),
    }
    checks = {k: (entry[k] <= v if k.startswith("max") else entry[k] >= v) for k, v in TARGETS.get(q, {}).items()}
    entry["targets"] = TARGETS.get(q, {})
    entry["pass"] = bool(all(checks.values()))
    return entry


def _per_image(scorer_fn, items, desc: str, progress: bool) -> np.ndarray:
    """`scorer_fn(item)` for every item (an image's crops, or one photo) under a per-image bar; concatenated."""
    out = []
    with make_bar(len(items), desc, progress, unit="image", leave=False) as bar:
        for item in items:
            out.append(np.asarray(scorer_fn(item)).reshape(-1))
            bar.update(1)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def parity_report(model, tflite_files: dict, images: Optional[list] = None, num_images: int = 24,
                  num_threads: int = 2, progress: bool = False) -> dict:
    """Scores `images` (uint8 HxWx3 list; default `samples.synthetic_images`) with Keras and each .tflite; see the module doc.

    progress: a per-image bar on stderr for each .tflite (the interpreter runs one crop at a time: the slow part)."""
    if images is None:
        images = synthetic_images(num_images, seed=1234)
    contract = TestTimeCrops.from_model(model)
    n, fn = contract.num_crops, contract.crop_function()
    crops = np.concatenate([np.asarray(fn(np.asarray(im, np.uint8))) for im in images])
    lo, hi = model.score_range
    ref = keras_crop_scores(model, crops)
    ref_img = ref.reshape(len(images), n).mean(1)
    report = {"images": len(images), "crops_per_image": n, "score_range": [lo, hi],
              "keras_score_spread": float(np.std(ref_img)), "variants": {}}
    for q, path in tflite_files.items():
        scorer = TFLiteScorer(path, num_threads=num_threads)
        got = _per_image(scorer, [crops[i * n:(i + 1) * n] for i in range(len(images))], f"parity {q}", progress)
        report["variants"][q] = _variant_entry(q, path, scorer, got, ref, got.reshape(len(images), n).mean(1), ref_img,
                                               hi - lo)
    report["pass"] = all(v["pass"] for v in report["variants"].values())
    return report


def photo_parity_report(model, tflite_files: dict, photo_size, images: Optional[list] = None, num_images: int = 24,
                        num_threads: int = 2, progress: bool = False) -> dict:
    """Parity of whole-photo .tflite files: each photo (the images scaled to `photo_size`, bilinear) scored by the Keras
    model through the test-time contract (as `keras-iqa score`) and by one call of each .tflite. Same fields and targets as
    `parity_report`, per image instead of per crop."""
    h, w = (int(v) for v in photo_size)
    if images is None:
        images = synthetic_images(num_images, size=(h, w), seed=1234)
    photos = [scale_to_photo_size(im, (h, w)) for im in images]
    contract = TestTimeCrops.from_model(model)
    fn = contract.crop_function()
    crops = np.concatenate([np.asarray(fn(p)) for p in photos])
    ref = contract.image_score(keras_crop_scores(model, crops).reshape(len(photos), contract.num_crops))
    lo, hi = model.score_range
    report = {"images": len(photos), "photo_size": [h, w], "crops_per_image": contract.num_crops, "score_range": [lo, hi],
              "keras_score_spread": float(np.std(ref)), "variants": {}}
    for q, path in tflite_files.items():
        scorer = TFLiteScorer(path, num_threads=num_threads)
        got = _per_image(lambda p: scorer.score_photos([p]), photos, f"parity {q}", progress).astype(np.float64)
        report["variants"][q] = _variant_entry(q, path, scorer, got, ref, got, ref, hi - lo)
    report["pass"] = all(v["pass"] for v in report["variants"].values())
    return report
