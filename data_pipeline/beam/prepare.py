"""The "prepare" pipeline: dataset adapter rows -> validated, decoded-once Examples -> sharded TFRecords + manifest + splits.

`prepare(dataset, root, out)` runs the adapter on the driver (metadata validation: rejects with file and row; it reads the
score files and lists the image folders, never an image), then `writer.write_records` on Beam: a worker expands the same
rows again from the score file (`SourceIndex`), and each image is decoded once under the decode policy to validate it and
find its size; the ORIGINAL bytes are stored for plain JPEG/PNG/BMP (never re-encode lossy: it changes the quality being
measured), anything else (TIFF, CMYK/16-bit/alpha, EXIF rotation, GIF...) as a lossless PNG of the policy's pixels
(`data_pipeline.images.canonical_bytes`). SPAQ's optional short-side resize happens here too (bicubic, stored as lossless PNG).
`root` and `out` may be local folders or URIs (gs://, s3://, hdfs://: `data_pipeline.fs`; docs/scaling.md).

Safety (docs/security.md, "Your files are never overwritten"): rows whose image leaves `root` are rejected unless
`allow_outside_root`; path options are made absolute on the driver (relative to the current folder); the dataset folder is
locked while it is written (`fs.lock`: a second run on it fails at once); a dataset already complete for the same rows and
settings is not rewritten.
"""

from __future__ import annotations

import functools
import io
import logging
import time
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from data_pipeline import fs, layout, schema
from data_pipeline.beam.writer import RowIndex, write_records
from data_pipeline.images import canonical_bytes, load_image
from data_pipeline.sources import get_source
from data_pipeline.splits import SplitConfig

logger = logging.getLogger(__name__)


def row_to_examples(row: dict, kind: str, dataset: str, score_range, higher_better: bool):
    """One adapter row -> [(image_id, serialized Example)]; raises ImageDecodeError / ValueError for a bad image."""
    path = row["path"]
    raw = fs.read_image(path)  # local or URI, read once
    with fs.named_errors(path):
        return _examples(raw, row, kind, dataset, score_range, higher_better)


def _examples(raw: bytes, row: dict, kind: str, dataset: str, score_range, higher_better: bool):
    side = row.get("resize_short_side")
    arr = load_image(raw) if side else None  # decode once: truncated / corrupt data fails here, not in training
    if side and min(arr.shape[:2]) > side:
        h, w = arr.shape[:2]
        s = side / min(h, w)
        arr = np.asarray(Image.fromarray(arr).resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC))
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")  # resized pixels: stored losslessly
        encoded, fmt, h, w = buf.getvalue(), "png", arr.shape[0], arr.shape[1]
    else:
        encoded, fmt, h, w = canonical_bytes(raw)
        if arr is None:
            load_image(encoded)
    mos = row.get("mos")
    mos = float("nan") if mos is None else float(mos)
    fields = {
        "image/encoded": encoded, "image/format": fmt, "image/height": h, "image/width": w, "image/id": row["id"],
        "dataset/name": dataset, "score/mos": mos, "score/std": row.get("std"),
        "score/normalized": schema.normalize_score(mos, score_range, higher_better),
    }
    if kind in ("synthetic", "pair"):
        fields.update({"distortion/type": int(row.get("type", -1)), "distortion/name": str(row.get("type_name", "")),
                       "distortion/level": int(row.get("level", -1)), "reference/id": str(row.get("reference", ""))})
    return [(row["id"], schema.make_example(kind, fields).SerializeToString())]


class SourceIndex(RowIndex):
    """The rows of a dataset adapter, expanded where it runs: on the driver, and again on the Beam worker that feeds the
    shard writers (it reads the score file itself, so no row travels through the job graph). Picklable."""

    def __init__(self, dataset: str, root: str, options: Optional[dict] = None, limit: Optional[int] = None,
                 allow_outside_root: bool = False):
        self.dataset, self.root, self.options, self.limit = dataset, root, dict(options or {}), limit
        self.allow_outside_root = bool(allow_outside_root)

    def source(self):
        return get_source(self.dataset)(self.root, allow_outside_root=self.allow_outside_root, **self.options)

    def expand(self):
        """`(source, rows, rejects)`; `rows` cut to `limit`."""
        src = self.source()
        rows, rejects = src.rows()
        return src, (rows[: int(self.limit)] if self.limit else rows), rejects

    def rows(self) -> list[dict]:
        return self.expand()[1]


