"""Images for int8 calibration and parity checks when no dataset is at hand, and the calibration source chain.

`calibration_crops(model, data_dir)` draws crops of the model's training records (`data_pipeline.input.RecordReader`) when
`data_dir` is given; otherwise grid crops of the embedded pristine photos (`data_pipeline.pristine.embedded()`, when
available) together with `synthetic_images` (deterministic, seeded): smooth random scenes with edges, degraded by blur, noise, contrast and
blockiness at random strengths so that quality varies across the set (a parity SROCC needs a spread of scores).
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
from scipy import ndimage

from data_pipeline import pristine
from data_pipeline.input import RecordReader
from data_pipeline.test_time import TestTimeCrops, scale_to_photo_size

logger = logging.getLogger(__name__)


def synthetic_images(n: int = 32, size: tuple = (96, 128), seed: int = 0) -> list:
    """`n` uint8 [H, W, 3] images with varied content and degradation (vectorised numpy; deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        freqs = rng.uniform(0.01, 0.15, size=(4, 2))
        phases = rng.uniform(0, 2 * np.pi, size=(4, 3))
        base = np.stack([
            sum(np.sin(freqs[k, 0] * yy + freqs[k, 1] * xx + phases[k, ch]) for k in range(4)) for ch in range(3)
        ], axis=-1)
        img = 127.5 + 30.0 * base
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.uniform(0, 255, size=3)  # a sharp-edged block
        kind = i % 4
        level = rng.uniform(0, 1)
        if kind == 0:
            img = ndimage.gaussian_filter(img, sigma=(3 * level, 3 * level, 0))
        elif kind == 1:
            img = img + rng.normal(0, 40 * level, size=img.shape)
        elif kind == 2:
            img = 127.5 + (img - 127.5) * (1 - 0.9 * level)
        else:
            b = 1 + int(7 * level)
            img = np.repeat(np.repeat(img[::b, ::b], b, 0), b, 1)[:h, :w]
        out.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return out


def _embedded_images(limit: int) -> list:
    """Up to `limit` of the colour photos bundled with scikit-image (uint8 HxWx3)."""
    return [img for _, img in pristine.embedded()[:limit]]


def calibration_crops(model, data_dir: Optional[str] = None, n: int = 64, seed: int = 0) -> tuple[np.ndarray, str]:
    """float32 [<=n, c, c, 3] crops for int8 calibration and the name of their source ("records:...", "pristine", "synthetic").

    With `data_dir`: one random crop of each training image, up to `n` (a dataset with fewer training images gives fewer
    crops, the last batch partial); only a dataset without training images is refused."""
    c = int(model.crop_size)
    if data_dir:
        reader = RecordReader(data_dir, subset="train")
        ds = reader.train_dataset(batch_size=min(n, 32), crop_size=c, flip=False, shuffle=True, seed=seed, repeat=False,
                                  drop_remainder=False)
        crops = []
        for x, _ in ds:
            crops.append(np.asarray(x, np.float32))
            if sum(len(b) for b in crops) >= n:
                break
        if not crops:
            raise ValueError(f"{data_dir}: no training images (split_00 train subset) to calibrate int8 with; give a dataset "
                             "with training images, or leave the dataset out to calibrate on built-in photos")
        return np.concatenate(crops)[:n], f"records:{data_dir}"
    images, source = [], "synthetic"
    try:
        images = _embedded_images(n)
    except Exception as e:  # module not there, or no photos: synthetic only
        logger.info("embedded pristine photos unavailable (%s); using synthetic calibration images", e)
    if images:
        # pristine photos alone lack degraded content a quality model meets: add as many synthetic degraded scenes
        source = f"pristine ({len(images)} photos) + synthetic"
    images = images + synthetic_images(max(8, n // 2), seed=seed)
    per_image = max(4, int(np.ceil(n / len(images))))
    fn = TestTimeCrops(crop_size=c, num_crops=per_image, policy="grid").crop_function()
    crops = np.concatenate([np.asarray(fn(im)) for im in images])
    rng = np.random.default_rng(seed)
    return crops[rng.permutation(len(crops))[:n]].astype(np.float32), source


def calibration_photos(photo_size, n: int = 16, seed: int = 0) -> tuple[np.ndarray, str]:
    """uint8 [n, H, W, 3] whole photos of `photo_size` for int8 calibration of a whole-photo TFLite model: the embedded
    pristine photos and synthetic degraded scenes, resized (bilinear) to (H, W)."""
    h, w = (int(v) for v in photo_size)
    images, source = [], "synthetic"
    try:
        images = _embedded_images(n // 2)
        source = f"pristine ({len(images)} photos) + synthetic, resized to {h}x{w}"
    except Exception as e:
        logger.info("embedded pristine photos unavailable (%s); using synthetic calibration images", e)
    images = images + synthetic_images(max(1, n - len(images)), size=(h, w), seed=seed)
    photos = [scale_to_photo_size(im, (h, w)) for im in images[:n]]
    return np.stack(photos).astype(np.uint8), source
