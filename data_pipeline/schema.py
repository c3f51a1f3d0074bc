"""tf.train.Example feature specs of the three record kinds (docs/data-pipeline.md, Record format).

Feature keys are part of the public format; bump `SCHEMA_VERSION` (written to every manifest) when they change.

- authentic: common keys;
- synthetic: common + distortion/type, distortion/name, distortion/level, reference/id (+ optional score/pseudo);
- pair: synthetic keys + reference/encoded (no MOS needed).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

SCHEMA_VERSION = 1
KINDS = ("authentic", "synthetic", "pair")

COMMON = {
    "image/encoded": "bytes",
    "image/format": "bytes",
    "image/height": "int",
    "image/width": "int",
    "image/id": "bytes",
    "dataset/name": "bytes",
    "score/mos": "float",  # native scale of the dataset (NaN for generated data without a human score)
    "score/std": "float",  # NaN if unknown
    "score/normalized": "float",  # [0, 1], higher = better (NaN when there is no MOS)
    "score/pseudo": "float",  # full-reference pseudo-label (NaN if none); the metric is named in the manifest
}
SYNTHETIC = {
    "distortion/type": "int",  # 1-25 KADID numbering, or the dataset's own
    "distortion/name": "bytes",
    "distortion/level": "int",  # 1 = mildest
    "reference/id": "bytes",
}
PAIR = {"reference/encoded": "bytes"}


def keys(kind: str) -> dict[str, str]:
    """Feature key -> type ('bytes' | 'int' | 'float') for a record kind."""
    if kind not in KINDS:
        raise ValueError(f"Unknown record kind {kind!r}; expected one of {KINDS}")
    out = dict(COMMON)
    if kind in ("synthetic", "pair"):
        out.update(SYNTHETIC)
    if kind == "pair":
        out.update(PAIR)
    return out


_DEFAULTS = {"bytes": b"", "int": -1, "float": float("nan")}


def make_example(kind: str, fields: Mapping[str, Any]):
    """Builds a `tf.train.Example` of `kind` from a `{feature key: value}` mapping; missing keys get their defaults.

    Raises:
        ValueError: unknown keys (typos would silently drop data otherwise).
    """
    import tensorflow as tf

    spec = keys(kind)
    unknown = set(fields) - set(spec)
    if unknown:
        raise ValueError(f"Unknown feature keys for {kind!r} records: {sorted(unknown)}; known: {sorted(spec)}")
    feats = {}
    for key, typ in spec.items():
        value = fields.get(key, _DEFAULTS[typ])
        if typ == "bytes":
            if isinstance(value, str):
                value = value.encode("utf-8")
            feats[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif typ == "int":
            feats[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        else:
            value = float("nan") if value is None else float(value)
            feats[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Example(features=tf.train.Features(feature=feats))


def feature_spec(kind: str) -> dict:
    """`tf.io.parse_single_example` spec for `kind` (every key has a default so older/partial records still parse)."""
    import tensorflow as tf

    dtypes = {"bytes": tf.string, "int": tf.int64, "float": tf.float32}
    return {k: tf.io.FixedLenFeature([], dtypes[t], default_value=_DEFAULTS[t]) for k, t in keys(kind).items()}


def normalize_score(mos: float, score_range: tuple[float, float], higher_better: bool) -> float:
    """Maps a native-scale score to [0, 1], higher = better, from the dataset's declared range and direction."""
    lo, hi = score_range
    if mos is None or (isinstance(mos, float) and math.isnan(mos)):
        return float("nan")
    x = (float(mos) - lo) / (hi - lo)
    x = min(max(x, 0.0), 1.0)
    return x if higher_better else 1.0 - x
