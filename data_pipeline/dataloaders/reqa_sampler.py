"""REQA's sampler: batches of 5*M images, each consecutive group of 5 (a micro-batch) spanning five quality levels.

REQA paper Sec. III-C-1: "a predicted image and four anchors are sampled from five different quality scales" = the ACR
bins Bad/Poor/Fair/Good/Excellent of a 0-100 scale. `RecordReader.reqa_microbatches` delegates here (its docstring
describes the two samplers, "balanced" and "pass").
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import tensorflow as tf

from data_pipeline.test_time import Resize

if TYPE_CHECKING:
    from data_pipeline.input import RecordReader

logger = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE
ACR_LABELS = ("bad", "poor", "fair", "good", "excellent")


def acr_bins(scores_0_100: np.ndarray) -> np.ndarray:
    """ACR bin 0..4 (Bad 0-20, Poor 20-40, Fair 40-60, Good 60-80, Excellent 80-100) of scores on 0-100, higher = better."""
    return np.clip(np.floor(np.asarray(scores_0_100, dtype=np.float64) / 20.0), 0, 4).astype(np.int64)


def quantile_bins(scores: np.ndarray, n: int = 5) -> np.ndarray:
    """Bin 0..n-1 by the score quantiles (equal-count bins)."""
    s = np.asarray(scores, dtype=np.float64)
    edges = np.quantile(s, np.arange(1, n) / n)
    return np.searchsorted(edges, s, side="right").astype(np.int64)


def nearest_nonempty(counts: Sequence[int]) -> list[int]:
    """For each bin, itself if non-empty, else the nearest non-empty bin (ties: the lower bin)."""
    full = [k for k, c in enumerate(counts) if c > 0]
    if not full:
        raise ValueError("every quality bin is empty: no image with a score in this subset")
    return [k if counts[k] > 0 else min(full, key=lambda j: (abs(j - k), j)) for k in range(len(counts))]


def reqa_microbatches(reader: "RecordReader", micro_batches: int = 3, crop_size: int = 224, bins: str = "acr",
                      seed: Optional[int] = None, resize: Resize = None, flip: bool = True, epoch: str = "balanced"):
    """Infinite batches of (images [5M, c, c, 3], targets [5M]) of `reader` (see `RecordReader.reqa_microbatches`); sets
    `reader.bin_counts` and `reader.bin_sources`."""
    if bins not in ("acr", "quantile"):
        raise ValueError(f"bins must be 'acr' or 'quantile', got {bins!r}")
    if epoch not in ("balanced", "pass"):
        raise ValueError(f"epoch must be 'balanced' (each bin 1/5 of every batch) or 'pass' (each image once per "
                         f"epoch), got {epoch!r}")
    idx = reader.index()
    valid = ~np.isnan(idx["normalized"])
    ids, q = idx["id"][valid], idx["normalized"][valid] * 100.0
    if len(ids) == 0:
        raise ValueError(f"{reader.data_dir}: no image with a score in this subset; REQA micro-batches need scores")
    b = acr_bins(q) if bins == "acr" else quantile_bins(q)
    counts = [int((b == k).sum()) for k in range(5)]
    if epoch == "pass":
        return _one_pass(reader, ids.tolist(), counts, micro_batches, crop_size, seed, resize, flip)
    sources = nearest_nonempty(counts)
    reader.bin_counts, reader.bin_sources = counts, sources
    for k in range(5):
        if sources[k] != k:
            logger.warning("%s: quality bin %d (%s) is empty; drawing from bin %d instead", reader.data_dir, k,
                           ACR_LABELS[k] if bins == "acr" else f"q{k}", sources[k])
    streams = []
    for k in range(5):
        s = None if seed is None else seed + 7919 * k
        streams.append(reader.train_images(ids[b == sources[k]].tolist(), crop_size, resize, flip, True, s, True))

    def merge(*pairs):
        imgs = tf.stack([p[0] for p in pairs], axis=1)  # [M, 5, c, c, 3]
        ys = tf.stack([p[1] for p in pairs], axis=1)  # [M, 5]
        return tf.reshape(imgs, [-1, crop_size, crop_size, 3]), tf.reshape(ys, [-1])

    ds = tf.data.Dataset.zip(tuple(streams)).batch(micro_batches, drop_remainder=True)
    ds = ds.map(lambda *xs: merge(*xs), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(reader.options(seed is not None))


def _one_pass(reader, ids, counts, micro_batches, crop_size, seed, resize, flip):
    """epoch="pass": one shuffled pass per epoch, batches regrouped by within-batch quintiles."""
    reader.bin_counts, reader.bin_sources = counts, list(range(5))
    n = 5 * micro_batches
    if len(ids) < n:
        raise ValueError(f"{reader.data_dir}: {len(ids)} scored images, fewer than one batch of {n} (5 x {micro_batches})")
    base = tf.constant([0 if seed is None else int(seed), 104729], tf.int64)

    def regroup(i, imgs, ys):
        order = tf.argsort(ys, stable=True)  # low to high
        grid = tf.reshape(order, [5, micro_batches])  # row j = stratum j (the batch's j-th fifth)
        noise = tf.random.stateless_uniform([5, micro_batches], base + tf.stack([tf.constant(0, tf.int64), i]))
        grid = tf.gather(grid, tf.argsort(noise, axis=1), batch_dims=1)  # random pairing across strata
        pick = tf.reshape(tf.transpose(grid), [-1])  # micro-batch m = (stratum 0..4)[m]
        return tf.gather(imgs, pick), tf.gather(ys, pick)

    ds = reader.train_images(ids, crop_size, resize, flip, True, seed, False)
    ds = ds.batch(n, drop_remainder=True).repeat().enumerate()
    ds = ds.map(lambda i, xy: regroup(i, *xy), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(reader.options(seed is not None))
