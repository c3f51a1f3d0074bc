"""Statistical significance of a difference between two models.

- `f_test`: the IQA literature's test (VQEG; Sheikh et al., 2006, Sec. V-B): residuals of each model after the 5-parameter
  logistic mapping to MOS, F = var(res_A) / var(res_B) with (N_A - 1, N_B - 1) degrees of freedom (residuals assumed Gaussian),
  two-sided p-value; the model with the smaller residual variance is better when p < alpha.
- `wilcoxon_splits`: Wilcoxon signed-rank test over paired per-split SROCCs (same split columns for both models).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats

from keras_iqa import metrics as M

__all__ = ["f_test", "wilcoxon_splits", "compare_predictions"]


def _verdict(p: float, alpha: float, a_better: bool, names) -> str:
    if not np.isfinite(p) or p >= alpha:
        return "no significant difference"
    return f"{names[0] if a_better else names[1]} is better"


def f_test(pred_a, pred_b, mos_a, mos_b=None, params: int = 5, alpha: float = 0.05, names=("A", "B")) -> dict:
    """F-test on residual variances after logistic mapping. `mos_b` defaults to `mos_a` (same test images)."""
    mos_b = mos_a if mos_b is None else mos_b
    pa, ma = M._as_arrays(pred_a, mos_a, "f_test (model A)")
    pb, mb = M._as_arrays(pred_b, mos_b, "f_test (model B)")
    ra = ma - M.fit_logistic(pa, ma, params)(pa)
    rb = mb - M.fit_logistic(pb, mb, params)(pb)
    va, vb = float(np.var(ra, ddof=1)), float(np.var(rb, ddof=1))
    dfa, dfb = ra.size - 1, rb.size - 1
    if vb == 0 and va == 0:
        f, p = 1.0, 1.0
    elif vb == 0:
        f, p = float("inf"), 0.0
    else:
        f = va / vb
        p = float(min(1.0, 2 * min(stats.f.cdf(f, dfa, dfb), stats.f.sf(f, dfa, dfb))))
    return {"test": "F-test on residuals after logistic mapping", "F": f, "df": [dfa, dfb], "p_value": p,
            "residual_var": [va, vb], "alpha": alpha, "verdict": _verdict(p, alpha, va < vb, names)}


def wilcoxon_splits(srocc_a: Sequence[float], srocc_b: Sequence[float], alpha: float = 0.05, names=("A", "B")) -> dict:
    """Wilcoxon signed-rank test of paired per-split SROCCs (two-sided). Needs >= 6 splits for p < 0.05 to be reachable."""
    a, b = np.asarray(srocc_a, dtype=np.float64), np.asarray(srocc_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"per-split SROCCs must be paired: got {a.size} for {names[0]} and {b.size} for {names[1]}")
    if a.size < 2:
        raise ValueError(f"the Wilcoxon test needs at least 2 paired splits, got {a.size}")
    d = a - b
    out = {"test": "Wilcoxon signed-rank over per-split SROCC", "n": int(a.size), "median_difference": float(np.median(d)),
           "alpha": alpha}
    if np.all(d == 0):
        out.update(statistic=0.0, p_value=1.0)
    else:
        res = stats.wilcoxon(a, b, alternative="two-sided")
        out.update(statistic=float(res.statistic), p_value=float(res.pvalue))
    if a.size < 6:
        out["note"] = f"with {a.size} splits the smallest two-sided p-value is {2 / 2 ** a.size:.3g}"
    out["verdict"] = _verdict(out["p_value"], alpha, float(np.median(d)) > 0, names)
    return out


def compare_predictions(df_a, df_b, params: int = 5, alpha: float = 0.05, names=("A", "B")) -> dict:
    """F-test between two prediction tables (image_id, target, pred) on the images they share (matched by image_id)."""
    j = df_a[["image_id", "target", "pred"]].merge(df_b[["image_id", "pred"]], on="image_id", suffixes=("_a", "_b"))
    if len(j) < max(len(df_a), len(df_b)):
        missing = max(len(df_a), len(df_b)) - len(j)
        if len(j) == 0:
            raise ValueError(f"{names[0]} and {names[1]} share no image_id; compare them on the same test set")
        note = f"{missing} image(s) are not in both tables; compared on the {len(j)} shared ones"
    else:
        note = None
    out = f_test(j.pred_a.values, j.pred_b.values, j.target.values, params=params, alpha=alpha, names=names)
    out["n"] = int(len(j))
    if note:
        out["note"] = note
    return out
