"""The IQA field's agreement metrics between predicted scores and subjective scores (MOS).

- `srocc` (Spearman rank-order), `krocc` (Kendall tau-b, ties handled), `plcc` (Pearson) on raw predictions;
- `fit_logistic` / `logistic_map`: the nonlinear mapping the literature applies before PLCC and RMSE:
    5 parameters (VQEG FR-TV Phase I as used by Sheikh et al. 2006, Eq. "Q(x)")::

        f(x) = b1 * (0.5 - 1 / (1 + exp(b2 * (x - b3)))) + b4 * x + b5

    4 parameters (VQEG FR-TV Phase II)::

        f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2

  fitted by least squares (variable projection: grid + Nelder-Mead over the two nonlinear parameters, the others solved
  exactly; see `fit_logistic`); when the fit is not finite a
  `LogisticFitWarning` is issued and the mapping falls back to the least-squares LINEAR map (PLCC after "mapping" = raw PLCC);
- `plcc_logistic`, `rmse` (after mapping by default), `mae` (raw by default: |pred - MOS| as in REQA's Fig. 7);
- `evaluate_predictions(pred, mos) -> dict` with all of the above;
- Keras metrics `SROCC()` and `PLCC()` that accumulate every prediction of an epoch (not a mean of per-batch values).
- `HeadCorrelation(num_datasets)`: HCL curriculum 2's mean K x K PLCC between its per-dataset heads (a Keras metric).

Inputs must be finite, of equal length, with at least `MIN_SAMPLES` = 3 samples (6 for the logistic fits) and not constant;
violations raise `MetricInputError` (a `ValueError`) naming the problem and the offending index.
"""

from __future__ import annotations

import sys
import warnings
from typing import Optional, Sequence

import numpy as np

__all__ = [
    "MetricInputError", "LogisticFitWarning", "srocc", "krocc", "plcc", "plcc_logistic", "rmse", "mae", "fit_logistic",
    "logistic_map", "logistic4", "logistic5", "evaluate_predictions", "SROCC", "PLCC", "HeadCorrelation",
]

MIN_SAMPLES = 3  # a correlation of 2 points is always +-1: refuse it as a measurement


class MetricInputError(ValueError):
    """Predictions / MOS that no metric can be computed on (NaN, wrong length, too few samples, constant)."""


class LogisticFitWarning(RuntimeWarning):
    """The logistic mapping could not be fitted; the linear least-squares map was used instead."""


def _as_arrays(pred, mos, what: str, min_samples: int = MIN_SAMPLES, check_constant: bool = True):
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    m = np.asarray(mos, dtype=np.float64).reshape(-1)
    if p.shape != m.shape:
        raise MetricInputError(f"{what}: pred has {p.size} values but mos has {m.size}; pass one prediction per image")
    for name, a in (("pred", p), ("mos", m)):
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise MetricInputError(
                f"{what}: {name} has {bad.size} non-finite value(s) (first at index {bad[0]}: {a[bad[0]]!r}); "
                "drop or fix those images before computing metrics")
    if p.size < min_samples:
        raise MetricInputError(f"{what}: needs at least {min_samples} samples, got {p.size}")
    if check_constant:
        for name, a in (("pred", p), ("mos", m)):
            if np.ptp(a) == 0:
                raise MetricInputError(
                    f"{what}: {name} is constant ({a[0]!r} for all {a.size} samples); the correlation is undefined "
                    "(a collapsed model, or a subset with a single score)")
    return p, m


def srocc(pred, mos) -> float:
    """Spearman rank-order correlation (average ranks for ties), in [-1, 1]."""
    from scipy import stats

    p, m = _as_arrays(pred, mos, "srocc")
    return float(stats.spearmanr(p, m)[0])


def krocc(pred, mos) -> float:
    """Kendall rank-order correlation, tau-b (tie-corrected), in [-1, 1]."""
    from scipy import stats

    p, m = _as_arrays(pred, mos, "krocc")
    return float(stats.kendalltau(p, m, variant="b")[0])


def plcc(pred, mos) -> float:
    """Pearson linear correlation on the raw predictions (no mapping)."""
    p, m = _as_arrays(pred, mos, "plcc")
    return _pearson(p, m)


def _pearson(p: np.ndarray, m: np.ndarray) -> float:
    pc, mc = p - p.mean(), m - m.mean()
    den = np.sqrt(np.dot(pc, pc) * np.dot(mc, mc))
    if den == 0:
        raise MetricInputError("plcc: a constant input (after mapping); the correlation is undefined")
    return float(np.clip(np.dot(pc, mc) / den, -1.0, 1.0))


