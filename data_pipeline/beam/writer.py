"""Sharded, resumable TFRecord writer on Apache Beam, the same on a local disk and on object stores (docs/data-pipeline.md,
docs/scaling.md).

`write_records(rows, to_examples, out_dir, ...)` turns rows into `out_dir/records-XXXXX-of-NNNNN-<attempt>.tfrecord` shards +
`manifest.json` + `splits.csv`. `out_dir` is the dataset's own directory (the `<out>/<name>` of docs/CONTRACTS.md): a local
folder or any URI of `data_pipeline.fs` (gs://, s3://, hdfs://...).

No data loss, no duplicates, and no rename (on S3 and GCS a rename is a copy and a delete, not atomic):
- row i always goes to shard `i % num_shards`. A worker writes a shard as a NEW object whose name no other attempt uses
  (`<attempt>` is random), hashing (sha256) and counting its bytes as it writes; once the object is closed, it writes the
  shard's sidecar `<shard file>.meta.json` (count, bytes, sha256, a fingerprint of the shard's rows, rejects, per-image
  facts). No shard object is ever renamed or overwritten.
- a shard is complete when its sidecar parses, carries the fingerprint of this run's rows for that shard, and the object it
  names has the size it records. A re-run keeps complete shards and writes the others, so a run killed midway and started
  again ends with every image exactly once (a shard killed mid-write has no sidecar, or a truncated one, and is written
  again under a new name).
- the driver never reads a shard: the manifest is assembled from the sidecars, i.e. from the workers' own counts and
  checksums, and written last, in one put (atomic on object stores; a temporary file + `os.replace` on a local disk). It is
  the commit record: readers read the shards it lists. Objects it does not list (earlier attempts, another shard count,
  temporary files) are deleted after it.

The rows never travel through the Beam job graph: `Create([index]) | FlatMap(expand the rows, key each by its shard)` is
joined with `Create([(shard, fingerprint)])` by `CoGroupByKey`, then `Map(write the shard)`. The index (a `RowIndex`) expands
the rows where it runs: prepare's re-reads the dataset's score file, synthesize's lists the pristine folder; the worker checks
each shard's rows against the driver's fingerprint. `runner=None` writes inline without Beam (tests, fixtures).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import hashlib
import json
import logging
import math
import struct
import threading
import time
import uuid
from collections import Counter
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from data_pipeline import fs, schema
from data_pipeline.images import ImageDecodeError
from data_pipeline.layout import (MANIFEST, SHARD_PREFIX, SIDECAR, SPLITS, load_manifest,  # noqa: F401  (re-exported)
                                  parse_shard_name, shard_name, splits_csv_text)
from data_pipeline.splits import SplitConfig, dataset_groups, make_splits
from keras_iqa.progress import progress as make_bar

logger = logging.getLogger(__name__)

#: Per-image facts kept in the sidecars (order of the lists in `images`).
IMAGE_FIELDS = ("id", "mos", "normalized", "height", "width", "format", "reference", "type", "official", "type_name", "level")


def default_num_shards(n_rows: int, rows_per_shard: int = 500) -> int:
    """About 500 images per shard (100-200 MB of 1024x768 JPEGs), at most 1024 shards."""
    return max(1, min(1024, math.ceil(n_rows / rows_per_shard)))


# ------------------------------------------------------------------------------------------------------------ the rows
class RowIndex:
    """Where the writer's rows come from. `rows()` expands them on the driver (to plan the shards) and on one Beam worker
    (to write them), so that the rows never travel through the job graph (Dataflow limits its size).

    Subclasses must be picklable and deterministic: both expansions must give the same rows in the same order (each shard's
    writer checks its rows against the driver's fingerprint and fails the job if they differ).
    """

    def rows(self) -> list[dict]:
        raise NotImplementedError


class ListIndex(RowIndex):
    """Rows already in memory (tests, fixtures, small jobs): they travel inside the pipeline as one element."""

    def __init__(self, rows: Iterable[Mapping]):
        self._rows = [dict(r) for r in rows]

    def rows(self) -> list[dict]:
        return self._rows


# ----------------------------------------------------------------------------------------------------------- TFRecords
def _crc32c():
    """Beam's crc32c (python-snappy, google-crc32c or crcmod, whichever is installed), or None without Beam."""
    try:
        from apache_beam.io.tfrecordio import _default_crc32c_fn
    except ImportError:
        return None
    return _default_crc32c_fn


def _masked(crc: int) -> int:
    """TFRecord's masked CRC (tensorflow/core/lib/hash/crc32c.h: rotate right by 15, add 0xa282ead8)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class _ShardFile:
    """TFRecord framing (length, masked CRC of the length, data, masked CRC of the data) written to a file object, with the
    sha256 and the byte count of what was written: the driver takes both from the sidecar and never reads the shard."""

    def __init__(self, f, crc):
        self.f, self.crc, self.size, self.hash = f, crc, 0, hashlib.sha256()

    def _put(self, b: bytes) -> None:
        self.f.write(b)
        self.hash.update(b)
        self.size += len(b)

    def write(self, record: bytes) -> None:
        head = struct.pack("<Q", len(record))
        self._put(head + struct.pack("<I", _masked(self.crc(head))))
        self._put(record)
        self._put(struct.pack("<I", _masked(self.crc(record))))


def _read_exact(f, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = f.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def iter_records(path: str) -> Iterator[bytes]:
    """The records of a TFRecord file at a local path or URI (CRCs checked); ValueError at a truncated or corrupt record."""
    crc = _crc32c()
    if crc is None:  # no Beam: TensorFlow's reader (local paths, gs://)
        import tensorflow as tf

        yield from tf.data.TFRecordDataset(path).as_numpy_iterator()
        return
    with fs.open_read(path) as f:
        k = 0
        while True:
            head = _read_exact(f, 12)
            if not head:
                return
            if len(head) < 12 or struct.unpack("<I", head[8:])[0] != _masked(crc(head[:8])):
                raise ValueError(f"{path}: record {k}: truncated or corrupt length")
            (n,) = struct.unpack("<Q", head[:8])
            data, tail = _read_exact(f, n), _read_exact(f, 4)
            if len(data) < n or len(tail) < 4 or struct.unpack("<I", tail)[0] != _masked(crc(data)):
                raise ValueError(f"{path}: record {k}: truncated or corrupt data")
            yield data
            k += 1


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with fs.open_read(path) as f:
        while True:
            chunk = f.read(1 << 22)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def _fingerprint(items: Sequence[tuple[int, Mapping]]) -> str:
    blob = json.dumps([[i, dict(r)] for i, r in items], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


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
    """Writes shard `index` as a new object, then its sidecar; returns the sidecar dict. Bad rows become rejects, never
    failures.

    `on_row(shard_index, row_index, ok)` is called after each row (progress; never part of the result)."""
    import tensorflow as tf

    name = shard_name(index, num_shards)
    path = fs.join(out_dir, name)
    rejects, images = [], []
    crc = _crc32c()
    tf_writer = None
    if crc is None:  # no Beam installed: TensorFlow writes the framing (local paths, gs://); hashed below

        fs.makedirs(out_dir)
        raw = tf_writer = tf.io.TFRecordWriter(path)
        out = None
    else:
        raw = fs.open_write(path)
        out = _ShardFile(raw, crc)
    with _shard_disk_full(path), raw:
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
                (tf_writer or out).write(ser)
                images.append(info)
            if on_row is not None:
                on_row(index, ri, True)
    digest, size = (out.hash.hexdigest(), out.size) if out is not None else (sha256_file(path), fs.size(path))
    meta = {"file": name, "index": index, "num_shards": num_shards, "count": len(images), "bytes": size, "sha256": digest,
            "fingerprint": fingerprint, "rejects": rejects, "image_fields": list(IMAGE_FIELDS), "images": images}
    with fs.disk_full(path + SIDECAR):
        fs.replace_atomically(path + SIDECAR, json.dumps(meta))  # written only once the shard object is closed
    return meta


class _shard_disk_full(fs.disk_full):
    """`fs.disk_full` for a shard being written: the partial shard is deleted first (it would never be used: it has no
    sidecar), so the space it took is free again."""

    def __exit__(self, typ, exc, tb):
        if isinstance(exc, OSError) and exc.errno in fs.DISK_FULL_ERRNOS:
            try:
                fs.delete([self.path])
            except OSError:
                pass
        return super().__exit__(typ, exc, tb)


def _read_json(path: str) -> Optional[dict]:
    try:
        out = json.loads(fs.read_bytes(path))
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def _complete_shards(out_dir: str, fps: Sequence[str], prefer: Iterable[str] = ()) -> dict:
    """`{index: sidecar}` of the complete shards of this plan in `out_dir` (see the module docstring): one listing, then the
    sidecars of the shard objects it shows (in parallel on object stores). Never reads a shard."""
    n = len(fps)
    listing = fs.scan(out_dir)
    cands: dict = {}
    for name, size in listing.items():
        parsed = parse_shard_name(name)
        if parsed and parsed[1] == n and parsed[0] < n and size is not None and name + SIDECAR in listing:
            cands.setdefault(parsed[0], []).append(name)
    names = [nm for lst in cands.values() for nm in lst]
    paths = [fs.join(out_dir, nm + SIDECAR) for nm in names]
    if fs.is_uri(out_dir) and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=16) as pool:
            metas = dict(zip(names, pool.map(_read_json, paths)))
    else:
        metas = {nm: _read_json(p) for nm, p in zip(names, paths)}
    prefer = set(prefer)
    done = {}
    for i, lst in cands.items():
        for nm in sorted(lst, key=lambda x: (x not in prefer, x)):
            m = metas.get(nm)
            if (m and m.get("file") == nm and m.get("fingerprint") == fps[i] and m.get("bytes") == listing[nm]
                    and m.get("count") == len(m.get("images") or ())):
                done[i] = m
                break
    return done


#: Progress callbacks of the runs of this process, by token. A Beam worker that runs in the driver's process (DirectRunner,
#: in_memory / multi_threading) finds its run's callback here and reports every row; a worker elsewhere (multi_processing,
#: Dataflow, Flink, Spark) finds nothing, and the driver's bar moves by whole shards as their sidecars appear instead.
_PROGRESS: dict = {}


def _expand(index: RowIndex, num_shards: int, todo: Sequence[int]):
    """Beam FlatMap: the index's rows of the shards to write, as `(shard, (row number, row))`."""
    todo = set(todo)
    for i, row in enumerate(index.rows()):
        if i % num_shards in todo:
            yield i % num_shards, (i, dict(row))


class _ShardWriter:
    """Picklable Beam Map function: `(shard, {"plan": [fingerprint], "rows": [(i, row)...]})` -> what the worker wrote."""

    def __init__(self, out_dir, num_shards, to_examples, progress_token=None):
        self.out_dir, self.num_shards, self.to_examples = out_dir, num_shards, to_examples
        self.progress_token = progress_token

    def __call__(self, element):
        index, grouped = element
        planned = list(grouped["plan"])
        items = sorted(((int(i), row) for i, row in grouped["rows"]), key=lambda t: t[0])
        fp = _fingerprint(items)
        if planned != [fp]:
            raise RuntimeError(
                f"{self.out_dir}: shard {index}: the rows expanded on the worker ({len(items)}, fingerprint {fp[:12]}) differ "
                f"from the driver's (fingerprint {planned[0][:12] if planned else None}): did the score file or the image "
                "folder change during the run? Start the run again.")
        on_row = _PROGRESS.get(getattr(self, "progress_token", None))
        meta = write_shard(self.out_dir, index, self.num_shards, items, self.to_examples, fp, on_row=on_row)
        return {k: meta[k] for k in ("file", "index", "count", "bytes", "sha256")}


class _Tracker:
    """The driver's side of the writer's progress bar: rows reported in-process, or whole shards once their sidecar is there."""

    def __init__(self, bar, out_dir, todo, weight):
        self.bar, self.out_dir, self.weight = bar, out_dir, weight
        self.rows = {i: {ri: weight(r) for ri, r in items} for i, items, _ in todo}
        self.totals = {i: sum(w.values()) for i, w in self.rows.items()}
        self.fps = {i: fp for i, _, fp in todo}
        self.seen: dict = {i: 0 for i in self.rows}  # weight counted per shard
        self.reported: set = set()
        self.checked: set = set()  # sidecar names already read by the poller
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

    def poll_once(self):
        """Marks the shards whose sidecar of this run appeared (one listing of `out_dir`; cheap, for progress only)."""
        try:
            names = fs.listdir(self.out_dir)
        except Exception:
            return
        for name in names:
            parsed = parse_shard_name(name[: -len(SIDECAR)]) if name.endswith(SIDECAR) else None
            if not parsed or name in self.checked or parsed[0] not in self.rows or self.seen[parsed[0]] >= self.totals[parsed[0]]:
                continue
            self.checked.add(name)
            meta = _read_json(fs.join(self.out_dir, name))
            if meta and meta.get("fingerprint") == self.fps[parsed[0]]:
                self.shard_done(parsed[0])

    def _poll(self, every):
        while not self.stop.wait(every):
            self.poll_once()

    def start_polling(self, every: float = 2.0):
        self.thread = threading.Thread(target=self._poll, args=(every,), daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


def _origin(exc: BaseException) -> Optional[BaseException]:
    """The exception a Beam step re-raised `exc` for (Beam wraps a step's error in a new one, chained to it): a Ctrl-C or
    a full disk stays what it is, not "RuntimeError: KeyboardInterrupt [while running 'Write']"."""
    seen, found = set(), None
    while exc is not None and id(exc) not in seen:  # the innermost one: Beam's copy carries its step in the message
        seen.add(id(exc))
        if isinstance(exc, (KeyboardInterrupt, fs.DiskFullError)):
            found = exc
        exc = exc.__cause__ or exc.__context__
    return found


class _QuietEnd(logging.Filter):
    """Drops Beam's ERROR record (with its traceback) of a step that ended for a Ctrl-C or a full disk: the driver says it
    in one line."""

    def filter(self, record):
        return not (record.exc_info and record.exc_info[1] is not None and _origin(record.exc_info[1]) is not None)


_BEAM_STEP_LOGGER = "apache_beam.runners.common"


def _run_beam(index, todo, out_dir, num_shards, to_examples, runner, pipeline_args, progress_token=None):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(pipeline_args)
    if runner in ("DirectRunner", "direct") and not any(a.startswith("--direct_num_workers") for a in args):
        args.append("--direct_num_workers=1")
    options = PipelineOptions(args, runner=runner)
    quiet = _QuietEnd()
    logging.getLogger(_BEAM_STEP_LOGGER).addFilter(quiet)
    try:
        with beam.Pipeline(options=options) as p:
            plan = p | "Plan" >> beam.Create([(i, fp) for i, _, fp in todo])
            rows = (p | "Index" >> beam.Create([index])
                    | "Expand" >> beam.FlatMap(_expand, num_shards, sorted(i for i, _, _ in todo)))
            _ = ({"plan": plan, "rows": rows} | "ByShard" >> beam.CoGroupByKey()
                 | "Write" >> beam.Map(_ShardWriter(out_dir, num_shards, to_examples, progress_token)))
    except Exception as e:
        origin = _origin(e)
        if origin is None:
            raise
        if isinstance(origin, KeyboardInterrupt):
            raise KeyboardInterrupt() from None
        raise origin.with_traceback(None) from None
    finally:
        logging.getLogger(_BEAM_STEP_LOGGER).removeFilter(quiet)


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


def write_records(rows: Sequence[Mapping[str, Any]] | RowIndex, to_examples: Callable[[Mapping], Iterable[tuple[str, bytes]]],
                  out_dir: str, kind: str, dataset_name: str, score_range, higher_better: bool,
                  num_shards: Optional[int] = None, runner: Optional[str] = "DirectRunner", pipeline_args: Sequence[str] = (),
                  manifest_extra: Optional[Mapping] = None, splits: Optional[SplitConfig | Mapping] = SplitConfig(),
                  progress: bool = False, progress_desc: Optional[str] = None, progress_unit: str = "image",
                  row_weight: Optional[Callable[[Mapping], int]] = None, index: Optional[RowIndex] = None) -> dict:
    """Writes rows as sharded TFRecords + `manifest.json` + `splits.csv` in `out_dir`; returns the manifest.

    Args:
        rows: dicts holding "path" or "id" (named in rejects); an "official" key (train|validation|test) fills the official
            split. Or a `RowIndex`, expanded here and again on a Beam worker.
        to_examples: `row -> iterable of (image_id, serialized tf.train.Example)`; raise ValueError / ImageDecodeError for a bad
            row (recorded in `rejects`, the run goes on). Must be picklable for Beam (module-level function or functools.partial).
        out_dir: a local folder or a URI (gs://, s3://, ...; `data_pipeline.fs`).
        kind: authentic | synthetic | pair (data_pipeline.schema.KINDS).
        score_range, higher_better: the dataset's declared native score scale.
        num_shards: default about 500 images per shard.
        runner: a Beam runner name ("DirectRunner", "DataflowRunner", "FlinkRunner", ...), or None to write inline without Beam.
        pipeline_args: extra Beam pipeline arguments passed through (e.g. `--direct_num_workers=2`, `--s3_endpoint_url=...`);
            the driver's own file accesses use them too (`data_pipeline.fs.configure`).
        manifest_extra: merged into the manifest; its "rejects" (e.g. metadata errors found by an adapter) are prepended.
        splits: a SplitConfig (or its dict) or None to skip `splits.csv`.
        progress: a bar on stderr (keras_iqa.progress: off when stderr is not a terminal) counting `progress_unit`s:
            per row inline and with an in-process DirectRunner; per completed shard with runners elsewhere (their workers
            cannot reach the driver: the bar follows the shard sidecars appearing in `out_dir`). Shards complete from an
            earlier run count at once. `row_weight(row)` is the units of one row (default 1; synthesize: its levels).
        index: how a Beam worker expands `rows` (a `RowIndex` giving the same rows); default: `rows` travel in the pipeline.

    Returns the manifest. When `out_dir` already holds a manifest of the same plan (rows, kind, scale, splits and
    `manifest_extra`) whose shards are all complete, nothing is written and that manifest comes back with
    `"already_complete": True` (not stored).

    Raises:
        ValueError: unknown kind, or duplicate image ids produced by `to_examples` (an adapter bug; the message names them).
        fs.DiskFullError: no space left for a shard, a sidecar or the manifest (one line; re-running resumes).
        KeyboardInterrupt: Ctrl-C, also when it reached a Beam step (complete shards are kept; re-running resumes).
    """
    if kind not in schema.KINDS:
        raise ValueError(f"Unknown record kind {kind!r}; expected one of {schema.KINDS}")
    fs.configure(pipeline_args)
    fs.makedirs(out_dir)
    if isinstance(rows, RowIndex):
        index, rows = rows, rows.rows()
    rows = [dict(r) for r in rows]
    index = index or ListIndex(rows)
    n = num_shards or default_num_shards(len(rows))
    buckets: list[list] = [[] for _ in range(n)]
    for i, row in enumerate(rows):
        buckets[i % n].append((i, row))
    fps = [_fingerprint(b) for b in buckets]
    split_cfg = None if splits is None else splits if isinstance(splits, SplitConfig) else SplitConfig(**dict(splits))
    plan = hashlib.sha256(json.dumps(
        {"schema": schema.SCHEMA_VERSION, "shards": fps, "kind": kind, "dataset": dataset_name,
         "score_range": [float(v) for v in score_range],
         "higher_better": bool(higher_better), "splits": None if split_cfg is None else split_cfg.to_dict(),
         "extra": manifest_extra or {}}, sort_keys=True, default=str).encode("utf-8")).hexdigest()

    t0 = time.time()
    previous = _read_json(fs.join(out_dir, MANIFEST)) or {}
    listed = {s.get("file") for s in previous.get("shards") or () if isinstance(s, dict)}
    done = _complete_shards(out_dir, fps, prefer=listed)
    if ((previous.get("writer") or {}).get("plan") == plan and len(done) == n
            and {m["file"] for m in done.values()} == listed
            and (split_cfg is None or fs.exists(fs.join(out_dir, SPLITS)))):
        logger.info("%s: already complete (%d shards of the same rows and settings); nothing to write", out_dir, n)
        return dict(previous, already_complete=True)
    todo = [(i, buckets[i], fps[i]) for i in range(n) if i not in done]
    if done:
        logger.info("%s: %d of %d shards already complete; writing %d", out_dir, len(done), n, len(todo))
    weight = row_weight or (lambda _row: 1)
    bar = tracker = token = None
    if progress:
        total = sum(weight(r) for b in buckets for _, r in b)
        bar = make_bar(total, progress_desc or f"write {dataset_name}", unit=progress_unit)
        bar.update(sum(weight(r) for i in done for _, r in buckets[i]))
        tracker = _Tracker(bar, out_dir, todo, weight)
    written = {}
    try:
        if todo:
            if runner is None:
                for i, items, fp in todo:
                    written[i] = write_shard(out_dir, i, n, items, to_examples, fp,
                                             on_row=tracker.on_row if tracker else None)
            else:
                if tracker is not None:
                    token = uuid.uuid4().hex
                    _PROGRESS[token] = tracker.on_row
                    tracker.start_polling(10.0 if fs.is_uri(out_dir) else 2.0)
                _run_beam(index, todo, out_dir, n, to_examples, runner, pipeline_args, token)
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
    if runner is not None and todo:  # the workers' reports: their sidecars
        written = _complete_shards(out_dir, fps, prefer=listed)
    metas = []
    for i in range(n):
        m = done.get(i) or written.get(i)
        if m is None:
            raise RuntimeError(f"{out_dir}: shard {i} of {n} has no complete sidecar after the run (runner {runner!r}); "
                               "start the run again to write it")
        metas.append(m)

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
        "shards": [{"file": m["file"], "count": m["count"], "bytes": m["bytes"], "sha256": m["sha256"]} for m in metas],
        "score_range": [float(score_range[0]), float(score_range[1])],
        "higher_better": bool(higher_better),
        "rejects": rejects,
        "statistics": _statistics(images, score_range, kind),
        "pseudo_label": extra.pop("pseudo_label", None),
        "writer": {"runner": runner or "inline", "pipeline_args": _shown_args(pipeline_args), "shards_reused": len(done),
                   "shards_written": n - len(done), "seconds": round(time.time() - t0, 3), "plan": plan},
    }
    if split_cfg is not None:
        cfg = split_cfg
        group = cfg.group_by_reference if cfg.group_by_reference is not None else kind != "authentic"
        official = {im[0]: im[8] for im in images} if any(im[8] for im in images) else None
        by_subset = dataset_groups(dataset_name, ids)  # e.g. CID2013: 4 of its 6 image sets train (MetaIQA Sec. 4.4)
        if by_subset is not None:
            table = make_splits(ids, groups=by_subset[0], num_splits=cfg.num_splits, seed=cfg.seed, official=official,
                                train_groups=by_subset[1])
        else:
            table = make_splits(ids, groups=[im[6] or im[0] for im in images] if group else None,
                                num_splits=cfg.num_splits, train_ratio=cfg.train_ratio, seed=cfg.seed, official=official)
        with fs.disk_full(fs.join(out_dir, SPLITS)):
            fs.replace_atomically(fs.join(out_dir, SPLITS), splits_csv_text(table))
        manifest["splits"] = dict(cfg.to_dict(), group_by_reference=group, official=official is not None)
        if by_subset is not None:
            manifest["splits"].update(by_subset=True, train_groups=by_subset[1], groups=sorted(set(by_subset[0])),
                                      train_ratio=None)
    manifest.update(extra)
    with fs.disk_full(fs.join(out_dir, MANIFEST)):  # the commit record
        fs.replace_atomically(fs.join(out_dir, MANIFEST), json.dumps(manifest, indent=1, default=str))
    _remove_stale(out_dir, {m["file"] for m in metas})
    return manifest


#: Pipeline options whose values are secrets: kept out of the manifest.
_SECRET_OPTIONS = ("--s3_access_key_id", "--s3_secret_access_key", "--s3_session_token")


def _shown_args(pipeline_args: Sequence[str]) -> list[str]:
    return [a.split("=", 1)[0] + "=***" if a.split("=", 1)[0] in _SECRET_OPTIONS else a for a in pipeline_args]


def _remove_stale(out_dir: str, keep: set) -> None:
    """After the manifest: deletes shard objects (and sidecars) it does not list, and leftover temporary files."""
    stale = []
    for f in fs.listdir(out_dir):
        base = f[: -len(SIDECAR)] if f.endswith(SIDECAR) else f
        if (base.startswith("records-") and ".tfrecord" in base and base not in keep) or ".tmp-" in f:
            stale.append(fs.join(out_dir, f))
    try:
        fs.delete(stale)
    except OSError as e:  # the dataset is complete and committed: leftovers are only disk space
        logger.warning("%s: could not delete %d leftover files (%s); the next run deletes them", out_dir, len(stale), e)
