"""Batch scoring as a Beam pipeline: `score_pipeline(model, inputs, out, runner=...)` and `keras-iqa score --runner`.

Inputs are local files and folders, `gs://` / `s3://` / `hdfs://` files and prefixes (`data_pipeline.fs`) or `@LIST` files
(one path or URI a line). Each image goes through the same decode and test-time crops as `keras-iqa score`
(`keras_iqa.scoring.engine._run` on `_Item`s), inside Beam's `RunInference` with `ScoreModelHandler` (one `load_scorer`
per worker process, batches of `batch_size`, counters `keras_iqa/scored` and `keras_iqa/failed`).

Output under the prefix OUT (docs/scaling.md, "Batch scoring on a Beam runner"): `scores-SSSSS-of-NNNNN.csv` (or
`.jsonl`), one shard per hash bucket of the input path (crc32), each written whole (a temporary file renamed, or one
object put), with the columns of `keras-iqa score` plus `error` (a row per input that could not be scored); then
`manifest.json`, written last, naming every shard and its counts. A killed job run again with the same command keeps the
shards already written and scores only the inputs no shard holds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from data_pipeline import fs, layout
from data_pipeline.images import is_image_file
from keras_iqa.scoring.engine import _run
from keras_iqa.scoring.inputs import _decode_bytes, _expand_path, _file_item, _Item
from keras_iqa import registry
from keras_iqa.scoring.loading import _is_preset_handle, load_scorer
from keras_iqa.scoring.results import out_of_range

#: The columns of a shard: `keras-iqa score`'s, then the reason an input could not be scored (empty when it was).
COLUMNS = ("path", "score", "score_normalized", "out_of_range", "crops", "error")
MANIFEST = "manifest.json"
FORMATS = ("csv", "jsonl")
_SHARD = re.compile(r"^scores-(\d{5})-of-(\d{5})\.(csv|jsonl)$")
_KILL_ENV = "KERAS_IQA_KILL_SCORE"
_committed_here = 0


def list_inputs(inputs: Sequence[str], recursive: bool = False) -> tuple[list, list]:
    """(image paths / URIs, in order, without repeats; problems [(input, reason)]). A folder or prefix gives its image
    files (sorted; subfolders with `recursive`), `@FILE` the paths listed in FILE (local or URI, one a line, `#` comments)."""
    found, problems = [], []
    for raw in inputs:
        raw = os.fspath(raw)
        if raw.startswith("@"):
            try:
                lines = fs.read_text(raw[1:]).splitlines()
            except FileNotFoundError:
                problems.append((raw, "no such list file"))
                continue
            found.extend(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))
        elif fs.is_uri(raw):
            if fs.isdir(raw):
                names = fs.walk_files(raw) if recursive else [fs.join(raw, n) for n, size in fs.scan(raw).items()
                                                              if size is not None]
                files = sorted(p for p in names if is_image_file(p))
                if not files:
                    problems.append((raw, "prefix holds no image files" + ("" if recursive else " (subfolders: --recursive)")))
                found.extend(files)
            elif fs.exists(raw):
                found.append(raw)
            else:
                problems.append((raw, "no such file or prefix"))
        else:
            files, problem = _expand_path(Path(raw).expanduser(), recursive)
            found.extend(files)
            if problem:
                problems.append((raw, problem))
    return list(dict.fromkeys(found)), problems


def shard_of(path: str, num_shards: int) -> int:
    """The shard an input goes to: a hash bucket of its path, the same in every run and process."""
    return zlib.crc32(path.encode("utf-8")) % num_shards


def shard_name(index: int, num_shards: int, fmt: str) -> str:
    return f"scores-{index:05d}-of-{num_shards:05d}.{fmt}"


def _item(path: str) -> _Item:
    """A local file through the decode policy (`_file_item`); a URI read with `data_pipeline.fs`, then the same decode."""
    if not fs.is_uri(path):
        return _file_item(path)
    return _Item(path, 0, lambda: _decode_bytes(fs.read_image(path), path),
                 load_reduced=lambda target: _decode_bytes(fs.read_image(path), path, None, target))


def _check_model(model: str) -> None:
    """On the driver, before any worker starts: a FileNotFoundError naming a MODEL that is nowhere."""
    if fs.is_uri(model) and not _is_preset_handle(model):
        found = fs.exists(model) or fs.isdir(model)
    else:
        found = Path(model).expanduser().exists() or model in registry.list_models() or _is_preset_handle(model)
    if not found:
        raise FileNotFoundError(f"MODEL {model} does not exist (expected a run directory, .keras file, SavedModel "
                                "directory or .tflite, local or at a URI every worker reads, or a preset handle)")


def _local_model(model: str) -> str:
    """`model` itself when local or not a URI; a model file or folder (SavedModel, run directory) at a URI copied to a
    temporary folder of this worker first, under the same name."""
    if not fs.is_uri(model):
        return model
    dest = os.path.join(tempfile.mkdtemp(prefix="keras-iqa-model-"), fs.basename(model))
    if not fs.isdir(model):
        with open(dest, "wb") as f:
            f.write(fs.read_bytes(model))
        return dest
    for src in fs.walk_files(model):
        local = os.path.join(dest, fs.relpath(src, model))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with open(local, "wb") as f:
            f.write(fs.read_bytes(src))
    return dest


class ScoreModelHandler(ModelHandler):
    """RunInference's model: `load_scorer(model)` once per worker process; a batch of paths -> one row dict each."""

    def __init__(self, model: str, precision: str = "fp32", trust: bool = False, batch_size: int = 32, workers: int = 2,
                 pipeline_args: Sequence[str] = ()):
        super().__init__()
        self.model, self.precision, self.trust = os.fspath(model), precision, trust
        self.batch_size, self.workers, self.pipeline_args = int(batch_size), int(workers), list(pipeline_args)
        self._scored = Metrics.counter("keras_iqa", "scored")
        self._failed = Metrics.counter("keras_iqa", "failed")

    def load_model(self):
        fs.configure(self.pipeline_args)
        return load_scorer(_local_model(self.model), precision=self.precision, trust=self.trust)

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self.batch_size}

    def run_inference(self, batch, model, inference_args=None):
        results = [r for rs in _run(model, [_item(p) for p in batch], len(batch) or 1, self.workers) for r in rs]
        flags = out_of_range([r.score for r in results], model.score_range)
        out = []
        for path, r, flag in zip(batch, results, flags.tolist()):
            ok = r.error is None
            row = {"path": path, "score": r.score if ok else None,
                   "score_normalized": float(model.normalized(r.score)) if ok else None,
                   "out_of_range": bool(flag), "crops": r.crops, "error": "" if ok else r.error}
            (self._scored if ok else self._failed).inc()
            out.append(PredictionResult(path, row))
        return out

    def get_num_bytes(self, batch) -> int:
        return sum(len(p) for p in batch)


