"""Evaluation sources: what produces the predictions a protocol scores (a run directory, a `.keras` file, an `IQAModel`,
or a table of predictions as a DataFrame or CSV), loaded into one `Source`, and its predictions on a dataset's images
(a model predicts under its own test-time contract, `keras_iqa.evaluation.predict_reader`)."""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import pandas as pd

from data_pipeline import layout
from keras_iqa.classical.baseline import Baseline, is_baseline, load_baseline, predict_records
from keras_iqa.evaluation.datasets import read_metadata, read_splits
from keras_iqa.evaluation.predict import predict_reader
from keras_iqa.scoring.loading import load_keras_model

__all__ = ["Source", "load_source", "pd_frame"]


@dataclasses.dataclass
class Source:
    """A loaded source: `model` (IQAModel) or `table` (DataFrame image_id, pred[, target]), plus its name and run config."""

    name: str
    model: Any = None
    table: Any = None
    config: dict = dataclasses.field(default_factory=dict)
    path: Optional[str] = None

    @property
    def score_range(self):
        return tuple(getattr(self.model, "score_range", ())) or None

    @property
    def higher_better(self):
        return getattr(self.model, "higher_better", None)


def load_source(src: Union[str, os.PathLike, Any]) -> Source:
    """Run dir | .keras file | prediction CSV | IQAModel | DataFrame -> `Source`."""
    if isinstance(src, Source):
        return src
    if isinstance(src, pd.DataFrame):
        _check_table(src, "prediction table")
        return Source(name="predictions", table=src.assign(image_id=src.image_id.astype(str)))
    if not isinstance(src, (str, os.PathLike)):
        return Source(name=getattr(src, "name", "model"), model=src)
    if is_baseline(src):  # a classical baseline: "niqe" or a fitted folder (brisque.json); docs/baselines.md
        b = load_baseline(src)
        return Source(name=b.name, model=b, path=b.source, config=dict(b.trained_on))
    path = Path(src)
    if path.is_dir():
        model_file = layout.find_model_file(path)  # the run's model.keras (an HCL `--stages all` folder: its last stage's)
        cfg = layout.read_run_json(model_file.parent, layout.CONFIG_FILE)
        return Source(name=path.name, model=_load_keras(model_file), config=cfg, path=str(path))
    if path.suffix == ".keras":
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        return Source(name=path.stem, model=_load_keras(path), path=str(path))
    if path.suffix == ".csv":
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        df = pd.read_csv(path, dtype={"image_id": str})
        _check_table(df, str(path))
        return Source(name=path.stem, table=df, path=str(path))
    raise ValueError(f"{src}: expected a run directory (with model.keras), a .keras file, a predictions .csv or a baseline "
                     "(niqe, or a folder with brisque.json)")


def pd_frame(rows):
    return pd.DataFrame(rows)


def _check_table(df, what):
    missing = {"image_id", "pred"} - set(df.columns)
    if missing:
        raise ValueError(f"{what}: columns {sorted(missing)} missing (need image_id, pred; got {list(df.columns)})")


def _load_keras(path):
    return load_keras_model(path)  # safe_mode; a foreign model or a file that is no .keras archive: one line


def _find_key(cfg, key):
    """First value of `key` anywhere in a nested config dict."""
    if isinstance(cfg, dict):
        if key in cfg and cfg[key] not in (None, ""):
            return cfg[key]
        for v in cfg.values():
            r = _find_key(v, key)
            if r is not None:
                return r
    return None


def _find_split(cfg):
    """The split column a run was trained on: the shallowest value of a `split` key that names a column (split_NN or
    official); breadth-first, so a top-level `split` wins over one inside a stage's section."""
    level = [cfg]
    while level:
        nxt = []
        for c in level:
            if isinstance(c, dict):
                v = c.get("split")
                if isinstance(v, str) and (v.startswith("split_") or v == "official"):
                    return v
                nxt.extend(c.values())
            elif isinstance(c, list):
                nxt.extend(c)
        level = nxt
    return None


def _predict(source: Source, data_dir, split: Optional[str], subset: Optional[str], ids: Optional[set], predict_kw: dict,
             progress: bool = False):
    """DataFrame(image_id, target, pred) of `source` on the images of (split, subset), restricted to `ids` if given.

    progress: a per-image bar on stderr while a model predicts (tables of predictions need none)."""
    if source.table is not None:
        df = source.table
        if ids is None:  # a table may hold several datasets' predictions: keep this dataset's images
            known = (set(read_splits(data_dir).image_id) if layout.has_splits(data_dir)
                     else set(read_metadata(data_dir).image_id))
            df = df[df.image_id.isin(known)]
        if "target" not in df.columns:
            meta = read_metadata(data_dir)
            df = df.merge(meta[["image_id", "mos"]].rename(columns={"mos": "target"}), on="image_id", how="inner")
        if ids is not None:
            df = df[df.image_id.isin(ids)]
        if ids is not None and len(df) < len(ids):
            raise ValueError(f"{source.name}: predictions missing for {len(ids) - len(df)} of the {len(ids)} test images "
                             f"(e.g. {sorted(set(ids) - set(df.image_id))[0]!r})")
        return df[["image_id", "target", "pred"]].reset_index(drop=True)
    if isinstance(source.model, Baseline):
        df = predict_records(source.model, data_dir, split, subset, progress=progress, desc=f"predict {source.name}")
        return df[df.image_id.isin(ids)].reset_index(drop=True) if ids is not None else df
    # late on purpose: tests swap sys.modules["data_pipeline.input"] for a stub reader (tests/test_import_policy.py LATE)
    from data_pipeline.input import RecordReader

    reader = RecordReader(str(data_dir), split=split or "split_00", subset=subset, target="mos")
    desc = f"predict {source.name} on {Path(str(data_dir)).name}" + (f" {split}/{subset}" if subset else "")
    df = predict_reader(source.model, reader, progress=progress, desc=desc, **predict_kw)
    if ids is not None:
        df = df[df.image_id.isin(ids)].reset_index(drop=True)
        if len(df) < len(ids):
            warnings.warn(f"{source.name} on {data_dir} ({split}/{subset}): {len(ids) - len(df)} of {len(ids)} images could not "
                          "be "
                          f"read and were skipped (e.g. {sorted(set(ids) - set(df.image_id))[0]!r}); metrics use the other "
                          f"{len(df)}", UserWarning, stacklevel=3)
    return df
