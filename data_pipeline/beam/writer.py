"""Sharded, atomic, resumable TFRecord writer on Apache Beam (docs/data-pipeline.md).

`write_records(rows, to_examples, out_dir, ...)` turns rows into `out_dir/records-XXXXX-of-NNNNN.tfrecord` + `manifest.json` +
`splits.csv`. `out_dir` is the dataset's own directory (the `<out>/<name>` of docs/CONTRACTS.md).

No data loss, no duplicates:
- row i always goes to shard `i % num_shards`; a shard is written to a temporary name and renamed when complete, then its sidecar
  `records-....tfrecord.meta.json` (count, sha256, a fingerprint of its rows, rejects, per-image facts) is written the same way;
- a re-run skips a shard whose file hashes to the sidecar's sha256 and whose rows have the same fingerprint, and rewrites the others,
  so a run killed midway and re-run ends with every image exactly once;
- the manifest is assembled from the sidecars at the end (it is the last file written).

The Beam pipeline is `Create(shards) | Reshuffle | Map(write shard)`: any runner that shares `out_dir` with the driver works
(`tf.io.gfile` paths, so `gs://` too). `runner=None` writes inline without Beam (tests, fixtures).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import uuid
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from data_pipeline import schema
from data_pipeline.images import ImageDecodeError
from data_pipeline.splits import SplitConfig, dataset_groups, make_splits, write_splits_csv

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SPLITS = "splits.csv"
SIDECAR = ".meta.json"
SHARD_PATTERN = "records-{:05d}-of-{:05d}.tfrecord"
#: Per-image facts kept in the sidecars (order of the lists in `images`).
IMAGE_FIELDS = ("id", "mos", "normalized", "height", "width", "format", "reference", "type", "official", "type_name", "level")


def shard_name(i: int, n: int) -> str:
    return SHARD_PATTERN.format(i, n)


def default_num_shards(n_rows: int, rows_per_shard: int = 500) -> int:
    """About 500 images per shard (100-200 MB of 1024x768 JPEGs), at most 1024 shards."""
    return max(1, min(1024, math.ceil(n_rows / rows_per_shard)))


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with _gfile().GFile(path, "rb") as f:
        while True:
            chunk = f.read(1 << 22)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def _fingerprint(items: Sequence[tuple[int, Mapping]]) -> str:
    blob = json.dumps([[i, dict(r)] for i, r in items], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _atomic_write_text(path: str, text: str) -> None:
    gf = _gfile()
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with gf.GFile(tmp, "w") as f:
        f.write(text)
    gf.rename(tmp, path, overwrite=True)


def _row_name(row: Mapping) -> str:
    return str(row.get("path") or row.get("id") or row.get("image_id") or row)


def _image_info(serialized: bytes, row: Mapping) -> list:
    """The IMAGE_FIELDS of one serialized Example (for statistics, splits and duplicate checks)."""
    import tensorflow as tf

    feats = tf.train.Example.FromString(serialized).features.feature

    def b(key):
        return feats[key].bytes_list.value[0].decode("utf-8") if key in feats and feats[key].bytes_list.value else ""

    def n(key, default=-1):
        if key not in feats:
            return default
        f = feats[key]
        vals = f.int64_list.value or f.float_list.value
        return vals[0] if vals else default

    mos, norm = n("score/mos", float("nan")), n("score/normalized", float("nan"))
    return [b("image/id"), None if math.isnan(mos) else float(mos), None if math.isnan(norm) else float(norm),
            int(n("image/height")), int(n("image/width")), b("image/format"), b("reference/id"), int(n("distortion/type")),
            str(row.get("official") or ""), b("distortion/name"), int(n("distortion/level"))]


def write_shard(out_dir: str, index: int, num_shards: int, items: Sequence[tuple[int, Mapping]],
                to_examples: Callable[[Mapping], Iterable[tuple[str, bytes]]], fingerprint: str,
                on_row: Optional[Callable[[int, int, bool], None]] = None) -> dict:
    """Writes one shard atomically and its sidecar; returns the sidecar dict. Bad rows become rejects, never failures.

    `on_row(shard_index, row_index, ok)` is called after each row (progress; never part of the result)."""
    gf = _gfile()
    import tensorflow as tf

    name = shard_name(index, num_shards)
    path = os.path.join(out_dir, name)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    rejects, images = [], []
    with tf.io.TFRecordWriter(tmp) as w:
        for ri, row in sorted(items, key=lambda t: t[0]):
            try:
                produced = list(to_examples(row))  # all of a row or nothing
                infos = [_image_info(ser, row) for _, ser in produced]
            except (ValueError, ImageDecodeError, OSError, KeyError) as e:
                rejects.append({"path": _row_name(row), "reason": f"{type(e).__name__}: {e}"})
                if on_row is not None:
                    on_row(index, ri, False)
                continue
            for (_, ser), info in zip(produced, infos):
                w.write(ser)
                images.append(info)
            if on_row is not None:
                on_row(index, ri, True)
    digest = sha256_file(tmp)
    gf.rename(tmp, path, overwrite=True)
    meta = {"file": name, "count": len(images), "sha256": digest, "fingerprint": fingerprint, "rejects": rejects,
            "image_fields": list(IMAGE_FIELDS), "images": images}
    _atomic_write_text(path + SIDECAR, json.dumps(meta))
    return meta


def _verified(out_dir: str, name: str, fingerprint: str) -> Optional[dict]:
    """The sidecar of a complete shard that matches `fingerprint` and its sha256, else None."""
    gf = _gfile()
    path = os.path.join(out_dir, name)
    if not (gf.exists(path) and gf.exists(path + SIDECAR)):
        return None
    try:
        with gf.GFile(path + SIDECAR) as f:
            meta = json.load(f)
    except (ValueError, OSError):
        return None
    if meta.get("fingerprint") != fingerprint or sha256_file(path) != meta.get("sha256"):
        return None
    return meta


#: Progress callbacks of the runs of this process, by token. A Beam worker that runs in the driver's process (DirectRunner,
#: in_memory / multi_threading) finds its run's callback here and reports every row; a worker elsewhere (multi_processing,
#: Dataflow, Flink, Spark) finds nothing, and the driver's bar moves by whole shards as their sidecars appear instead.
_PROGRESS: dict = {}


class _ShardWriter:
    """Picklable Beam Map function: (index, items, fingerprint) -> sidecar summary."""

    def __init__(self, out_dir, num_shards, to_examples, progress_token=None):
        self.out_dir, self.num_shards, self.to_examples = out_dir, num_shards, to_examples
        self.progress_token = progress_token

    def __call__(self, work):
        index, items, fp = work
        on_row = _PROGRESS.get(getattr(self, "progress_token", None))
        meta = write_shard(self.out_dir, index, self.num_shards, items, self.to_examples, fp, on_row=on_row)
        return {"file": meta["file"], "count": meta["count"], "rejects": len(meta["rejects"])}


class _Tracker:
    """The driver's side of the writer's progress bar: rows reported in-process, or whole shards once their sidecar is there."""

    def __init__(self, bar, out_dir, todo, names, weight):
        import threading

        self.bar, self.out_dir, self.names, self.weight = bar, out_dir, names, weight
        self.rows = {i: {ri: weight(r) for ri, r in items} for i, items, _ in todo}
        self.totals = {i: sum(w.values()) for i, w in self.rows.items()}
        self.fps = {i: fp for i, _, fp in todo}
        self.seen: dict = {i: 0 for i in self.rows}  # weight counted per shard
        self.reported: set = set()
        self.rejected = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = None

    def on_row(self, shard, row, ok):
        with self.lock:
            if (shard, row) in self.reported or shard not in self.rows:
                return
            self.reported.add((shard, row))
            self.rejected += not ok
            self._add(shard, self.rows[shard].get(row, 1))

    def _add(self, shard, amount):
        amount = min(amount, self.totals[shard] - self.seen[shard])
        if amount > 0:
            self.seen[shard] += amount
            if self.rejected:
                self.bar.set_postfix(rejected=self.rejected, refresh=False)
            self.bar.update(amount)

    def shard_done(self, shard):
        with self.lock:
            self._add(shard, self.totals[shard])

    def _poll(self, every):
        while not self.stop.wait(every):
            for i in list(self.rows):
                if self.seen[i] < self.totals[i] and _sidecar_matches(self.out_dir, self.names[i], self.fps[i]):
                    self.shard_done(i)

    def start_polling(self, every: float = 2.0):
        import threading

        self.thread = threading.Thread(target=self._poll, args=(every,), daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


def _sidecar_matches(out_dir: str, name: str, fingerprint: str) -> bool:
    """A shard's sidecar of this run is there (cheap check for progress only; the run's end verifies sha256)."""
    try:
        path = os.path.join(out_dir, name + SIDECAR)
        if not _gfile().exists(path):
            return False
        with _gfile().GFile(path) as f:
            return json.load(f).get("fingerprint") == fingerprint
    except Exception:
        return False


def _run_beam(work, out_dir, num_shards, to_examples, runner, pipeline_args, progress_token=None):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(pipeline_args)
    if runner in ("DirectRunner", "direct") and not any(a.startswith("--direct_num_workers") for a in args):
        args.append("--direct_num_workers=1")
    options = PipelineOptions(args, runner=runner)
    with beam.Pipeline(options=options) as p:
        _ = (p | "Shards" >> beam.Create(work) | "Spread" >> beam.Reshuffle()
             | "Write" >> beam.Map(_ShardWriter(out_dir, num_shards, to_examples, progress_token)))


def _statistics(images: list, score_range, kind: str) -> dict:
    lo, hi = float(score_range[0]), float(score_range[1])
    mos = [im[1] for im in images if im[1] is not None]
    edges = [lo + (hi - lo) * k / 10 for k in range(11)]
    counts = [0] * 10
    for m in mos:
        counts[min(9, max(0, int((m - lo) / (hi - lo) * 10)))] += 1
    acr = [0] * 5
    for im in images:
        if im[2] is not None:
            acr[min(4, int(im[2] * 5))] += 1
    sizes = Counter(f"{im[4]}x{im[3]}" for im in images)
    stats = {
        "mos_histogram": {"edges": edges, "counts": counts},
        "acr_bins_normalized": {"labels": ["bad", "poor", "fair", "good", "excellent"], "counts": acr},
        "mos_min": min(mos) if mos else None,
        "mos_max": max(mos) if mos else None,
        "mos_mean": sum(mos) / len(mos) if mos else None,
        "image_sizes_wxh": dict(sizes.most_common(20)),
        "distinct_sizes": len(sizes),
        "height_range": [min(im[3] for im in images), max(im[3] for im in images)] if images else None,
        "width_range": [min(im[4] for im in images), max(im[4] for im in images)] if images else None,
        "formats": dict(Counter(im[5] for im in images)),
    }
    if kind != "authentic":
        stats["distortion_types"] = {str(k): v for k, v in sorted(Counter(im[7] for im in images).items())}
        stats["references"] = len({im[6] for im in images})
    return stats


def write_records(rows: Sequence[Mapping[str, Any]], to_examples: Callable[[Mapping], Iterable[tuple[str, bytes]]],
                  out_dir: str, kind: str, dataset_name: str, score_range, higher_better: bool,
                  num_shards: Optional[int] = None, runner: Optional[str] = "DirectRunner", pipeline_args: Sequence[str] = (),
                  manifest_extra: Optional[Mapping] = None, splits: Optional[SplitConfig | Mapping] = SplitConfig(),
                  progress: bool = False, progress_desc: Optional[str] = None, progress_unit: str = "image",
                  row_weight: Optional[Callable[[Mapping], int]] = None) -> dict:
    """Writes rows as sharded TFRecords + `manifest.json` + `splits.csv` in `out_dir`; returns the manifest.

    Args:
        rows: dicts holding "path" or "id" (named in rejects); an "official" key (train|validation|test) fills the official split.
        to_examples: `row -> iterable of (image_id, serialized tf.train.Example)`; raise ValueError / ImageDecodeError for a bad
            row (recorded in `rejects`, the run goes on). Must be picklable for Beam (module-level function or functools.partial).
        kind: authentic | synthetic | pair (data_pipeline.schema.KINDS).
        score_range, higher_better: the dataset's declared native score scale.
        num_shards: default about 500 images per shard.
        runner: a Beam runner name ("DirectRunner", "DataflowRunner", "FlinkRunner", ...), or None to write inline without Beam.
        pipeline_args: extra Beam pipeline arguments passed through (e.g. `--direct_num_workers=2`).
        manifest_extra: merged into the manifest; its "rejects" (e.g. metadata errors found by an adapter) are prepended.
        splits: a SplitConfig (or its dict) or None to skip `splits.csv`.
        progress: a bar on stderr (keras_iqa.progress: off when stderr is not a terminal) counting `progress_unit`s:
            per row inline and with an in-process DirectRunner; per completed shard with runners elsewhere (their workers
            cannot reach the driver: the bar follows the shard sidecars appearing in `out_dir`). Shards verified from an
            earlier run count at once. `row_weight(row)` is the units of one row (default 1; synthesize: its levels).

    Raises:
        ValueError: unknown kind, or duplicate image ids produced by `to_examples` (an adapter bug; the message names them).
    """
    if kind not in schema.KINDS:
        raise ValueError(f"Unknown record kind {kind!r}; expected one of {schema.KINDS}")
    gf = _gfile()
    gf.makedirs(out_dir)
    rows = list(rows)
    n = num_shards or default_num_shards(len(rows))
    buckets: list[list] = [[] for _ in range(n)]
    for i, row in enumerate(rows):
        buckets[i % n].append((i, dict(row)))
    fps = [_fingerprint(b) for b in buckets]
    names = [shard_name(i, n) for i in range(n)]

    t0 = time.time()
    done = {i: m for i in range(n) if (m := _verified(out_dir, names[i], fps[i])) is not None}
    todo = [(i, buckets[i], fps[i]) for i in range(n) if i not in done]
    if done:
        logger.info("%s: %d of %d shards already complete and verified; writing %d", out_dir, len(done), n, len(todo))
    weight = row_weight or (lambda _row: 1)
    bar = tracker = token = None
    if progress:
        from keras_iqa.progress import progress as make_bar

        total = sum(weight(r) for b in buckets for _, r in b)
        bar = make_bar(total, progress_desc or f"write {dataset_name}", unit=progress_unit)
        bar.update(sum(weight(r) for i in done for _, r in buckets[i]))
        tracker = _Tracker(bar, out_dir, todo, names, weight)
    try:
        if todo:
            if runner is None:
                for i, items, fp in todo:
                    write_shard(out_dir, i, n, items, to_examples, fp, on_row=tracker.on_row if tracker else None)
            else:
                if tracker is not None:
                    token = uuid.uuid4().hex
                    _PROGRESS[token] = tracker.on_row
                    tracker.start_polling()
                _run_beam(todo, out_dir, n, to_examples, runner, pipeline_args, token)
            if tracker is not None:
                for i, _, _ in todo:
                    tracker.shard_done(i)
    finally:
        if token is not None:
            _PROGRESS.pop(token, None)
        if tracker is not None:
            tracker.close()
        if bar is not None:
            bar.close()
    metas = []
    for i in range(n):
        m = _verified(out_dir, names[i], fps[i])
        if m is None:
            raise RuntimeError(f"{os.path.join(out_dir, names[i])}: shard missing or corrupt after the run (runner {runner!r})")
        metas.append(m)
    _remove_stale(out_dir, set(names))

    images = [im for m in metas for im in m["images"]]
    ids = [im[0] for im in images]
    if len(set(ids)) != len(ids):
        dup = sorted(k for k, v in Counter(ids).items() if v > 1)
        raise ValueError(f"{out_dir}: duplicate image ids {dup[:10]} ({len(dup)} in all); image ids must be unique per dataset")
    extra = dict(manifest_extra or {})
    rejects = list(extra.pop("rejects", [])) + [r for m in metas for r in m["rejects"]]
    manifest = {
        "schema_version": schema.SCHEMA_VERSION,
        "dataset": dataset_name,
        "kind": kind,
        "count": len(images),
        "shards": [{"file": m["file"], "count": m["count"], "sha256": m["sha256"]} for m in metas],
        "score_range": [float(score_range[0]), float(score_range[1])],
        "higher_better": bool(higher_better),
        "rejects": rejects,
        "statistics": _statistics(images, score_range, kind),
        "pseudo_label": extra.pop("pseudo_label", None),
        "writer": {"runner": runner or "inline", "pipeline_args": list(pipeline_args), "shards_reused": len(done),
                   "seconds": round(time.time() - t0, 3)},
    }
    if splits is not None:
        cfg = splits if isinstance(splits, SplitConfig) else SplitConfig(**dict(splits))
        group = cfg.group_by_reference if cfg.group_by_reference is not None else kind != "authentic"
        official = {im[0]: im[8] for im in images} if any(im[8] for im in images) else None
        by_subset = dataset_groups(dataset_name, ids)  # e.g. CID2013: 4 of its 6 image sets train (MetaIQA Sec. 4.4)
        if by_subset is not None:
            table = make_splits(ids, groups=by_subset[0], num_splits=cfg.num_splits, seed=cfg.seed, official=official,
                                train_groups=by_subset[1])
        else:
            table = make_splits(ids, groups=[im[6] or im[0] for im in images] if group else None,
                                num_splits=cfg.num_splits, train_ratio=cfg.train_ratio, seed=cfg.seed, official=official)
        _write_local_or_gfile(os.path.join(out_dir, SPLITS), table)
        manifest["splits"] = dict(cfg.to_dict(), group_by_reference=group, official=official is not None)
        if by_subset is not None:
            manifest["splits"].update(by_subset=True, train_groups=by_subset[1], groups=sorted(set(by_subset[0])),
                                      train_ratio=None)
    manifest.update(extra)
    _atomic_write_text(os.path.join(out_dir, MANIFEST), json.dumps(manifest, indent=1, default=str))
    return manifest


def _write_local_or_gfile(path: str, table) -> None:
    if "://" not in path:
        write_splits_csv(path, table)
        return
    import csv
    import io

    cols = ["image_id"] + sorted(c for c in table if c.startswith("split_")) + (["official"] if "official" in table else [])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    w.writerows(zip(*(table[c] for c in cols)))
    _atomic_write_text(path, buf.getvalue())


def _remove_stale(out_dir: str, keep: set) -> None:
    """Deletes shards of an earlier run with another shard count, and leftover temporary files."""
    gf = _gfile()
    for f in gf.listdir(out_dir):
        base = f[: -len(SIDECAR)] if f.endswith(SIDECAR) else f
        stale_shard = base.startswith("records-") and ".tfrecord" in base and base.split(".tmp-")[0] not in keep
        if stale_shard or ".tmp-" in f:
            gf.remove(os.path.join(out_dir, f))


def load_manifest(data_dir: str) -> dict:
    """Reads `<data_dir>/manifest.json`; the error says how to make one."""
    path = os.path.join(data_dir, MANIFEST)
    if not _gfile().exists(path):
        raise FileNotFoundError(f"{path} not found: {data_dir} is not a prepared dataset (run `keras-iqa prepare` first)")
    with _gfile().GFile(path) as f:
        return json.load(f)