def _format(rows: list, fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else r[k]) for k in COLUMNS})
    return buf.getvalue().encode("utf-8")


def read_shard(path: str) -> list:
    """The rows of one shard (CSV or JSON lines) as dicts (`score` a float or None, `crops` an int)."""
    text = fs.read_text(path)
    if path.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        r["score"] = float(r["score"]) if r["score"] else None
        r["score_normalized"] = float(r["score_normalized"]) if r["score_normalized"] else None
        r["out_of_range"], r["crops"] = r["out_of_range"] == "True", int(r["crops"])
        rows.append(r)
    return rows


def _kill_seam() -> None:
    """Test seam: KERAS_IQA_KILL_SCORE=N SIGKILLs this process once it has committed N shards. Tests only."""
    global _committed_here
    _committed_here += 1
    spec = os.environ.get(_KILL_ENV)
    if spec and _committed_here >= int(spec):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


class _WriteShard:
    """(shard, [rows]) -> the shard file, written whole: the rows of a shard found already written are kept."""

    def __init__(self, out: str, num_shards: int, fmt: str, pipeline_args: Sequence[str]):
        self.out, self.num_shards, self.fmt, self.pipeline_args = out, num_shards, fmt, list(pipeline_args)

    def __call__(self, element):
        fs.configure(self.pipeline_args)
        shard, rows = element
        path = fs.join(self.out, shard_name(shard, self.num_shards, self.fmt))
        new = {r["path"]: r for r in rows}
        old = [r for r in read_shard(path) if r["path"] not in new] if fs.exists(path) else []
        fs.replace_atomically(path, _format(sorted(old + list(new.values()), key=lambda r: r["path"]), self.fmt))
        _kill_seam()
        return shard


def _existing(out: str) -> dict:
    """{shard name: (index, num_shards, format)} of the shards under `out`."""
    found = {}
    for name, size in fs.scan(out).items():
        m = _SHARD.match(name)
        if m and size is not None:
            found[name] = (int(m.group(1)), int(m.group(2)), m.group(3))
    return found


