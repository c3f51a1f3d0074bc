"""Evaluation protocols of the NR-IQA field, each one call (and one `keras-iqa evaluate --protocol` value).

The dataset's facts (splits, metadata, hygiene) come from `keras_iqa.evaluation.datasets`, the predictions from a *source*
(`keras_iqa.evaluation.sources`): a run directory (holding `model.keras` and `config.json`, see
`keras_iqa.training.runner.RunDir`), a `.keras` file, an `IQAModel` instance, or a table of predictions (`pandas.DataFrame` or a
CSV with columns image_id, pred). Protocols never train: a protocol that retrains per split takes one source per split.

- `evaluate_splits(sources, data_dir, splits=None)`: N random splits. Source i is evaluated on the *test* subset of its split
  (the split named by its run's `config.json` key `split`, else `splits[i]`, else `split_{i:02d}`); summary = median and
  mean +- std over splits (REQA reports the median, MetaIQA the mean). One source with several `splits` evaluates that one model
  on each split's test subset (valid only for a model never trained on this dataset: a warning says so otherwise).
- `evaluate_official(source, data_dir)`: the `official` column's test subset.
- `evaluate_cross(source, data_dirs)`: train on A (the source), test on ALL images of each B.
- `evaluate_lodo(sources, data_dir, held_out=None)`: leave-one-distortion-out; source i was trained without distortion type
  `held_out[i]` (or its config's `held_out_distortion`) and is tested on every image of that type.

Every protocol checks split hygiene (no image id in both train and test; for synthetic sets no reference image in both) and
returns a `ProtocolResult(results: dict, predictions: DataFrame)`; `keras_iqa.evaluation.reports.write_report` writes it.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from data_pipeline import layout
from keras_iqa import metrics as M
from keras_iqa.caller import hint, setting
from keras_iqa.evaluation.datasets import (check_split_hygiene, load_dataset_info, read_metadata,  # noqa: F401
                                          read_splits, split_columns, split_ids)
from keras_iqa.evaluation.fine_grained import fine_grained_report
from keras_iqa.evaluation.sources import Source, _find_key, _find_split, _predict, load_source, pd_frame  # noqa: F401
from keras_iqa.progress import progress as make_bar

__all__ = [
    "ProtocolResult", "to_data_scale", "load_dataset_info", "read_splits", "split_ids", "check_split_hygiene", "read_metadata",
    "load_source",
    "evaluate_splits", "evaluate_official", "evaluate_cross", "evaluate_lodo", "per_distortion", "best_epoch_selection",
    "summarize", "SUMMARY_METRICS",
]

SUMMARY_METRICS = ("srocc", "plcc", "krocc", "plcc_logistic4", "plcc_logistic5", "rmse", "mae")


@dataclasses.dataclass
class ProtocolResult:
    """`results`: JSON-ready dict (protocol, dataset, rows, summary, fine_grained, ...); `predictions`: every evaluated
    (image_id, target, pred, row) with `row` naming the split / dataset / held-out type."""

    results: dict
    predictions: Any


# ------------------------------------------------------------------------------------------------------------ scoring
def to_data_scale(pred, model_range, model_higher_better, data_range, data_higher_better) -> np.ndarray:
    """Affine map of predictions from the model's declared scale and direction to the dataset's (no clipping, so ranks are
    kept): a 0-100 REQA model on KonIQ's 1-5 MOS, a higher-better model on a DMOS dataset, ..."""
    (a, b), (c, d) = (float(v) for v in model_range), (float(v) for v in data_range)
    u = (np.asarray(pred, np.float64) - a) / (b - a)  # 0..1 along the model's scale
    if bool(model_higher_better) != bool(data_higher_better):
        u = 1.0 - u
    return c + u * (d - c)


def _score(df, info: dict, source: Source, fine: bool, fine_kw: dict) -> tuple:
    """Metrics (+ fine-grained report) of one prediction table against the dataset's MOS. Predictions of a model whose
    declared scale or direction differs from the dataset's are first mapped to the dataset's (`to_data_scale`); the mapped
    values are added to `df` as `pred_data_scale`."""
    pred, mos = df.pred.to_numpy(np.float64), df.target.to_numpy(np.float64)
    rng, hb = source.score_range, source.higher_better
    same = rng is None or (tuple(map(float, rng)) == tuple(map(float, info["score_range"]))
                           and bool(hb) == bool(info["higher_better"]))
    if not same:
        pred = to_data_scale(pred, rng, hb if hb is not None else info["higher_better"], info["score_range"],
                             info["higher_better"])
        df["pred_data_scale"] = pred
    row = M.evaluate_predictions(pred, mos)
    if not same:
        row["pred_scale"] = (f"mapped from the model's {list(rng)} ({'higher' if hb else 'lower'} = better) to the dataset's "
                             f"{list(info['score_range'])} ({'higher' if info['higher_better'] else 'lower'} = better)")
    fg = None
    if fine:
        fg = fine_grained_report(pred, mos, mos_range=info["score_range"], mos_higher_better=info["higher_better"],
                                 pred_range=None if rng is None else info["score_range"],
                                 pred_higher_better=bool(info["higher_better"]), **fine_kw)
    return row, fg