def prepare(dataset: str, root: str, out: str, options: Optional[dict] = None, num_splits: int = 20, train_ratio: float = 0.8,
            seed: int = 0, runner: Optional[str] = "DirectRunner", pipeline_args: Sequence[str] = (),
            num_shards: Optional[int] = None, limit: Optional[int] = None, progress: bool = False,
            allow_outside_root: bool = False) -> dict:
    """Prepares one dataset from its official layout into `<out>/<name>/`; returns the manifest.

    Args:
        dataset: adapter name (`data_pipeline.sources.SOURCES`, aliases accepted).
        root: the dataset's root folder in its official layout: a local folder or a URI (gs://, s3://, ...).
        out: the parent folder of the dataset written (local or URI).
        options: adapter options (e.g. `{"resolution": "512x384"}` for KonIQ, `{"short_side": 512}` for SPAQ); a path
            option (`csv`, `list_file`, `label_file`) is relative to the current folder.
        num_splits, train_ratio, seed: `splits.csv` (reference-grouped for synthetic sets; KonIQ adds `official`; CID2013:
            4 of its 6 image sets train, `train_ratio` unused). 20 columns: REQA's 20 train-test iterations.
        runner, pipeline_args: Beam runner and extra pipeline arguments (None = inline, no Beam). The driver's own reads
            and writes use `pipeline_args` too (e.g. `--s3_endpoint_url=...`).
        limit: only the first `limit` rows (smoke runs).
        progress: a per-image bar on stderr (see `writer.write_records`).
        allow_outside_root: read rows whose image path leaves `root` (`..`, absolute, a symlink out); rejected otherwise.

    Returns the manifest; with `"already_complete": True` (and nothing written) when `<out>/<name>` already holds this
    dataset, complete, for the same rows and settings.

    Raises:
        MetadataError / ValueError: unreadable score files, unknown dataset or option, a dataset name that is not a plain
        folder name; RuntimeError: nothing could be prepared; fs.LockedError: another run is writing the same dataset;
        fs.DiskFullError: no space left (re-running once there is space resumes).
    """
    t0 = time.time()
    fs.configure(pipeline_args)  # the driver reaches root and out with the pipeline's options (S3 endpoint, keys, ...)
    root = fs.abspath(root)
    options = get_source(dataset).resolve_path_options(root, dict(options or {}))  # absolute here, for every worker
    index = SourceIndex(dataset, root, options, limit, allow_outside_root)
    src, rows, rejects = index.expand()
    layout.check_dataset_name(src.name)
    if not rows:
        reasons = "; ".join(f"{r['path']}: {r['reason']}" for r in rejects[:5])
        raise RuntimeError(f"{src.name}: no usable image under {src.root} ({len(rejects)} rejected{': ' + reasons if reasons else ''}); "
                           f"expected layout: {src.layout}")
    fn = functools.partial(row_to_examples, kind=src.kind, dataset=src.name, score_range=tuple(src.score_range),
                           higher_better=src.higher_better)
    out_dir = fs.join(fs.abspath(out), src.name)
    extra = {"rejects": rejects, "source": src.describe(), "pseudo_label": None}
    with fs.lock(fs.join(out_dir, layout.LOCK), f"prepare {src.name}"):
        manifest = write_records(rows, fn, out_dir, src.kind, src.name, src.score_range, src.higher_better,
                                 num_shards=num_shards, index=index,
                                 runner=runner, pipeline_args=pipeline_args, manifest_extra=extra,
                                 splits=SplitConfig(num_splits=num_splits, train_ratio=train_ratio, seed=seed),
                                 progress=progress, progress_desc=f"prepare {src.name}", progress_unit="image")
    if not manifest.get("already_complete"):
        manifest["prepare_seconds"] = round(time.time() - t0, 3)
    return manifest
