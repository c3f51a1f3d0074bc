"""Fine-grained (range-effect) evaluation, as in REQA (Li & Huo), Table I and Figs. 6-7.

Scores are put on a 0-100, higher-is-better scale (`to_100`), then:
- per-range metrics: SROCC / PLCC / MAE over the images whose **MOS** falls in each ACR bin
  (Bad 0-20, Poor 20-40, Fair 40-60, Good 60-80, Excellent 80-100 by default; any edges on the 0-100 scale);
- the ACR-category confusion matrix (rows: MOS category, columns: predicted category);
- the histogram of |pred - MOS| on the 0-100 scale.

Predictions reach the 0-100 scale by `pred_mapping`:
- "range" (default when the model's `score_range` is known): the model's declared range and direction, as the paper does for REQA,
  whose outputs are already on the MOS scale;
- "logistic": the 5-parameter logistic fitted from predictions to MOS (for models on another scale, e.g. MetaIQA's);
- "none": predictions are already on 0-100.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from keras_iqa import metrics as M

ACR_EDGES = (0.0, 20.0, 40.0, 60.0, 80.0, 100.0)
ACR_LABELS = ("Bad", "Poor", "Fair", "Good", "Excellent")

__all__ = ["ACR_EDGES", "ACR_LABELS", "to_100", "assign_bins", "fine_grained_report"]


def to_100(x, score_range: Sequence[float], higher_better: bool = True) -> np.ndarray:
    """Maps scores from `score_range` (and direction) to 0-100, higher = better (values outside the range are clipped)."""
    lo, hi = float(score_range[0]), float(score_range[1])
    if not hi > lo:
        raise ValueError(f"score_range must be (low, high) with high > low, got {tuple(score_range)}")
    y = np.clip((np.asarray(x, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0) * 100.0
    return y if higher_better else 100.0 - y


def assign_bins(x100, edges: Sequence[float] = ACR_EDGES) -> np.ndarray:
    """Bin index per score on the 0-100 scale (the last bin is closed on the right: 100 is 'Excellent')."""
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bin edges must be strictly increasing with at least 2 values, got {edges.tolist()}")
    return np.clip(np.searchsorted(edges, np.asarray(x100, dtype=np.float64), side="right") - 1, 0, edges.size - 2)


def _safe(fn, p, m):
    try:
        return fn(p, m), None
    except M.MetricInputError as e:
        return float("nan"), str(e)


def fine_grained_report(pred, mos, mos_range: Sequence[float] = (0.0, 100.0), mos_higher_better: bool = True,
                        pred_range: Optional[Sequence[float]] = None, pred_higher_better: bool = True,
                        pred_mapping: Optional[str] = None, edges: Sequence[float] = ACR_EDGES,
                        labels: Optional[Sequence[str]] = None, hist_width: float = 5.0) -> dict:
    """Per-range SROCC/PLCC, ACR confusion and |pred - MOS| histogram (REQA Table I, Figs. 6-7).

    Args:
        pred, mos: per-image predictions and subjective scores (native scales).
        mos_range, mos_higher_better: the dataset's declared scale (manifest `score_range`, `higher_better`).
        pred_range, pred_higher_better: the model's `score_range` / `higher_better` (for `pred_mapping="range"`).
        pred_mapping: "range" | "logistic" | "none" (default: "range" if `pred_range` else "logistic").
        edges: bin edges on the 0-100 scale (default: the five ACR bins); labels: one per bin.
        hist_width: width of the |pred - MOS| histogram bins (0-100 scale).

    Returns a JSON-ready dict: bins [{label, low, high, n, srocc, plcc, mae, note}], confusion {labels, matrix, accuracy},
    error_histogram {edges, counts}, mae_100, pred_mapping.
    """
    p, m = M._as_arrays(pred, mos, "fine_grained_report", min_samples=1, check_constant=False)
    labels = list(labels) if labels is not None else (list(ACR_LABELS) if tuple(edges) == ACR_EDGES else None)
    n_bins = len(edges) - 1
    if labels is None:
        labels = [f"{edges[i]:g}-{edges[i + 1]:g}" for i in range(n_bins)]
    if len(labels) != n_bins:
        raise ValueError(f"{len(labels)} labels for {n_bins} bins (edges {list(edges)})")
    m100 = to_100(m, mos_range, mos_higher_better)
    mapping = pred_mapping or ("range" if pred_range is not None else "logistic")
    if mapping == "range":
        if pred_range is None:
            raise ValueError("pred_mapping='range' needs pred_range (the model's score_range)")
        p100 = to_100(p, pred_range, pred_higher_better)
    elif mapping == "logistic":
        try:
            p100 = np.clip(M.fit_logistic(p, m100, 5)(p), 0.0, 100.0)
        except M.MetricInputError as e:  # constant predictions or < 6 images: no mapping can be fitted
            p100 = np.full_like(p, m100.mean())
            mapping = f"constant (logistic impossible: {e})"
    elif mapping == "none":
        p100 = p
    else:
        raise ValueError(f"pred_mapping must be 'range', 'logistic' or 'none', got {mapping!r}")
    tb, pb = assign_bins(m100, edges), assign_bins(p100, edges)
    err = np.abs(p100 - m100)
    bins = []
    for i, lab in enumerate(labels):
        sel = tb == i
        row = {"label": lab, "low": float(edges[i]), "high": float(edges[i + 1]), "n": int(sel.sum())}
        row["srocc"], note = _safe(M.srocc, p100[sel], m100[sel])
        row["plcc"], _ = _safe(M.plcc, p100[sel], m100[sel])
        row["mae"] = float(err[sel].mean()) if sel.any() else float("nan")
        row["note"] = note
        bins.append(row)
    conf = np.zeros((n_bins, n_bins), dtype=np.int64)
    np.add.at(conf, (tb, pb), 1)
    h_edges = np.arange(0.0, 100.0 + hist_width, hist_width)
    counts, _ = np.histogram(np.clip(err, 0, h_edges[-1]), bins=h_edges)
    return {
        "pred_mapping": mapping,
        "bins": bins,
        "confusion": {"labels": labels, "matrix": conf.tolist(), "accuracy": float(np.trace(conf) / max(1, conf.sum()))},
        "error_histogram": {"edges": h_edges.tolist(), "counts": counts.tolist()},
        "mae_100": float(err.mean()) if err.size else float("nan"),
    }