def summarize(rows: Sequence[dict], keys: Sequence[str] = SUMMARY_METRICS) -> dict:
    """Median, mean, sample std (ddof=1), min, max over rows for each metric (non-finite values skipped)."""
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows if k in r and r[k] is not None], dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            out[k] = {"median": float(np.median(v)), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                      "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}
    return out


def _fine_summary(fgs: Sequence[dict]) -> Optional[dict]:
    fgs = [f for f in fgs if f]
    if not fgs:
        return None
    bins = []
    for i, b in enumerate(fgs[0]["bins"]):
        row = {"label": b["label"], "low": b["low"], "high": b["high"]}
        for k in ("srocc", "plcc", "mae", "n"):
            v = np.array([f["bins"][i][k] for f in fgs], dtype=np.float64)
            v = v[np.isfinite(v)]
            row[k] = float(np.median(v)) if v.size else float("nan")
        bins.append(row)
    conf = np.sum([np.array(f["confusion"]["matrix"]) for f in fgs], axis=0)
    hist = np.sum([np.array(f["error_histogram"]["counts"]) for f in fgs], axis=0)
    return {"aggregate": "median over rows (per bin); confusion and histogram summed", "pred_mapping": fgs[0]["pred_mapping"],
            "bins": bins, "confusion": {"labels": fgs[0]["confusion"]["labels"], "matrix": conf.tolist(),
                                        "accuracy": float(np.trace(conf) / max(1, conf.sum()))},
            "error_histogram": {"edges": fgs[0]["error_histogram"]["edges"], "counts": hist.tolist()},
            "per_row": fgs}


def _finish(protocol, info, data_dir, sources, rows, fgs, preds, extra=None) -> ProtocolResult:
    results = {
        "protocol": protocol, "dataset": info.get("dataset"), "data_dir": str(data_dir), "kind": info.get("kind"),
        "score_range": list(info["score_range"]), "higher_better": bool(info["higher_better"]),
        "sources": [{"name": s.name, "path": s.path} for s in sources],
        "rows": rows, "summary": summarize(rows), "fine_grained": _fine_summary(fgs), **(extra or {}),
    }
    return ProtocolResult(results, pd.concat(preds, ignore_index=True) if preds else pd.DataFrame())


def _as_sources(sources) -> list:
    if isinstance(sources, (str, os.PathLike)) or not isinstance(sources, (list, tuple)):
        sources = [sources]
    return [load_source(s) for s in sources]


# ----------------------------------------------------------------------------------------------------------- protocols
def _rows_bar(items: list, desc: str, unit: str, enabled: bool):
    """Iterates `items` under a bar of the protocol's rows (only when there are several)."""
    if not enabled or len(items) < 2:
        yield from items
        return

    bar = make_bar(len(items), desc, True, unit=unit)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


def evaluate_splits(sources, data_dir, splits: Optional[Sequence[str]] = None, fine: bool = True, fine_kw: Optional[dict] = None,
                    progress: bool = False, **predict_kw) -> ProtocolResult:
    """N random splits: source i on the test subset of its split; summary median and mean +- std over splits.

    progress (every protocol): a bar per protocol row (split, dataset, held-out type) and one per image on stderr."""
    srcs = _as_sources(sources)
    info = load_dataset_info(data_dir)
    table = read_splits(data_dir)
    cols = split_columns(table)
    if not cols:
        raise ValueError(f"{layout.splits_path(data_dir)} has no split_XX columns")
    meta = read_metadata(data_dir) if info.get("kind") in ("synthetic", "pair") else None
    if len(srcs) == 1 and splits and len(splits) > 1:
        trained = _find_split(srcs[0].config)
        if trained:
            warnings.warn(f"{srcs[0].name} was trained on {trained!r}; evaluating it on other splits' test subsets includes its "
                          "own training images (pass one run per split instead)", UserWarning, stacklevel=2)
        pairs = [(srcs[0], c) for c in splits]
    else:
        if splits is not None and len(splits) != len(srcs):
            raise ValueError(f"{len(srcs)} sources but {len(splits)} splits; give one split per source (or one source)")
        pairs = []
        for i, s in enumerate(srcs):
            col = _find_split(s.config) or (splits[i] if splits else f"split_{i:02d}")
            pairs.append((s, str(col)))
    seen = [c for _, c in pairs]
    if len(set(seen)) < len(seen):
        raise ValueError(f"several sources claim the same split ({seen}); each run must come from a different split")
    rows, fgs, preds = [], [], []
    for s, col in _rows_bar(pairs, "evaluate splits", "split", progress):
        if col not in cols:
            raise ValueError(f"{s.name}: split {col!r} is not a column of {layout.splits_path(data_dir)} ({cols})")
        check_split_hygiene(table, col, meta, data_dir)
        _, test = split_ids(table, col, data_dir)
        df = _predict(s, data_dir, col, "test", test, predict_kw, progress)
        if set(df.image_id) - test:
            raise ValueError(f"{s.name}: reader returned images outside the test subset of {col}")
        row, fg = _score(df, info, s, fine, fine_kw or {})
        rows.append({"row": col, "source": s.name, **row})
        fgs.append(fg)
        preds.append(df.assign(row=col, source=s.name))
    return _finish("splits", info, data_dir, srcs, rows, fgs, preds)


def evaluate_official(source, data_dir, subset: str = "test", fine: bool = True, fine_kw: Optional[dict] = None,
                      progress: bool = False, **predict_kw) -> ProtocolResult:
    """The dataset's official split (splits.csv column `official`), evaluated on `subset` (test | validation)."""
    (s,) = _as_sources(source)
    info = load_dataset_info(data_dir)
    table = read_splits(data_dir)
    if "official" not in table.columns:
        raise ValueError(f"{info.get('dataset')} has no official split (no 'official' column in "
                         f"{layout.splits_path(data_dir)}); use {setting('protocol', 'splits')}")
    ids = set(table.image_id[table.official == subset])
    train = set(table.image_id[table.official == "train"])
    if not ids:
        raise ValueError(f"the official split of {info.get('dataset')} has no {subset!r} images")
    assert not ids & train
    df = _predict(s, data_dir, "official", subset, ids, predict_kw, progress)
    row, fg = _score(df, info, s, fine, fine_kw or {})
    return _finish("official", info, data_dir, [s], [{"row": f"official/{subset}", "source": s.name, **row}], [fg],
                   [df.assign(row=f"official/{subset}", source=s.name)])


def evaluate_cross(source, data_dirs, fine: bool = True, fine_kw: Optional[dict] = None, progress: bool = False,
                   **predict_kw) -> ProtocolResult:
    """Cross-dataset: the source (trained on A) on ALL images of every dataset in `data_dirs`; one row per dataset."""
    (s,) = _as_sources(source)
    if isinstance(data_dirs, (str, os.PathLike)):
        data_dirs = [data_dirs]
    rows, fgs, preds, infos = [], [], [], []
    trained_on = _find_key(s.config, "data")
    trained_on = trained_on if isinstance(trained_on, str) else None
    for d in _rows_bar(list(data_dirs), "evaluate cross", "dataset", progress):
        info = load_dataset_info(d)
        if trained_on and Path(str(trained_on)).resolve() == Path(d).resolve():
            warnings.warn(f"{s.name} was trained on {d}; that is not a cross-dataset test", UserWarning, stacklevel=2)
        df = _predict(s, d, None, None, None, predict_kw, progress)
        row, fg = _score(df, info, s, fine, fine_kw or {})
        rows.append({"row": info["dataset"], "source": s.name, **row})
        fgs.append(fg)
        preds.append(df.assign(row=info["dataset"], source=s.name))
        infos.append(info)
    res = _finish("cross", infos[0], ",".join(map(str, data_dirs)), [s], rows, fgs, preds,
                  extra={"datasets": [i["dataset"] for i in infos], "trained_on": trained_on})
    if len(infos) > 1:
        res.results["dataset"] = "+".join(i["dataset"] for i in infos)
    return res


def evaluate_lodo(sources, data_dir, held_out: Optional[Sequence] = None, split: Optional[str] = None, fine: bool = False,
                  fine_kw: Optional[dict] = None, progress: bool = False, **predict_kw) -> ProtocolResult:
    """Leave-one-distortion-out: source i (trained without type `held_out[i]`, or its config's `held_out_distortion`) is tested
    on every image of that type (intersected with `split`'s test subset when given, to hold out content as well)."""
    srcs = _as_sources(sources)
    info = load_dataset_info(data_dir)
    meta = read_metadata(data_dir)
    if (meta.distortion_type < 0).all() and (meta.distortion_name == "").all():
        raise ValueError(f"{data_dir}: records carry no distortion type; leave-one-distortion-out needs a synthetic dataset")
    if held_out is not None and len(held_out) != len(srcs):
        raise ValueError(f"{len(srcs)} sources but {len(held_out)} held-out types; give one type per source")
    test_ids = None
    if split:
        table = read_splits(data_dir)
        check_split_hygiene(table, split, meta, data_dir)
        test_ids = split_ids(table, split, data_dir)[1]
    rows, fgs, preds = [], [], []
    for i, s in _rows_bar(list(enumerate(srcs)), "evaluate lodo", "type", progress):
        h = held_out[i] if held_out is not None else _find_key(s.config, "held_out_distortion")
        if h is None:
            raise ValueError(f"{s.name}: which distortion was held out? Its config.json has no 'held_out_distortion'; "
                             f"pass {hint('held_out=[TYPE, ...]', '--held-out TYPE')} (one per run, in order)")
        sel = (meta.distortion_name == str(h)) | (meta.distortion_type.astype(str) == str(h))
        ids = set(meta.image_id[sel])
        if test_ids is not None:
            ids &= test_ids
        if not ids:
            types = sorted(set(meta.distortion_type.astype(str)) | set(meta.distortion_name) - {""})
            raise ValueError(f"{s.name}: no image of distortion {h!r} in {data_dir}; known types/names: {types[:30]}")
        df = _predict(s, data_dir, split, "test" if split else None, ids, predict_kw, progress)
        row, fg = _score(df, info, s, fine, fine_kw or {})
        label = f"held_out={h}"
        rows.append({"row": label, "source": s.name, **row})
        fgs.append(fg)
        preds.append(df.assign(row=label, source=s.name))
    return _finish("lodo", info, data_dir, srcs, rows, fgs, preds, extra={"split": split})


def per_distortion(predictions, data_dir=None, metadata=None) -> list:
    """SROCC / PLCC per distortion type of a prediction table (synthetic sets): the usual per-type breakdown table.
    With a `row` column (several splits), metrics are computed per row and the median over rows is reported."""
    meta = read_metadata(data_dir) if metadata is None else metadata
    if "row" in predictions.columns and predictions["row"].nunique() > 1:
        per = [dict(r, row=k) for k, g in predictions.groupby("row")
               for r in per_distortion(g.drop(columns="row"), metadata=meta)]
        t = pd_frame(per)
        agg = t.groupby(["distortion_type", "distortion_name"]).agg(n=("n", "median"), srocc=("srocc", "median"),
                                                                     plcc=("plcc", "median")).reset_index()
        return [{"distortion_type": int(r.distortion_type), "distortion_name": r.distortion_name, "n": float(r.n),
                 "srocc": float(r.srocc), "plcc": float(r.plcc)} for r in agg.itertuples()]
    j = predictions.merge(meta[["image_id", "distortion_type", "distortion_name"]], on="image_id")
    out = []
    for (t, name), g in j.groupby(["distortion_type", "distortion_name"]):
        r = {"distortion_type": int(t), "distortion_name": name, "n": int(len(g))}
        for k, fn in (("srocc", M.srocc), ("plcc", M.plcc)):
            try:
                r[k] = fn(g.pred.values, g.target.values)
            except M.MetricInputError:
                r[k] = float("nan")
        out.append(r)
    return out


def best_epoch_selection(sources, metrics: Sequence[str] = ("srocc", "plcc")) -> Optional[dict]:
    """REQA official-code numbers (docs/protocols.md): per run, the best test SROCC and the best test PLCC over epochs, taken
    independently (possibly from different epochs), from each run's history.csv (columns test_<m>, else val_<m>); median and
    mean over runs. This is test-set model selection: reported beside, never instead of, the final-model numbers."""
    per_run = []
    for s in sources:
        if not s.path or not (Path(s.path) / "history.csv").is_file():
            continue
        h = pd.read_csv(Path(s.path) / "history.csv")
        row = {"source": s.name, "epochs": int(len(h))}
        for m in metrics:
            col = next((c for c in (f"test_{m}", f"val_{m}") if c in h.columns), None)
            if col is not None and h[col].notna().any():
                row[m] = float(h[col].max())
                row[f"{m}_epoch"] = int(h[col].idxmax())
                row[f"{m}_column"] = col
        if any(m in row for m in metrics):
            per_run.append(row)
    if not per_run:
        return None
    return {"note": "best over epochs per run, SROCC and PLCC selected independently on the TEST set (official REQA code); "
                    "optimistic, not comparable with final-model numbers",
            "per_run": per_run, "summary": summarize(per_run, metrics)}
