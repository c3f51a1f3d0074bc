"""A prepared dataset's facts for the evaluation protocols: its manifest, splits.csv as a table, split ids and hygiene
checks, and every record's metadata (ids, MOS, distortion facts, references; images are not decoded). The files are read
through `data_pipeline.layout`, the records through the reader's `Decoder`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data_pipeline import layout
from data_pipeline.dataloaders.decoder import Decoder

__all__ = ["load_dataset_info", "read_splits", "split_columns", "split_ids", "check_split_hygiene", "read_metadata"]


def load_dataset_info(data_dir) -> dict:
    """manifest.json of a prepared dataset (name, kind, score_range, higher_better, ...), with a clear error if missing or
    damaged (`data_pipeline.layout.load_manifest`)."""
    man = layout.load_manifest(data_dir)
    man.setdefault("dataset", Path(data_dir).name)
    man.setdefault("kind", "authentic")
    return man


def read_splits(data_dir):
    """splits.csv as a DataFrame (image_id as str), validated: unique ids, values train|test|validation
    (`data_pipeline.layout.read_splits`)."""
    table = layout.read_splits(data_dir)
    return pd.DataFrame(table, columns=list(table), dtype=str)


def split_columns(splits) -> list:
    return [c for c in splits.columns if c.startswith("split_")]


def split_ids(splits, column: str, data_dir="") -> tuple:
    """(train ids, test ids) of one split column."""
    layout.check_split_column(splits, column, layout.splits_path(data_dir))
    return (set(splits.image_id[splits[column] == "train"]), set(splits.image_id[splits[column] == "test"]))


def check_split_hygiene(splits, column: str, metadata=None, data_dir="") -> None:
    """Raises ValueError when an image id, or (synthetic sets, `metadata` with reference_id) a reference, is in train and test."""
    train, test = split_ids(splits, column, data_dir)
    both = train & test
    if both:
        raise ValueError(f"split {column!r}: {len(both)} image id(s) in both train and test, e.g. {sorted(both)[0]!r}")
    if metadata is not None and "reference_id" in metadata and (metadata.reference_id != "").any():
        ref = dict(zip(metadata.image_id, metadata.reference_id))
        tr = {ref.get(i, "") for i in train} - {""}
        te = {ref.get(i, "") for i in test} - {""}
        shared = tr & te
        if shared:
            raise ValueError(f"{layout.splits_path(data_dir)} column {column!r}: reference image(s) {sorted(shared)[:3]} have "
                             "distorted versions in both train and test (content leak); synthetic sets must be split by "
                             "reference "
                             "(re-create the splits with `keras-iqa prepare`)")


def read_metadata(data_dir):
    """image_id, mos, distortion_type / name / level, reference_id of every record (images are not decoded; the records
    are read by `data_pipeline.dataloaders.Decoder`, a record that is not a tf.Example is skipped)."""
    man = load_dataset_info(data_dir)
    files = layout.shard_files(data_dir, man)
    fields = ("id", "mos", "distortion_type", "distortion_name", "distortion_level", "reference_id")
    cols = Decoder(fields=fields).scan(files, batch_size=1024)  # fields a kind lacks decode to their defaults
    return pd.DataFrame({
        "image_id": cols["id"].tolist(), "mos": cols["mos"].astype(np.float64),
        "distortion_type": cols["distortion_type"].astype(np.int64), "distortion_name": cols["distortion_name"].tolist(),
        "distortion_level": cols["distortion_level"].astype(np.int64), "reference_id": cols["reference_id"].tolist(),
    })