# ----------------------------------------------------------------------------------------------------------- logistic
def logistic5(x, b1, b2, b3, b4, b5):
    """VQEG 5-parameter logistic: b1 * (0.5 - 1 / (1 + exp(b2 (x - b3)))) + b4 x + b5."""
    z = np.clip(b2 * (np.asarray(x, dtype=np.float64) - b3), -500, 500)
    return b1 * (0.5 - 1.0 / (1.0 + np.exp(z))) + b4 * x + b5


def logistic4(x, b1, b2, b3, b4):
    """VQEG 4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    z = np.clip(-(np.asarray(x, dtype=np.float64) - b3) / (np.abs(b4) + 1e-12), -500, 500)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


class LogisticFit:
    """Result of `fit_logistic`: `params` (on the original pred scale), `n_params`, `ok` (False: linear fallback), `__call__`."""

    def __init__(self, n_params: int, params: Sequence[float], ok: bool, message: str = ""):
        self.n_params = int(n_params)
        self.params = [float(v) for v in params]
        self.ok = bool(ok)
        self.message = message

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if not self.ok:
            a, b = self.params
            return a * x + b
        fn = logistic5 if self.n_params == 5 else logistic4
        return fn(x, *self.params)

    def to_dict(self) -> dict:
        return {"n_params": self.n_params, "params": self.params, "ok": self.ok,
                "function": (f"logistic{self.n_params}" if self.ok else "linear"), "message": self.message}

    def __repr__(self):
        return f"LogisticFit(n_params={self.n_params}, params={self.params}, ok={self.ok})"


def _vp_sse(z, m, params, u, v):
    """Variable projection: for nonlinear parameters (u, v) [arrays of K candidates], the logistic is LINEAR in the remaining
    ones; solves them by least squares for all K candidates at once. Returns (sse [K], coefficients [K, c])."""
    u, v = np.atleast_1d(u)[:, None], np.atleast_1d(v)[:, None]
    with np.errstate(over="ignore"):
        if params == 5:  # g = 0.5 - 1 / (1 + exp(u (z - v))); f = b1 g + b4 z + b5
            g = 0.5 - 1.0 / (1.0 + np.exp(np.clip(u * (z[None] - v), -500, 500)))
            X = np.stack([g, np.broadcast_to(z, g.shape), np.ones_like(g)], -1)
        else:  # g = 1 / (1 + exp(-(z - v) / u)); f = (b1 - b2) g + b2
            g = 1.0 / (1.0 + np.exp(np.clip(-(z[None] - v) / u, -500, 500)))
            X = np.stack([g, np.ones_like(g)], -1)
    A = np.einsum("knc,knd->kcd", X, X) + 1e-9 * np.eye(X.shape[-1])
    coef = np.linalg.solve(A, np.einsum("knc,n->kc", X, m)[..., None])[..., 0]
    resid = m[None] - np.einsum("knc,kc->kn", X, coef)
    return np.sum(resid ** 2, axis=1), coef


def fit_logistic(pred, mos, params: int = 5, grid: int = 40) -> LogisticFit:
    """Least-squares fit of the `params`-parameter VQEG logistic mapping pred -> mos.

    Works on standardised predictions z = (pred - mean) / std, so any model scale is well conditioned. The logistic is linear
    in all parameters but two (steepness/scale u and centre v): a `grid` x `grid` search over (u, v) with the linear ones solved
    exactly (variable projection; no starting-point guesswork), then a Nelder-Mead refinement of (log u, v). Bounds keep the
    mapping a mapping rather than an interpolation of a few points: the transition width >= 0.1 std of the predictions, the
    centre within +-4 std. Parameters are returned on the original pred scale. If the fit is not finite, issues
    `LogisticFitWarning` and returns the linear least-squares map (`ok=False`).
    """
    from scipy import optimize

    if params not in (4, 5):
        raise ValueError(f"params must be 4 or 5 (the VQEG logistic functions), got {params!r}")
    p, m = _as_arrays(pred, mos, f"fit_logistic({params})", min_samples=params + 1)
    mu, sd = p.mean(), p.std()
    z = (p - mu) / sd
    log_lo, log_hi, v_lim = np.log(0.1), np.log(10.0), 4.0
    lu, vv = np.meshgrid(np.linspace(log_lo, log_hi, grid), np.linspace(-v_lim, v_lim, grid))
    # grid on at most 400 points (every k-th in pred order: the shape of the relation is kept), refinement on all of them
    sub = np.argsort(z)[:: max(1, z.size // 400)]
    sse, _ = _vp_sse(z[sub], m[sub], params, np.exp(lu.ravel()), vv.ravel())
    ok = np.isfinite(sse).any()
    if ok:
        k = int(np.nanargmin(np.where(np.isfinite(sse), sse, np.nan)))
        x0 = np.array([lu.ravel()[k], vv.ravel()[k]])

        def obj(x):
            x = np.clip(x, [log_lo, -v_lim], [log_hi, v_lim])
            return float(_vp_sse(z, m, params, np.exp(x[0]), x[1])[0][0])

        with np.errstate(all="ignore"):
            opts = {"xatol": 1e-5, "fatol": 1e-9 * max(float(sse[k]), 1e-12), "maxfev": 800}
            sol = optimize.minimize(obj, x0, method="Nelder-Mead", options=opts)
        x = np.clip(sol.x if np.isfinite(sol.fun) and sol.fun <= sse[k] else x0, [log_lo, -v_lim], [log_hi, v_lim])
        fsse, coef = _vp_sse(z, m, params, np.exp(x[0]), x[1])
        coef = coef[0]
        ok = bool(np.isfinite(fsse[0]) and np.all(np.isfinite(coef)))
    if not ok:
        a, b = np.polyfit(p, m, 1)
        msg = (f"the {params}-parameter logistic mapping could not be fitted (non-finite residuals); "
               "using the linear least-squares map instead (PLCC after mapping = raw PLCC)")
        warnings.warn(msg, LogisticFitWarning, stacklevel=2)
        return LogisticFit(params, [a, b], ok=False, message=msg)
    u, v = float(np.exp(x[0])), float(x[1])
    if params == 5:  # f = b1 g(u (z - v)) + b4 z + b5 with z = (x - mu) / sd
        b1, b4z, b5z = coef
        orig = [b1, u / sd, mu + sd * v, b4z / sd, b5z - b4z * mu / sd]
    else:  # f = a g((z - v) / u) + c  ->  b1 = a + c, b2 = c
        a, c = coef
        orig = [a + c, c, mu + sd * v, sd * u]
    return LogisticFit(params, orig, ok=True)


def logistic_map(pred, mos, params: int = 5) -> np.ndarray:
    """Predictions mapped onto the MOS scale by the fitted logistic (or linear fallback)."""
    return fit_logistic(pred, mos, params)(np.asarray(pred, dtype=np.float64).reshape(-1))


def plcc_logistic(pred, mos, params: int = 5) -> float:
    """PLCC after the `params` (4 or 5) parameter logistic mapping of the predictions."""
    p, m = _as_arrays(pred, mos, "plcc_logistic")
    return _pearson(fit_logistic(p, m, params)(p), m)


def rmse(pred, mos, params: Optional[int] = 5) -> float:
    """Root mean squared error on the MOS scale, after the logistic mapping (`params=None`: raw predictions)."""
    p, m = _as_arrays(pred, mos, "rmse", min_samples=1 if params is None else MIN_SAMPLES, check_constant=params is not None)
    q = p if params is None else fit_logistic(p, m, params)(p)
    return float(np.sqrt(np.mean((q - m) ** 2)))


def mae(pred, mos, params: Optional[int] = None) -> float:
    """Mean absolute error |pred - MOS| on raw predictions (`params=4|5`: after the logistic mapping)."""
    p, m = _as_arrays(pred, mos, "mae", min_samples=1 if params is None else MIN_SAMPLES, check_constant=params is not None)
    q = p if params is None else fit_logistic(p, m, params)(p)
    return float(np.mean(np.abs(q - m)))


def evaluate_predictions(pred, mos, logistic: Sequence[int] = (4, 5), constant_pred: str = "nan") -> dict:
    """Every metric of the field on one set of predictions.

    Returns a dict: n, srocc, krocc, plcc (raw), plcc_logistic4 / plcc_logistic5 and rmse_logistic4 / rmse_logistic5 (for each
    entry of `logistic`), rmse (after the 5-parameter map, else the 4-parameter one), rmse_raw, mae (raw), and `logistic{k}`:
    the fitted parameters (`LogisticFit.to_dict`). A logistic fit needs k + 1 images; with fewer its entries are NaN.

    Constant predictions (a collapsed model) are a result, not a crash: with `constant_pred="nan"` (default) the correlations
    are NaN, `error` says why and a `RuntimeWarning` is issued; `constant_pred="raise"` raises `MetricInputError`.
    NaN/inf, length mismatch, < 3 images or a constant MOS always raise.
    """
    if constant_pred not in ("nan", "raise"):
        raise ValueError(f"constant_pred must be 'nan' or 'raise', got {constant_pred!r}")
    p, m = _as_arrays(pred, mos, "evaluate_predictions", check_constant=False)
    if np.ptp(m) == 0:
        _as_arrays(p, m, "evaluate_predictions")  # raises the constant-MOS error
    out = {"n": int(p.size), "rmse_raw": float(np.sqrt(np.mean((p - m) ** 2))), "mae": float(np.mean(np.abs(p - m)))}
    nan = float("nan")
    if np.ptp(p) == 0:
        msg = (f"evaluate_predictions: pred is constant ({p[0]!r} for all {p.size} images); correlations are undefined "
               "(a collapsed model?)")
        if constant_pred == "raise":
            raise MetricInputError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        out.update(srocc=nan, krocc=nan, plcc=nan, rmse=nan, error=msg)
        for k in logistic:
            out.update({f"plcc_logistic{k}": nan, f"rmse_logistic{k}": nan})
        return out
    out.update(srocc=srocc(p, m), krocc=krocc(p, m), plcc=_pearson(p, m))
    for k in logistic:
        if p.size < k + 1:
            out.update({f"plcc_logistic{k}": nan, f"rmse_logistic{k}": nan,
                        f"logistic{k}": {"n_params": k, "ok": False, "message": f"needs at least {k + 1} images, got {p.size}"}})
            continue
        fit = fit_logistic(p, m, k)
        q = fit(p)
        out[f"plcc_logistic{k}"] = _pearson(q, m) if np.ptp(q) > 0 else nan
        out[f"rmse_logistic{k}"] = float(np.sqrt(np.mean((q - m) ** 2)))
        out[f"logistic{k}"] = fit.to_dict()
    fitted = [out.get(f"rmse_logistic{k}", nan) for k in (5, 4)]
    out["rmse"] = next((v for v in fitted if np.isfinite(v)), nan)
    return {k: out[k] for k in ("n", "srocc", "krocc", "plcc", *[x for x in out if x not in ("n", "srocc", "krocc", "plcc")])}


# -------------------------------------------------------------------------------------------------------- Keras metrics
def _make_keras_metrics():
    import keras
    import tensorflow as tf
    from keras import ops

    from keras_iqa.layers.cqac import head_correlation_matrix

    def _average_ranks(x):
        """1-based ranks with ties given their average rank (as scipy.stats.rankdata), O(n log n), graph-safe."""
        s = tf.sort(x)
        left = tf.cast(tf.searchsorted(s, x, side="left"), tf.float64)
        right = tf.cast(tf.searchsorted(s, x, side="right"), tf.float64)
        return (left + right + 1.0) / 2.0

    def _pearson_tf(x, y):
        xc, yc = x - tf.reduce_mean(x), y - tf.reduce_mean(y)
        den = tf.sqrt(tf.reduce_sum(xc * xc) * tf.reduce_sum(yc * yc))
        return tf.where(den > 0, tf.reduce_sum(xc * yc) / tf.where(den > 0, den, 1.0), tf.constant(np.nan, tf.float64))

    class _EpochCorrelation(keras.metrics.Metric):
        """Keeps every (y_true, y_pred) of the epoch in a fixed buffer of `capacity` samples and correlates them in `result()`.

        Args:
            capacity: most samples per epoch (an error names it when exceeded; memory = 8 bytes x 2 x capacity).
            output_index: for models whose output is [B, T] (e.g. REQA's T steps), the column to use (default: the last).
            name, dtype: as for any Keras metric.

        `sample_weight` is ignored (correlations over images are unweighted). Under a multi-replica strategy each replica
        buffers its own shard; evaluate with one replica for exact numbers.
        """

        def __init__(self, capacity: int = 1 << 17, output_index: int = -1, name=None, dtype=None):
            super().__init__(name=name, dtype=dtype)
            self.capacity = int(capacity)
            self.output_index = int(output_index)
            self.y_true_buf = self.add_variable(shape=(self.capacity,), initializer="zeros", dtype="float64", name="y_true_buf")
            self.y_pred_buf = self.add_variable(shape=(self.capacity,), initializer="zeros", dtype="float64", name="y_pred_buf")
            self.count = self.add_variable(shape=(), initializer="zeros", dtype="int32", name="count")

        @staticmethod
        def _column(y, index):
            y = tf.convert_to_tensor(y)
            if y.shape.rank is not None and y.shape.rank >= 2 and y.shape[-1] not in (None, 1):
                y = tf.gather(y, index if index >= 0 else y.shape[-1] + index, axis=-1)
            return tf.cast(tf.reshape(y, [-1]), tf.float64)

        def update_state(self, y_true, y_pred, sample_weight=None):
            yt = tf.cast(tf.reshape(tf.convert_to_tensor(y_true), [-1]), tf.float64)
            yp = self._column(y_pred, self.output_index)
            n = tf.shape(yt)[0]
            start = tf.convert_to_tensor(self.count.value)
            tf.debugging.assert_less_equal(
                start + n, self.capacity,
                message=f"{self.name}: more samples this epoch than capacity={self.capacity}; "
                        "create the metric with a larger capacity")
            idx = tf.expand_dims(tf.range(start, start + n), 1)
            self.y_true_buf.assign(tf.tensor_scatter_nd_update(tf.convert_to_tensor(self.y_true_buf.value), idx, yt))
            self.y_pred_buf.assign(tf.tensor_scatter_nd_update(tf.convert_to_tensor(self.y_pred_buf.value), idx, yp))
            self.count.assign(start + n)

        def _values(self):
            n = tf.convert_to_tensor(self.count.value)
            return tf.convert_to_tensor(self.y_true_buf.value)[:n], tf.convert_to_tensor(self.y_pred_buf.value)[:n]

        def reset_state(self):
            self.count.assign(0)

        def get_config(self):
            return {**super().get_config(), "capacity": self.capacity, "output_index": self.output_index}

    @keras.saving.register_keras_serializable(package="keras_iqa")
    class SROCC(_EpochCorrelation):
        """Spearman rank correlation over the whole epoch (ties: average ranks). NaN for < 3 samples or constant input."""

        def __init__(self, capacity: int = 1 << 17, output_index: int = -1, name="srocc", dtype=None):
            super().__init__(capacity=capacity, output_index=output_index, name=name, dtype=dtype)

        def result(self):
            yt, yp = self._values()
            r = _pearson_tf(_average_ranks(yp), _average_ranks(yt))
            r = tf.where(tf.shape(yt)[0] >= MIN_SAMPLES, r, tf.constant(np.nan, tf.float64))
            return tf.cast(r, self.dtype)

    @keras.saving.register_keras_serializable(package="keras_iqa")
    class PLCC(_EpochCorrelation):
        """Pearson correlation (raw, no logistic mapping) over the whole epoch. NaN for < 3 samples or constant input."""

        def __init__(self, capacity: int = 1 << 17, output_index: int = -1, name="plcc", dtype=None):
            super().__init__(capacity=capacity, output_index=output_index, name=name, dtype=dtype)

        def result(self):
            yt, yp = self._values()
            r = _pearson_tf(yp, yt)
            r = tf.where(tf.shape(yt)[0] >= MIN_SAMPLES, r, tf.constant(np.nan, tf.float64))
            return tf.cast(r, self.dtype)

    @keras.saving.register_keras_serializable(package="keras_iqa")
    class HeadCorrelation(keras.metrics.Metric):
        """Mean over batches of the K x K PLCC matrix between the heads' scores; `result()` is the mean off-diagonal value
        (a scalar for the logs); `matrix()` the full K x K numpy array (written per epoch by
        `keras_iqa.training.hcl.HeadCorrelationLogger`)."""

        def __init__(self, num_datasets, name="head_corr", **kwargs):
            super().__init__(name=name, **kwargs)
            self.num_datasets = int(num_datasets)
            k = self.num_datasets
            self.total = self.add_variable(shape=(k, k), initializer="zeros", name="total")
            self.count = self.add_variable(shape=(), initializer="zeros", name="count")

        def update_state(self, scores, sample_weight=None):
            m = head_correlation_matrix(ops.cast(scores, "float32"))
            self.total.assign_add(m)
            self.count.assign_add(1.0)

        def matrix(self):
            return ops.convert_to_numpy(self.total) / max(float(ops.convert_to_numpy(self.count)), 1.0)

        def result(self):
            k = self.num_datasets
            if k < 2:
                return ops.convert_to_tensor(1.0)
            mean = self.total / ops.maximum(self.count, 1.0)
            return (ops.sum(mean) - ops.trace(mean)) / float(k * (k - 1))

        def get_config(self):
            return {"num_datasets": self.num_datasets, "name": self.name}

    return SROCC, PLCC, HeadCorrelation


_KERAS = None
_KERAS_NAMES = ("SROCC", "PLCC", "HeadCorrelation")


def __getattr__(name):  # lazy: `import keras_iqa.metrics` for the numpy metrics does not import TensorFlow
    global _KERAS
    if name in _KERAS_NAMES:
        if _KERAS is None:
            _KERAS = dict(zip(_KERAS_NAMES, _make_keras_metrics()))
        return _KERAS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if "keras" in sys.modules:  # Keras already loaded: register SROCC / PLCC / HeadCorrelation now, so saved models compiled with them deserialise
    __getattr__("SROCC")
