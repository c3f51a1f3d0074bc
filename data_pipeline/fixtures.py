"""Tiny generated datasets for tests, notebooks and benchmarks (no real dataset can be downloaded here).

- `write_tiny_records(out_dir, kind=...)` writes a PREPARED dataset (records + manifest.json + splits.csv) directly, through the
  same shard writer as `keras-iqa prepare` but without Beam.
- `make_<dataset>(root, ...)` functions write tiny copies of the OFFICIAL on-disk layouts (spec/datasets.md) with generated images
  and score files, including their awkward parts (CLIVE .mat cells, TID2013 mixed-case names, KADID `dmos.csv`, ...).

Generated images carry a learnable quality signal: a smooth random "content" image, degraded by noise and blur whose strength
grows as the score drops, so tiny models can learn something in a few steps.
"""

from __future__ import annotations

import functools
import io
import math
import os
import zlib
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageFilter

from data_pipeline import schema

KIND_RANGES = {"authentic": ((0.0, 100.0), True), "synthetic": ((1.0, 5.0), True), "pair": ((1.0, 5.0), True)}


# ------------------------------------------------------------------------------------------------------------- image generation
def content_image(seed: int, size=(48, 64)) -> np.ndarray:
    """A smooth random RGB image (uint8 HxWx3): low-frequency colour fields plus a few edges."""
    h, w = size
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, size=(max(2, h // 12), max(2, w // 12), 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = 40.0 * np.sign(np.sin(xx * rng.uniform(0.2, 0.6) + yy * rng.uniform(-0.3, 0.3)))
    return np.clip(img + stripes[..., None], 0, 255).astype(np.uint8)


def degrade(img: np.ndarray, quality: float, seed: int) -> np.ndarray:
    """Noise + blur growing as `quality` (0 worst .. 1 best) drops."""
    q = float(np.clip(quality, 0.0, 1.0))
    out = Image.fromarray(img)
    radius = 2.5 * (1.0 - q)
    if radius > 0.05:
        out = out.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(out, dtype=np.float32)
    arr = arr + np.random.default_rng(seed).normal(0.0, 30.0 * (1.0 - q), size=arr.shape)
    return np.clip(np.round(arr), 0, 255).astype(np.uint8)


def encode(arr: np.ndarray, fmt: str = "png", quality: int = 92) -> bytes:
    buf = io.BytesIO()
    fmt = fmt.lower()
    pil = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP"}[fmt]
    Image.fromarray(arr).save(buf, format=pil, **({"quality": quality} if pil == "JPEG" else {}))
    return buf.getvalue()


def save(arr: np.ndarray, path: str, quality: int = 92) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    with open(path, "wb") as f:
        f.write(encode(arr, {"jpg": "jpeg", "jpeg": "jpeg", "bmp": "bmp"}.get(ext, "png"), quality))
    return path


# ------------------------------------------------------------------------------------------------------------ prepared records
def _tiny_rows(kind: str, n: int, n_types: int, n_refs: int, seed: int, quality_range=(0.0, 1.0)) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    if kind == "authentic":
        q = (rng.permutation(n) + 0.5) / n  # stratified: every ACR bin populated when n >= 5
        q = quality_range[0] + (quality_range[1] - quality_range[0]) * q
        for i in range(n):
            rows.append({"id": f"img{i:05d}.jpg", "quality": float(q[i]), "content": int(seed * 100003 + i)})
        return rows
    if n > n_refs * n_types * 5:
        raise ValueError(f"n={n} exceeds n_refs*n_types*5={n_refs * n_types * 5} distinct (reference, type, level) images")
    for i in range(n):
        ref, typ, level = i % n_refs, (i // n_refs) % n_types + 1, (i // (n_refs * n_types)) % 5 + 1
        quality = float(np.clip(1.0 - 0.2 * (level - 1) - 0.05 * (typ - 1) + rng.normal(0, 0.03), 0.02, 1.0))
        rows.append({"id": f"I{ref + 1:02d}_{typ:02d}_{level:02d}.png", "ref": f"I{ref + 1:02d}.png", "type": typ,
                     "level": level, "quality": quality, "content": int(seed * 100003 + ref)})
    return rows


def _tiny_examples(row: dict, kind: str, size, dataset: str, bad_ids: Sequence[str] = ()):
    (lo, hi), higher_better = KIND_RANGES[kind]
    ref = content_image(row["content"], size)
    img = degrade(ref, row["quality"], seed=zlib.crc32(row["id"].encode()))
    fmt = "jpeg" if kind == "authentic" else "png"
    encoded = encode(img, fmt)
    if row["id"] in bad_ids:
        encoded = b"\xff\xd8 this is not a decodable image"
    mos = lo + (hi - lo) * row["quality"] if kind != "pair" else float("nan")
    fields = {
        "image/encoded": encoded, "image/format": fmt, "image/height": size[0], "image/width": size[1],
        "image/id": row["id"], "dataset/name": dataset, "score/mos": mos, "score/std": 0.05 * (hi - lo) if kind != "pair" else None,
        "score/normalized": schema.normalize_score(mos, (lo, hi), higher_better),
    }
    if kind != "authentic":
        fields.update({"distortion/type": row["type"], "distortion/name": f"type{row['type']:02d}",
                       "distortion/level": row["level"], "reference/id": row["ref"]})
    if kind == "pair":
        fields["reference/encoded"] = encode(ref, "png")
        fields["score/pseudo"] = row["quality"]
    yield row["id"], schema.make_example(kind, fields).SerializeToString()


def write_tiny_records(out_dir: str, kind: str = "authentic", n: int = 20, size=(48, 64), n_types: int = 3, n_refs: int = 4,
                       seed: int = 0, num_shards: int = 2, num_splits: int = 3, n_bad: int = 0,
                       dataset_name: Optional[str] = None, quality_range=(0.0, 1.0)) -> dict:
    """Writes a tiny prepared dataset (records + manifest.json + splits.csv) into `out_dir`; returns the manifest.

    authentic: JPEGs, MOS on 0-100 spread over all five ACR bins; synthetic: PNGs of `n_refs` references x `n_types` types x
    levels 1..5 (filled in that order), MOS on 1-5 falling with the level; pair: synthetic + `reference/encoded`, no MOS,
    `score/pseudo` = the generator's quality in [0, 1]. `quality_range` (authentic) narrows the qualities (e.g. (0, 0.59): no
    Good/Excellent images, to exercise the REQA empty-bin fallback). `n_bad` records get undecodable image bytes (reader robustness tests).

    Example:
        >>> write_tiny_records("/tmp/tiny", kind="synthetic", n=30)["count"]
        30
    """
    from data_pipeline.beam.writer import write_records
    from data_pipeline.splits import SplitConfig

    if kind not in KIND_RANGES:
        raise ValueError(f"kind must be one of {sorted(KIND_RANGES)}, got {kind!r}")
    rows = _tiny_rows(kind, n, n_types, n_refs, seed, quality_range)
    bad = tuple(r["id"] for r in rows[:n_bad])
    name = dataset_name or f"tiny-{kind}"
    (lo, hi), hb = KIND_RANGES[kind]
    fn = functools.partial(_tiny_examples, kind=kind, size=tuple(size), dataset=name, bad_ids=bad)
    extra = {"pseudo_label": "fixture-quality" if kind == "pair" else None, "fixture": True}
    return write_records(rows, fn, out_dir, kind, name, (lo, hi), hb, num_shards=num_shards, runner=None,
                         manifest_extra=extra, splits=SplitConfig(num_splits=num_splits, seed=seed))
