"""Per-image predictions of an `IQAModel` over a prepared dataset: the test-time protocol of the papers.

Each image gives the crops of the model's test-time contract (`data_pipeline.test_time`, via `RecordReader.eval_dataset`);
the model's `score()` is applied to every crop and the crop scores are averaged per image (`TestTimeCrops.image_score`).
Crops of several images share one forward pass.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from keras_iqa.caller import hint

__all__ = ["predict_reader", "predict_dataset", "make_score_fn"]


def make_score_fn(model, crop_size: int, fold_bn: bool = True, reuse: bool = False):
    """A `tf.function` over `model.score` with a fixed [None, c, c, 3] signature: one trace whatever the batch size.

    fold_bn: trace it with the BN of bf16/fp16 backbones folded into their convolutions
        (`keras_iqa.layers.fused_batch_norm.folded_for_inference`; the model itself is not changed). Same scores up to
        bf16 rounding, 14-22 % faster on CPU (README, Benchmarks). The folded weights are those of the moment the function
        is made (or refreshed, below).
    reuse: return the function an earlier `reuse=True` call made for this model, crop size and `fold_bn`, with its
        folded weights rewritten from the model's current ones (`refold_batch_norm`): a validation pass per epoch then
        costs no new clone of the backbone and no new trace.
    """
    import tensorflow as tf

    from keras_iqa.layers.fused_batch_norm import folded_for_inference, refold_batch_norm

    key = (int(crop_size), bool(fold_bn))
    cache = getattr(model, "_kiqa_score_fns", None)
    if reuse and cache is not None and key in cache:
        score = cache[key]
        for copy in score.folded_submodels:
            refold_batch_norm(copy._kiqa_fold_source, copy)
        return score

    @tf.function(input_signature=[tf.TensorSpec([None, crop_size, crop_size, 3], tf.float32)], reduce_retracing=True)
    def score(crops):
        return tf.reshape(tf.cast(model.score(crops), tf.float32), [-1])

    if fold_bn:
        with folded_for_inference(model) as folded:
            score.get_concrete_function()  # the one trace, taken with the folded backbone
        score.folded_submodels = folded  # keeps the captured folded weights alive with the function
    else:
        score.folded_submodels = []
    if reuse:
        if cache is None:
            cache = {}
            object.__setattr__(model, "_kiqa_score_fns", cache)  # not a tracked Keras attribute
        cache[key] = score
    return score


def policy_twin(model, policy: str = "float32"):
    """`model` itself when it computes in `policy`'s dtype; else a copy of it (same config, built under the Keras
    mixed-precision `policy`: "float32" or "mixed_bfloat16") holding its current weights. The copy is made once per model
    and policy; its weights are rewritten on every later call."""
    import keras

    dtype = keras.mixed_precision.Policy(policy).compute_dtype
    if getattr(model, "compute_dtype", "float32") == dtype:
        return model
    cache = model.__dict__.setdefault("_kiqa_policy_twins", {})  # not a tracked Keras attribute
    twin = cache.get(policy)
    if twin is None:
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(policy)
        try:
            twin = model.__class__.from_config(model.get_config())
            c = int(getattr(model, "crop_size", 224))
            twin(np.zeros((1, c, c, 3), "float32"), training=False)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        cache[policy] = twin
    twin.set_weights(model.get_weights())
    for attr in ("test_crops", "crop_policy", "test_resize", "score_range", "higher_better"):
        if hasattr(model, attr):
            setattr(twin, attr, getattr(model, attr))
    return twin


def float32_twin(model):
    """The float32 copy of a mixed-precision model (`policy_twin`): how models are scored, saved and exported."""
    return policy_twin(model, "float32")


def predict_dataset(model, dataset, batch_size: int = 32, crop_size: Optional[int] = None, progress: bool = False,
                    total: Optional[int] = None, desc: str = "predict"):
    """Scores a dataset of (crops [N, c, c, 3], target, image_id) elements; returns a DataFrame(image_id, target, pred).

    `batch_size` is the number of CROPS per forward pass (images per pass = max(1, batch_size // N)), so memory does not grow
    with the number of test crops. A mixed-precision model is scored in float32 (`float32_twin`), as it is saved and
    deployed. `progress`: a per-image bar on stderr (`keras_iqa.progress`; `total` images if known).
    """
    import pandas as pd

    from keras_iqa.progress import progress as make_bar

    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 3):
        raise ValueError(f"expected elements (crops, target, image_id) as RecordReader.eval_dataset yields, got {spec}")
    n_crops = spec[0].shape[0]
    c = int(crop_size or spec[0].shape[1] or getattr(model, "crop_size", 224))
    # the saved model.keras, `score`, the SavedModel and TFLite run float32: a mixed-precision model under training is
    # scored through its float32 twin, so its validation and test numbers are the deployed model's
    scored = float32_twin(model)
    score = make_score_fn(scored, c, reuse=True)  # one trace per model: repeated validation passes refresh its weights
    per_pass = max(1, int(batch_size) // int(n_crops)) if n_crops else 1
    ids, targets, preds = [], [], []
    bar = make_bar(total, desc, progress, unit="image", leave=False)
    try:
        _score_batches(dataset.batch(per_pass).prefetch(2), score, ids, targets, preds, bar)
    finally:
        bar.close()
    if not ids:
        return pd.DataFrame({"image_id": pd.Series([], dtype=str), "target": np.zeros(0), "pred": np.zeros(0)})
    return pd.DataFrame({"image_id": ids, "target": np.concatenate(targets), "pred": np.concatenate(preds).astype(np.float64)})


def _score_batches(batches, score, ids, targets, preds, bar):
    import tensorflow as tf

    from data_pipeline.test_time import TestTimeCrops

    for crops, target, image_id in batches:
        b, n = tf.shape(crops)[0], tf.shape(crops)[1]
        flat = tf.reshape(tf.cast(crops, tf.float32), tf.concat([[b * n], tf.shape(crops)[2:]], 0))
        s = TestTimeCrops.image_score(tf.reshape(score(flat), [b, n]))
        preds.append(s.numpy())
        targets.append(np.asarray(target.numpy(), dtype=np.float64).reshape(-1))
        ids.extend(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in image_id.numpy().reshape(-1))
        bar.update(int(b))


def predict_reader(model, reader, num_crops: Optional[int] = None, mode: Optional[str] = None, batch_size: int = 32,
                   seed: int = 0, contract=None, progress: bool = False, desc: Optional[str] = None,
                   batch_images: Optional[int] = None):
    """Predictions of `model` on every image `reader` yields: DataFrame(image_id, target, pred).

    The crops and the averaging are the model's test-time contract (`data_pipeline.test_time.TestTimeCrops.from_model`),
    the same as `keras-iqa score`, the SavedModel and TFLite; `num_crops`, `mode` and `seed` override its fields, or
    `contract` replaces it.

    Args:
        model: an `IQAModel` (uses its `score()` and its contract fields `crop_size`, `test_crops`, `crop_policy`,
            `test_resize`).
        reader: a `data_pipeline.input.RecordReader` (its `split` / `subset` choose the images).
        num_crops: crops per image (default: `model.test_crops`; 1 for mode "resize").
        mode: "random", "grid" or "resize" (default: `model.crop_policy`).
        batch_size: crops per forward pass.
        batch_images: images per forward pass instead (all their crops together; `keras-iqa evaluate --batch-size`).
        seed: seed of the "random" crop positions (default 0, as every export).
        progress: a per-image bar on stderr (`desc` names it; default the reader's dataset and split).

    Example:
        df = predict_reader(model, RecordReader("prepared/koniq", split="split_00", subset="test"))
        evaluate_predictions(df.pred, df.target)
    """
    from data_pipeline.test_time import TestTimeCrops

    if contract is None:
        contract = TestTimeCrops.from_model(model, num_crops=num_crops, policy=mode, seed=seed)
    if batch_images is not None:
        if int(batch_images) < 1:
            raise ValueError(f"{hint(f'batch_images={batch_images}', f'--batch-size {batch_images}')}: give at least 1 "
                             "image per batch")
        batch_size = int(batch_images) * max(1, int(contract.num_crops))
    ds = reader.eval_dataset(contract=contract)
    if desc is None:
        name = os.path.basename(os.path.normpath(str(getattr(reader, "data_dir", "") or ""))) or "images"
        subset = getattr(reader, "subset", None)
        desc = f"predict {name}" + (f" {reader.split}/{subset}" if subset else "")
    return predict_dataset(model, ds, batch_size=batch_size, crop_size=contract.crop_size, progress=progress,
                           total=getattr(reader, "count", None), desc=desc)
