"""HCL's samplers: (distorted, reference) pairs with one shared crop (curriculum 1) and batches drawn from several
datasets, each batch from one of them and tagged with its id (curriculum 2).

`RecordReader.pair_dataset` and `data_pipeline.input.multi_dataset` are these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import tensorflow as tf

from data_pipeline.test_time import Resize

if TYPE_CHECKING:
    from data_pipeline.input import RecordReader

AUTOTUNE = tf.data.AUTOTUNE


def pair_dataset(reader: "RecordReader", batch_size: int, crop_size: int = 224, seed: Optional[int] = None,
                 flip: bool = True, shuffle: bool = True, repeat: bool = False, drop_remainder: bool = True):
    """Batches of (distorted [B, c, c, 3], reference [B, c, c, 3]) of `reader`'s pair records (see
    `RecordReader.pair_dataset`)."""
    if reader.kind != "pair":
        raise ValueError(f"{reader.data_dir}: pair_dataset needs pair records (kind 'pair'), this dataset is {reader.kind!r}")
    ds = reader.parsed(reader.ids, lambda d, rnd: reader.parser.parse_pair_data(d, rnd, crop_size, flip),
                       shuffle=shuffle, repeat=repeat, seed=seed)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(reader.options(seed is not None))


def multi_dataset(readers: Sequence["RecordReader"], batch_size: int, crop_size: int = 224, sampling: str = "proportional",
                  seed: Optional[int] = None, resize: Resize = None, flip: bool = True):
    """Infinite batches ((images [B, c, c, 3], dataset_id int32 [B]), targets [B]); every batch comes from ONE dataset.

    sampling: `proportional` (a dataset's batches drawn with probability ~ its image count) or `uniform`. Dataset ids are the
    readers' positions in `readers`.
    """
    if sampling not in ("proportional", "uniform"):
        raise ValueError(f"sampling must be proportional|uniform, got {sampling!r}")
    if not readers:
        raise ValueError("multi_dataset needs at least one reader")
    streams = []
    for i, r in enumerate(readers):
        s = None if seed is None else seed + 104729 * i
        ds = r.train_dataset(batch_size, crop_size=crop_size, resize=resize, flip=flip, seed=s, repeat=True)
        streams.append(ds.map(lambda x, y, i=i: ((x, tf.fill([tf.shape(x)[0]], tf.constant(i, tf.int32))), y)))
    counts = np.asarray([r.count for r in readers], dtype=np.float64)
    weights = (counts / counts.sum() if sampling == "proportional" else np.full(len(readers), 1.0 / len(readers))).tolist()
    ds = tf.data.Dataset.sample_from_datasets(streams, weights=weights, seed=seed)
    opts = tf.data.Options()
    opts.deterministic = seed is not None
    return ds.prefetch(AUTOTUNE).with_options(opts)
