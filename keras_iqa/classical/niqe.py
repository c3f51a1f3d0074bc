"""NIQE (Mittal, Soundararajan, Bovik, IEEE SPL 2013): the 36 natural-scene features of 96x96 patches (18 per scale, half
size at the second), a multivariate Gaussian (MVG) fitted on the sharp patches of pristine photos, and an image's score =
the distance between that MVG and the MVG of its own patches. Opinion-unaware; lower is better.

As the authors' release (`computequality.m`, `estimatemodelparam.m`): MSCN with replicated borders, the image cropped to
whole patches, pristine patches kept when their mean local deviation exceeds 0.75 x the photo's sharpest.
Default pristine photos: the natural scenes bundled with scikit-image (`data_pipeline.pristine.NATURAL`, ours: the
release used 125 photos of its own), fitted once per process in a few seconds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from data_pipeline import pristine
from keras_iqa.classical.features import gray, half, local_stats, scale_features

PATCH = 96
SHARPNESS = 0.75


@dataclass(frozen=True)
class NiqeModel:
    """The pristine MVG: `mean` [36] and `cov` [36, 36] of the pristine patches' features."""

    mean: np.ndarray
    cov: np.ndarray


def patch_features(image, patch: int = PATCH) -> tuple:
    """(features [P, 36], sharpness [P]) of the image's whole `patch` x `patch` patches (row-major)."""
    y = gray(image)
    h, w = (y.shape[0] // patch) * patch, (y.shape[1] // patch) * patch
    if h == 0 or w == 0:
        raise ValueError(f"NIQE needs an image of at least {patch}x{patch} pixels, got {y.shape[1]}x{y.shape[0]}")
    y = y[:h, :w]
    feats, sharp = [], None
    for scale in range(2):
        p = patch // (2 ** scale)
        mu, sigma = local_stats(y, mode="nearest")
        m = (y - mu) / (sigma + 1.0)
        rows, cols = m.shape[0] // p, m.shape[1] // p
        blocks = [(r, c) for r in range(rows) for c in range(cols)]
        feats.append(np.stack([scale_features(m[r * p:(r + 1) * p, c * p:(c + 1) * p]) for r, c in blocks]))
        if scale == 0:
            sharp = np.array([sigma[r * p:(r + 1) * p, c * p:(c + 1) * p].mean() for r, c in blocks])
        y = half(y)
    return np.concatenate(feats, axis=1), sharp


def fit_niqe(images: Iterable, patch: int = PATCH, sharpness: float = SHARPNESS) -> NiqeModel:
    """The pristine MVG of `images` (each: its patches sharper than `sharpness` x its sharpest patch)."""
    kept = []
    for img in images:
        f, s = patch_features(img, patch)
        kept.append(f[s > sharpness * s.max()] if s.max() > 0 else f[:0])
    x = np.concatenate(kept)
    if len(x) < 2:
        raise ValueError(f"NIQE needs at least 2 sharp {patch}x{patch} pristine patches, got {len(x)}")
    return NiqeModel(np.nanmean(x, axis=0), np.cov(x, rowvar=False))


@functools.lru_cache(maxsize=1)
def pristine_model() -> NiqeModel:
    """The default MVG: `fit_niqe` on the bundled natural-scene photos (computed once per process)."""
    return fit_niqe(pristine.load_embedded(name) for name in pristine.NATURAL)


def niqe_score(image, model: NiqeModel, patch: int = PATCH) -> float:
    """sqrt((m1 - m2)' pinv((C1 + C2) / 2) (m1 - m2)) between `model` and the MVG of the image's patches."""
    f, _ = patch_features(image, patch)
    mu = np.nanmean(f, axis=0)
    cov = np.cov(f, rowvar=False) if len(f) > 1 else np.zeros_like(model.cov)
    d = model.mean - mu
    return float(np.sqrt(max(0.0, d @ np.linalg.pinv((model.cov + cov) / 2) @ d)))