def score_pipeline(model, inputs: Sequence[str], out: str, runner: str = "DirectRunner",
                   pipeline_args: Sequence[str] = (), *, fmt: str = "csv", num_shards: Optional[int] = None,
                   batch_size: int = 32, workers: int = 2, precision: str = "fp32", trust: bool = False,
                   recursive: bool = False) -> dict:
    """Scores every image of `inputs` on a Beam runner into sharded tables under `out`; returns the manifest.

    Args:
        model: a run directory, .keras, SavedModel, .tflite or preset handle (`load_scorer`) every worker can read; one
            at a URI (gs://, s3://, ...) is copied to each worker process first.
        inputs: local files / folders, gs:// s3:// hdfs:// files / prefixes, `@FILE` lists of paths.
        out: the output prefix (local folder or URI).
        runner, pipeline_args: Beam runner and its options (e.g. `--direct_num_workers=2`, `--s3_endpoint_url=...`);
            the driver's own listing and writes use `pipeline_args` too.
        fmt: "csv" (the columns of `keras-iqa score` plus `error`) or "jsonl".
        num_shards: default one per 1,000 inputs; a re-run keeps the count of the shards already under `out`.
        batch_size: images per RunInference batch; workers: decoding threads per batch.

    Raises:
        ValueError: no input, an unknown format, or `num_shards` other than that of the shards already under `out`;
        FileNotFoundError: a MODEL that is nowhere; fs.LockedError: another job is writing under `out`.
    """
    t0 = time.time()
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    if int(batch_size) < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    fs.configure(pipeline_args)
    _check_model(os.fspath(model))
    out = fs.abspath(out)
    paths, problems = list_inputs(inputs, recursive)
    if not paths:
        raise ValueError("nothing to score: " + "; ".join(f"{p}: {r}" for p, r in problems) if problems
                         else "nothing to score: no input given")
    with fs.lock(fs.join(out, layout.LOCK), "score --runner"):  # one job per output prefix at a time
        existing = _existing(out)
        counts = {n for _, n, _ in existing.values()}
        if len(counts) > 1 or any(f != fmt for _, _, f in existing.values()):
            raise ValueError(f"{out}: holds shards of another job ({', '.join(sorted(existing)[:3])}); choose another --out")
        if counts:
            kept = counts.pop()
            if num_shards is not None and int(num_shards) != kept:
                raise ValueError(f"--num-shards {num_shards}: {out} already holds shards of {kept}; give --num-shards {kept} "
                                 "(or nothing) to resume, or choose another --out")
            num_shards = kept
        num_shards = int(num_shards or max(1, math.ceil(len(paths) / 1000)))
        done = set()
        for name in existing:
            done.update(r["path"] for r in read_shard(fs.join(out, name)))
        todo = [p for p in paths if p not in done]
        if todo:
            args = list(pipeline_args)
            if runner in ("DirectRunner", "direct") and not any(a.startswith("--direct_num_workers") for a in args):
                args.append("--direct_num_workers=1")
            handler = KeyedModelHandler(ScoreModelHandler(model, precision, trust, batch_size, workers, pipeline_args))
            with beam.Pipeline(options=PipelineOptions(args, runner=runner)) as p:
                _ = (p | "Inputs" >> beam.Create([(shard_of(q, num_shards), q) for q in todo])
                     | "Spread" >> beam.Reshuffle()
                     | "Score" >> RunInference(handler)
                     | "Rows" >> beam.MapTuple(lambda shard, result: (shard, result.inference))
                     | "ByShard" >> beam.GroupByKey()
                     | "Write" >> beam.Map(_WriteShard(out, num_shards, fmt, pipeline_args)))
        shards = []
        for name in sorted(_existing(out)):
            rows = read_shard(fs.join(out, name))
            failed = sum(1 for r in rows if r["error"])
            shards.append({"name": name, "rows": len(rows), "scored": len(rows) - failed, "failed": failed})
        manifest = {"format": fmt, "num_shards": num_shards, "columns": list(COLUMNS), "model": os.fspath(model),
                    "inputs": len(paths), "scored_now": len(todo), "skipped_inputs": [list(p) for p in problems],
                    "rows": sum(s["rows"] for s in shards), "failed": sum(s["failed"] for s in shards), "shards": shards,
                    "runner": runner, "seconds": round(time.time() - t0, 3)}
        fs.replace_atomically(fs.join(out, MANIFEST), json.dumps(manifest, indent=1) + "\n")
    return manifest
