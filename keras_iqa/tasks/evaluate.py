"""One evaluation for every task: predictions under the model's test-time contract, every metric, one error rule.

`evaluate(model, data)` takes a `RecordReader` (predictions by `keras_iqa.evaluation.predict_reader`: the crops, resize and
averaging the model carries, the same as `keras-iqa score`, the SavedModel and TFLite) or (x, y) batches (one forward pass
each: a `tf.data` dataset, a list of batches or one (x, y) tuple). Metrics come from `keras_iqa.metrics.evaluate_predictions`
(SROCC, KROCC, PLCC, logistic PLCC / RMSE, MAE). Too few images, a constant MOS or constant predictions (a collapsed model,
a tiny smoke run) never crash a training run: the correlations are NaN and `metrics["error"]` says why.

Example:
>>> import numpy as np, keras
>>> from keras_iqa.tasks.evaluate import evaluate
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="ones", use_bias=False)])
>>> x = np.array([[0, 1], [1, 1], [2, 1], [3, 1]], "float32")
>>> out = evaluate(model, (x, x[:, 0] * 10))
>>> out["metrics"]["n"], round(out["metrics"]["srocc"], 6)
(4, 1.0)
>>> bad = evaluate(model, (x[:2], [1.0, 2.0]))["metrics"]  # 2 images: NaN and the reason, no crash
>>> bool(np.isnan(bad["srocc"])), "3" in bad["error"]
(True, True)
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from keras_iqa.evaluation import predict_reader
from keras_iqa.evaluation.fine_grained import fine_grained_report
from keras_iqa.metrics import evaluate_predictions, mae, rmse

__all__ = ["evaluate", "failed_metrics", "metrics_of", "mos_scale", "predict_batches"]

NAN = float("nan")


def predict_batches(model, data) -> tuple:
    """(pred, target) float64 arrays over (x, y) batches: a dataset, a list of batches, or one (x, y) tuple. One forward
    pass per batch (`training=False`), the output flattened to one score per row."""
    if isinstance(data, tuple) and len(data) == 2:
        data = [data]

    @tf.function(reduce_retracing=True)
    def forward(x):
        return tf.reshape(model(x, training=False), [-1])

    preds, targets = [], []
    for x, y in data:
        x = tf.nest.map_structure(tf.convert_to_tensor, x)
        preds.append(np.asarray(forward(x), dtype=np.float64))
        targets.append(np.asarray(y, dtype=np.float64).reshape(-1))
    if not preds:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(preds), np.concatenate(targets)


def failed_metrics(n: int, error: str, pred=None, target=None) -> dict:
    """The metrics dict of an evaluation whose correlations are undefined: NaN correlations, `error` = why; raw RMSE / MAE
    when there is at least one finite (pred, target) pair."""
    out = {"n": int(n), "srocc": NAN, "krocc": NAN, "plcc": NAN, "rmse": NAN, "rmse_raw": NAN, "mae": NAN,
           "error": str(error)}
    if pred is not None and target is not None:
        try:
            out.update(rmse_raw=rmse(pred, target, params=None), mae=mae(pred, target))
        except ValueError:  # no pairs, unequal lengths or non-finite values: no raw errors either
            pass
    return out


def metrics_of(pred, target) -> dict:
    """`keras_iqa.metrics.evaluate_predictions`, under the one error rule: whatever makes the correlations undefined (fewer
    than 3 images, constant MOS or predictions, NaN) gives `failed_metrics` instead of an exception."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant predictions: reported in "error" instead
            m = evaluate_predictions(pred, target)
    except ValueError as e:
        return failed_metrics(len(pred), str(e), pred, target)
    if "error" in m:  # constant predictions: evaluate_predictions already reports NaN with the reason
        return {**failed_metrics(m["n"], m["error"], pred, target), **m}
    return m


def mos_scale(data, model=None) -> tuple:
    """((lo, hi), higher_better) of the targets of `data`: 0-100 for a reader with target "normalized100", 0-1 for
    "normalized", the dataset's declared scale for "mos", else the model's `score_range`."""
    target = getattr(data, "target", None)
    if target == "normalized100":
        return (0.0, 100.0), True
    if target == "normalized":
        return (0.0, 1.0), True
    if target == "mos" and getattr(data, "score_range", None) is not None:
        return tuple(float(v) for v in data.score_range), bool(getattr(data, "higher_better", True))
    rng = getattr(model, "score_range", None) or (0.0, 1.0)
    return tuple(float(v) for v in rng), bool(getattr(model, "higher_better", True))


def evaluate(model, data, num_crops: Optional[int] = None, fine: bool = False, predictions_csv=None,
             mos_range: Optional[Sequence[float]] = None) -> dict:
    """Evaluates `model` on `data` (a `RecordReader`, or (x, y) batches); returns {"metrics", "predictions" (DataFrame:
    image_id for readers, target, pred), "fine_grained" (with `fine`)}.

    Args:
        num_crops: crops per test image for a reader (default: the model's `test_crops`, its test-time contract).
        fine: add REQA's fine-grained report (per-ACR-range SROCC / PLCC, confusion, error histogram;
            `keras_iqa.evaluation.fine_grained`); its own failure is reported as {"error": ...}.
        predictions_csv: also write the predictions there.
        mos_range: the targets' (lo, hi) for the fine-grained bins (default: `mos_scale(data)`).
    """
    if hasattr(data, "eval_dataset"):  # a RecordReader: the model's test-time contract
        df = predict_reader(model, data, num_crops=num_crops)
    else:
        pred, target = predict_batches(model, data)
        df = pd.DataFrame({"target": target, "pred": pred})
    if predictions_csv is not None:
        df.to_csv(predictions_csv, index=False)
    pred, target = df["pred"].to_numpy(np.float64), df["target"].to_numpy(np.float64)
    out = {"metrics": metrics_of(pred, target), "predictions": df}
    if fine:
        (lo_hi, hb) = mos_scale(data, model)
        if mos_range is not None:
            lo_hi = tuple(mos_range)
        try:
            out["fine_grained"] = fine_grained_report(pred, target, mos_range=lo_hi, mos_higher_better=hb,
                                                      pred_range=getattr(model, "score_range", None),
                                                      pred_higher_better=bool(getattr(model, "higher_better", True)))
        except ValueError as e:
            out["fine_grained"] = {"error": str(e)}
    return out

