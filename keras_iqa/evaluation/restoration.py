"""Curriculum 1's held-out check of HCL (reconstruction): does the restoration network restore, compared with the identity?

PSNR / SSIM of restored vs reference and of the distorted input vs reference over held-out (distorted, reference) pairs
(docs/methods/hcl.md). Used by `keras_iqa.tasks.hcl.train_restoration` (results.json `holdout`) and `bench/hcl.py`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

__all__ = ["restoration_report", "to_restoration_targets"]


def restoration_report(model, pairs_ds, max_batches: Optional[int] = None, min_gain_db: float = 0.05,
                       group_by: Optional[dict] = None) -> dict:
    """PSNR / SSIM (max value 1) of restored vs reference and of the distorted input vs reference (the identity baseline)
    over (distorted, reference) batches in [0, 255]; `beats_identity` (mean PSNR gain > `min_gain_db`, so that a network
    that learned to copy its input does not pass on rounding) is the measured check of curriculum 1.

    Pairs whose distorted crop equals its reference (e.g. a flat or black region; `n_unchanged`) are left out of the means:
    there is nothing to restore, and their infinite identity PSNR (capped at 100 dB) would dominate the mean (measured: 3 %
    of held-out 64 px crops of the embedded set moved the identity's mean PSNR by 2.5 dB). Restored PSNR is capped alike.

    `group_by` = {name: one key per pair, in dataset order} (e.g. distortion types) adds `psnr_gain_by_<name>` = {key: mean
    PSNR gain over that key's changed pairs, or None if it has none}, from the same single pass over the model."""
    @tf.function(reduce_retracing=True)
    def batch_stats(d, r):
        d, r = tf.cast(d, tf.float32), tf.cast(r, tf.float32) / 255.0
        restored = tf.clip_by_value(tf.cast(model(d, training=False), tf.float32), 0.0, 1.0)
        d = d / 255.0
        unchanged = tf.cast(tf.reduce_max(tf.abs(d - r), axis=[1, 2, 3]) == 0.0, tf.float32)
        return tf.stack([tf.image.psnr(restored, r, 1.0), tf.image.psnr(d, r, 1.0),
                         tf.image.ssim(restored, r, 1.0), tf.image.ssim(d, r, 1.0), unchanged], axis=1)

    rows = []
    for i, (d, r) in enumerate(pairs_ds):
        if max_batches is not None and i >= max_batches:
            break
        rows.append(batch_stats(d, r).numpy())
    if not rows:
        raise ValueError("restoration_report: the held-out pair dataset is empty")
    a = np.concatenate(rows)
    unchanged = a[:, 4] > 0.5
    a = np.where(np.isfinite(a[:, :4]), a[:, :4], 100.0)  # identical images give PSNR inf: cap at 100 dB
    gain, groups = a[:, 0] - a[:, 1], {}
    for name, keys in (group_by or {}).items():
        keys, by_key = np.asarray(keys)[:len(a)], {}
        for k in np.unique(keys):
            sel = (keys == k) & ~unchanged
            by_key[k.item()] = float(gain[sel].mean()) if sel.any() else None
        groups[f"psnr_gain_by_{name}"] = by_key
    a = a[~unchanged]
    if not len(a):
        raise ValueError("restoration_report: every held-out distorted crop equals its reference; nothing to restore")
    m = a.mean(axis=0)
    return {**groups, "n_pairs": int(len(a)), "n_unchanged": int(unchanged.sum()),
            "psnr_restored": float(m[0]), "psnr_identity": float(m[1]), "psnr_gain": float(m[0] - m[1]),
            "ssim_restored": float(m[2]), "ssim_identity": float(m[3]), "ssim_gain": float(m[2] - m[3]),
            "beats_identity": bool(m[0] - m[1] > min_gain_db), "min_gain_db": float(min_gain_db),
            "note": "HCL (reconstruction), curriculum 1: restored vs reference compared with distorted vs reference, "
                    "over the pairs whose distorted input differs from the reference"}


def to_restoration_targets(pairs_ds):
    """(distorted, reference) in [0, 255] -> (distorted, reference / 255) for `RestorationNet.fit`."""
    return pairs_ds.map(lambda d, r: (d, r / 255.0))
