"""Seeded train/test splits stored as columns of `splits.csv` (docs/data-pipeline.md, Record format).

`splits.csv` holds `image_id, split_00 .. split_NN` (values `train` | `test`) and, where the dataset has one, `official`
(`train` | `validation` | `test`). Splits are never baked into the records: readers filter by id.

- Authentic sets: each column is an independent seeded random permutation of the images, the first `round(ratio * n)` train
  (REQA / MetaIQA protocol: random 80/20, repeated).
- Synthetic sets: the permutation is over REFERENCE ids (content), so no reference (nor any of its distorted versions) is in both
  train and test; `round(ratio * n_refs)` references train.
- Column `k` uses the seed `seed + k`, so adding repetitions keeps the earlier columns unchanged. 20 columns by default: REQA
  reports the median of "20 train-test iterations" (split_00 .. split_19); MetaIQA and HCL use the first 10.
- CID2013 (`DATASET_GROUPS`): MetaIQA's protocol (Zhu et al. 2020, Sec. 4.4): "In CID2013 database, four out of six
  subsets are used for model training, and the remaining two subsets are used for testing." Each column puts four of the
  six image sets IS1..IS6 in train and two in test; the 15 possible choices are taken in a seeded order, so the first 15
  columns are all different.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import asdict, dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

# the reader and writer of `splits.csv` live with the rest of the on-disk layout; these names stay importable from here
from data_pipeline.layout import ids_for, read_splits_csv, write_splits_csv  # noqa: F401

OFFICIAL_VALUES = ("train", "validation", "test")


@dataclass
class SplitConfig:
    """How `splits.csv` is made.

    Args:
        num_splits: number of random columns `split_00 ..` (20 by default: REQA's 20 train-test iterations).
        train_ratio: fraction of images (authentic) or references (synthetic) in train.
        seed: column k uses `seed + k`.
        group_by_reference: None = automatic (True for synthetic/pair records, False for authentic).
    """

    num_splits: int = 20
    train_ratio: float = 0.8
    seed: int = 0
    group_by_reference: Optional[bool] = None

    def __post_init__(self):
        if self.num_splits < 0:
            raise ValueError(f"num_splits must be >= 0, got {self.num_splits}")
        if not 0.0 < self.train_ratio < 1.0:
            raise ValueError(f"train_ratio must be in (0, 1), got {self.train_ratio}")

    def to_dict(self) -> dict:
        return asdict(self)


def split_column(k: int) -> str:
    return f"split_{k:02d}"


_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6}


def cid2013_subset(image_id: str) -> str:
    """The image set (`IS1` .. `IS6`) of a CID2013 image id, from its folder (`IS3/co2/...`) or its file name
    (`IS_III_C01_D05.jpg`)."""
    s = str(image_id).replace("\\", "/")
    m = re.search(r"(?:^|/)IS([1-6])(?:/|$)", s)
    if m:
        return f"IS{m.group(1)}"
    m = re.search(r"IS_(VI|IV|V|I{1,3})_", os.path.basename(s))
    if m:
        return f"IS{_ROMAN[m.group(1)]}"
    raise ValueError(f"CID2013 image id {image_id!r}: no image set IS1..IS6 in its folder or name (IS<k>/... or IS_<roman>_...)")


# dataset name -> (image id -> split group, groups in train, groups in the full dataset): protocols that split by subsets
DATASET_GROUPS = {"cid2013": (cid2013_subset, 4, 6)}


def dataset_groups(dataset: str, image_ids: Sequence[str]):
    """(groups, train_groups) of a dataset whose protocol splits by subsets (`DATASET_GROUPS`), else None.

    A partial copy (fewer groups than the full dataset, e.g. 3 of CID2013's 6 sets) keeps the protocol's proportion:
    round(present x 4/6) groups train, at least one on each side."""
    if dataset not in DATASET_GROUPS:
        return None
    fn, n_train, n_all = DATASET_GROUPS[dataset]
    groups = [fn(i) for i in image_ids]
    present = len(set(groups))
    if present < 2:
        return None
    if present != n_all:
        n_train = min(max(int(round(present * n_train / n_all)), 1), present - 1)
    return groups, n_train


def make_splits(image_ids: Sequence[str], groups: Optional[Sequence[str]] = None, num_splits: int = 20,
                train_ratio: float = 0.8, seed: int = 0, official: Optional[Mapping[str, str]] = None,
                train_groups: Optional[int] = None) -> dict:
    """Returns `{column: [train|test per image]}` plus `"image_id"` (and `"official"` if given).

    Args:
        image_ids: unique ids (order kept in the output).
        groups: one group (reference id) per image, or None to split images independently.
        official: `{image_id: train|validation|test}` for datasets with an official split (e.g. KonIQ-10k).
        train_groups: exactly this many groups in train (instead of `train_ratio`); the columns then walk through every
            choice of `train_groups` of the groups in one seeded order (no repeated choice before all have been used).

    Raises:
        ValueError: duplicate ids, groups of the wrong length, an official value outside train/validation/test.
    """
    ids = [str(i) for i in image_ids]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"duplicate image ids in splits: {dup}")
    if groups is not None and len(groups) != len(ids):
        raise ValueError(f"groups has {len(groups)} entries for {len(ids)} images")
    keys = np.asarray([str(g) for g in groups] if groups is not None else ids)
    uniq = np.unique(keys)  # sorted: independent of the input order
    out = {"image_id": ids}
    n_train = int(round(train_ratio * len(uniq)))
    if len(uniq) >= 2:
        n_train = min(max(n_train, 1), len(uniq) - 1)  # both sides non-empty whenever possible
    if train_groups is not None:
        if not 0 < int(train_groups) < len(uniq):
            raise ValueError(f"train_groups={train_groups} must be between 1 and {len(uniq) - 1} ({len(uniq)} groups)")
        combos = list(itertools.combinations(range(len(uniq)), int(train_groups)))
        order = np.random.default_rng(seed).permutation(len(combos))
    for k in range(num_splits):
        if train_groups is not None:
            chosen = combos[order[k % len(combos)]]
        else:
            chosen = np.random.default_rng(seed + k).permutation(len(uniq))[:n_train]
        train_keys = set(uniq[list(chosen)].tolist())
        out[split_column(k)] = ["train" if key in train_keys else "test" for key in keys.tolist()]
    if official is not None:
        vals = []
        for i in ids:
            v = official.get(i, "")
            v = {"training": "train", "val": "validation", "valid": "validation"}.get(v, v)
            if v not in OFFICIAL_VALUES and v != "":
                raise ValueError(f"official split of {i!r} is {v!r}; expected one of {OFFICIAL_VALUES}")
            vals.append(v)
        out["official"] = vals
    return out

