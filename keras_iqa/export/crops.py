"""Test-time crops as TF graph ops, shared by the SavedModel signatures, `keras-iqa score` and the TFLite parity report.

Deployment maps every crop policy to a DETERMINISTIC function of the image (a server must answer the same request with the
same score):
- "grid" and "random": `test_crops` crops of `crop_size` on a regular grid (see `grid_positions`). The official REQA code
  averages 25 *random* crops (spec/reqa.md, test protocol); a server cannot reproduce random crops, so "random" is served
  as a fixed grid with the same number of crops (25 -> 5x5), spread evenly from corner to corner. Images whose short side
  is below `crop_size` are upsampled (bicubic, as the decode policy's `min_short_side`) first.
- "resize": the whole image resized to `crop_size` x `crop_size` (bilinear, antialiased, aspect not kept; MetaIQA's test
  transform, spec/metaiqa.md), one crop.
Crops are gathered with integer indices (no interpolation), so graph and eager paths give bit-identical pixels.
"""

from __future__ import annotations

import functools
import math

import numpy as np


def grid_layout(n: int) -> tuple[int, int, list[int]]:
    """Rows, columns and the selected cell indices (row-major) of an `n`-crop grid.

    rows = floor(sqrt(n)), cols = ceil(n / rows); when rows*cols > n, `n` cells evenly spaced over the grid are kept.
    """
    if n < 1:
        raise ValueError(f"test_crops must be >= 1, got {n}")
    rows = max(1, int(math.floor(math.sqrt(n))))
    cols = int(math.ceil(n / rows))
    cells = np.round(np.linspace(0, rows * cols - 1, n)).astype(int).tolist() if rows * cols > n else list(range(n))
    return rows, cols, cells


def num_crops(crop_policy: str, test_crops: int) -> int:
    """Crops per image that `image_crops` returns for a policy."""
    return 1 if crop_policy == "resize" else int(test_crops)


def image_crops(image, crop_size: int, test_crops: int, crop_policy: str):
    """Crops of ONE image: uint8/float [H, W, 3] tensor -> float32 [n, crop_size, crop_size, 3] in [0, 255].

    Graph-safe (no Python loop over pixels or crops; positions are computed from the runtime H, W).
    """
    import tensorflow as tf

    from data_pipeline.images import DecodePolicy, resize_to_policy

    c = int(crop_size)
    if crop_policy == "resize":
        img = tf.image.resize(tf.cast(image, tf.float32), [c, c], method="bilinear", antialias=True)
        return tf.clip_by_value(img, 0.0, 255.0)[None]
    if crop_policy not in ("grid", "random"):
        raise ValueError(f"crop_policy must be 'random', 'grid' or 'resize', got {crop_policy!r}")
    img = image
    if img.dtype != tf.uint8:
        img = tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)
    img = resize_to_policy(img, DecodePolicy(min_short_side=c))
    rows, cols, cells = grid_layout(int(test_crops))
    h, w = tf.shape(img)[0], tf.shape(img)[1]

    def starts(extent, k):
        if k == 1:
            return tf.reshape((extent - c) // 2, [1])
        frac = tf.constant(np.arange(k) / (k - 1), tf.float64)
        return tf.cast(tf.round(frac * tf.cast(extent - c, tf.float64)), tf.int32)

    cells = tf.constant(cells, tf.int32)
    top = tf.gather(starts(h, rows), cells // cols)  # [n]
    left = tf.gather(starts(w, cols), cells % cols)  # [n]
    ar = tf.range(c, dtype=tf.int32)
    row_idx = top[:, None] + ar[None]  # [n, c]
    col_idx = left[:, None] + ar[None]  # [n, c]
    x = tf.gather(img, row_idx)  # [n, c, W, 3]
    x = tf.gather(x, col_idx, axis=2, batch_dims=1)  # [n, c, c, 3]
    return tf.cast(x, tf.float32)


@functools.lru_cache(maxsize=32)
def crop_function(crop_size: int, test_crops: int, crop_policy: str):
    """A `tf.function` (fixed signature, traced once per argument set, cached) mapping a uint8 [H, W, 3] image to its crops."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)], reduce_retracing=True)
    def fn(image):
        return image_crops(image, crop_size, test_crops, crop_policy)

    return fn
