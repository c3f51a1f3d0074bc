"""The on-disk layout in one place: the file names of prepared datasets and run directories, and their readers.

A prepared dataset (`keras-iqa prepare` / `synthesize`; written by `data_pipeline.beam.writer`), a local folder or a URI of
`data_pipeline.fs`:

    manifest.json                              the commit record: kind, count, score_range, higher_better, shards, ...
    splits.csv                                 image_id, split_00 .. split_NN (train | test), official (train |
                                               validation | test, empty = not in it)
    records-IIIII-of-NNNNN-<attempt>.tfrecord  the shards the manifest lists (+ `<shard>.meta.json` sidecars)

A run directory (`keras_iqa.training.runner.RunDir`, local):

    config.json  run_info.json  history.csv  checkpoints/  backup/  model.keras  results.json

`keras-iqa train hcl --stages all` writes one run directory per curriculum under its `--out` (`HCL_STAGE_DIRS`:
1-restoration, 2-synthetic, 3-finetune) plus a `results.json` of all stages; its deployable model is the last stage's,
so `find_model_file` of that folder is `3-finetune/model.keras`.

Every reader raises `FileNotFoundError` for a missing file and `ValueError` for a malformed one; each message names the
file and the fix. This module imports nothing from `keras_iqa` (keras_iqa imports data_pipeline, never the reverse).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import uuid
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from data_pipeline import fs, schema

PathLike = Union[str, os.PathLike]

# ------------------------------------------------------------------------------------------------------- prepared datasets
MANIFEST = "manifest.json"
SPLITS = "splits.csv"
SIDECAR = ".meta.json"  # `<shard file>.meta.json`: the worker's own count, checksum and per-image facts
SHARD_PREFIX = "records-{:05d}-of-{:05d}"
SHARD_RE = re.compile(r"^records-(\d{5})-of-(\d{5})-([0-9a-f]{6,32})\.tfrecord$")
SPLIT_VALUES = ("train", "validation", "test")
#: Manifest keys every reader needs (`load_manifest(required=...)` asks for more).
MANIFEST_KEYS = ("score_range", "higher_better")
_PREPARE = "re-run `keras-iqa prepare` (or `keras-iqa synthesize`) to rewrite it"
#: The writer's lock (`data_pipeline.fs.lock`): present while a `prepare` / `synthesize` run writes the dataset.
LOCK = ".keras-iqa.lock"
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_dataset_name(name, what: str = "dataset name") -> str:
    """`name` when it is a plain folder name (letters, digits, `.`, `_`, `-`; no separator, no `..`): the dataset folder
    under `--out` can then never be outside it. ValueError naming `what` otherwise."""
    name = str(name)
    if not _DATASET_NAME.match(name) or ".." in name:
        raise ValueError(f"{what} {name!r} is not a plain folder name (letters, digits, '.', '_', '-'; no '/', '\\' or "
                         "'..'): it names the dataset's folder under --out")
    return name

# -------------------------------------------------------------------------------------------------------- run directories
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
RUN_INFO_FILE = "run_info.json"
HISTORY_FILE = "history.csv"
CHECKPOINTS_DIR = "checkpoints"
BACKUP_DIR = "backup"
#: `keras-iqa train hcl --stages all`: one run directory per curriculum, in this order.
HCL_STAGE_DIRS = {"restoration": "1-restoration", "synthetic": "2-synthetic", "finetune": "3-finetune"}


class MissingModelError(FileNotFoundError, ValueError):
    """No model file where one was expected (a `FileNotFoundError`, and a `ValueError` as the older callers raised)."""


# --------------------------------------------------------------------------------------------------------------- shards
def shard_name(i: int, n: int, attempt: Optional[str] = None) -> str:
    """`records-IIIII-of-NNNNN-<attempt>.tfrecord`: shard i of n, written by one attempt (a fresh random id unless given)."""
    return f"{SHARD_PREFIX.format(i, n)}-{attempt or uuid.uuid4().hex[:12]}.tfrecord"


def parse_shard_name(name: str) -> Optional[tuple[int, int, str]]:
    """`(index, num_shards, attempt)` of a shard file name, None for any other name."""
    m = SHARD_RE.match(name)
    return (int(m.group(1)), int(m.group(2)), m.group(3)) if m else None


def shard_files(data_dir: PathLike, manifest: Optional[dict] = None, check: bool = True) -> list[str]:
    """Paths of the shards `manifest.json` lists (a hand-made dataset whose manifest lists none: its `*.tfrecord` files).

    check: raise FileNotFoundError when a listed shard is missing (a dataset that was moved in part, or deleted)."""
    data_dir = os.fspath(data_dir)
    manifest = load_manifest(data_dir) if manifest is None else manifest
    listed = manifest.get("shards") or []
    if not isinstance(listed, list) or not all(isinstance(s, dict) and "file" in s for s in listed):
        raise ValueError(f"{fs.join(data_dir, MANIFEST)}: 'shards' must be a list of {{'file': ...}} entries; {_PREPARE}")
    files = [fs.join(data_dir, s["file"]) for s in listed]
    if not files:
        files = [fs.join(data_dir, f) for f in fs.listdir(data_dir) if f.endswith(".tfrecord")]
        if not files:
            raise FileNotFoundError(f"{data_dir}: no TFRecord shards listed in {MANIFEST} or present; {_PREPARE}")
    if check:
        missing = [f for f in files if not fs.exists(f)]
        if missing:
            raise FileNotFoundError(f"{data_dir}: shard files listed in {MANIFEST} are missing: {missing[:3]} "
                                    f"({len(missing)} of {len(files)}); {_PREPARE}")
    return files


# ------------------------------------------------------------------------------------------------------------- manifest
def manifest_path(data_dir: PathLike) -> str:
    return fs.join(os.fspath(data_dir), MANIFEST)


def load_manifest(data_dir: PathLike, required: Sequence[str] = MANIFEST_KEYS) -> dict:
    """Reads `<data_dir>/manifest.json` (local or URI), checked: a JSON object holding the `required` keys, of a schema
    version this reader knows."""
    data_dir = os.fspath(data_dir)
    path = manifest_path(data_dir)
    try:
        raw = fs.read_bytes(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: {data_dir} is not a prepared dataset (run `keras-iqa prepare` "
                                "first)") from None
    try:
        man = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: not valid JSON ({e}); the file is damaged: {_PREPARE}") from None
    if not isinstance(man, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(man).__name__}; {_PREPARE}")
    missing = [k for k in required if k not in man]
    if missing:
        raise ValueError(f"{path}: key(s) {missing} missing; {_PREPARE}")
    version = man.get("schema_version", 0)
    if isinstance(version, (int, float)) and version > schema.SCHEMA_VERSION:
        raise ValueError(f"{path}: schema version {version} is newer than this reader's {schema.SCHEMA_VERSION}; "
                         "upgrade keras-iqa")
    return man


# --------------------------------------------------------------------------------------------------------------- splits
def splits_path(data_dir: PathLike) -> str:
    return fs.join(os.fspath(data_dir), SPLITS)


def has_splits(data_dir: PathLike) -> bool:
    return fs.exists(splits_path(data_dir))


def splits_csv_text(table: Mapping[str, Sequence[str]]) -> str:
    """The text of `splits.csv`: image_id, the split_XX columns in order, then `official` where the table has it."""
    cols = ["image_id"] + sorted(c for c in table if c.startswith("split_")) + (["official"] if "official" in table else [])
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(cols)
    w.writerows(zip(*(table[c] for c in cols)))
    return buf.getvalue()


def write_splits_csv(path: PathLike, table: Mapping[str, Sequence[str]]) -> None:
    """Writes `splits.csv` atomically (local: a temporary file + rename; object stores: one put)."""
    fs.replace_atomically(os.fspath(path), splits_csv_text(table))


def read_splits_csv(path: PathLike) -> dict:
    """Reads a `splits.csv` file (local or URI) into `{column: list of str}`, checked: an `image_id` column, one value per
    column on every row, unique ids, values train | validation | test (`official` may also be empty: not in it)."""
    path = os.fspath(path)
    try:
        text = fs.read_text(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; prepared datasets hold {SPLITS} ({_PREPARE})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e}); {_PREPARE}") from None
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    if not rows or "image_id" not in rows[0]:
        raise ValueError(f"{path}: not a splits file (first row must name the column 'image_id'); got {rows[:1]}")
    header = rows[0]
    seen: dict = {}
    for n, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise ValueError(f"{path}: row {n} has {len(r)} values for the {len(header)} columns {header}; {_PREPARE}")
        for c, v in zip(header, r):
            if c == "image_id":
                if v in seen:
                    raise ValueError(f"{path}: image_id {v!r} appears more than once (rows {seen[v]} and {n}); an image "
                                     "can be in only one subset per split")
                seen[v] = n
            elif v not in SPLIT_VALUES and not (c == "official" and v == ""):
                raise ValueError(f"{path}: column {c!r} row {n} has {v!r}; expected train, test or validation")
    return {c: [r[j] for r in rows[1:]] for j, c in enumerate(header)}


def read_splits(data_dir: PathLike) -> dict:
    """`<data_dir>/splits.csv` as `read_splits_csv` reads it."""
    return read_splits_csv(splits_path(data_dir))


def split_columns(table: Mapping[str, Sequence[str]]) -> list[str]:
    """The random split columns (split_00 ..) of a splits table, in file order."""
    return [c for c in table if str(c).startswith("split_")]


def check_split_column(table, column: str, path: PathLike = SPLITS) -> None:
    """ValueError naming the file and the columns it has when `column` is not one of them (`table`: dict or DataFrame)."""
    if column not in table:
        raise ValueError(f"{os.fspath(path)}: no split column {column!r}; available: "
                         f"{[c for c in table if c != 'image_id']}")


def ids_for(path: PathLike, column: str, subset: str) -> list[str]:
    """Image ids whose `column` equals `subset` in the splits file `path` (e.g. `ids_for(p, "split_03", "test")`)."""
    table = read_splits_csv(path)
    check_split_column(table, column, path)
    return [i for i, v in zip(table["image_id"], table[column]) if v == subset]


# ------------------------------------------------------------------------------------------------------- run directories
def hcl_stage_dir(out: PathLike, stage: str) -> str:
    """`<out>/<n>-<stage>` of `keras-iqa train hcl --stages all` (stage: restoration | synthetic | finetune)."""
    if stage not in HCL_STAGE_DIRS:
        raise ValueError(f"unknown HCL stage {stage!r}; expected one of {list(HCL_STAGE_DIRS)}")
    return os.path.join(os.fspath(out), HCL_STAGE_DIRS[stage])


def is_hcl_stages_dir(path: PathLike) -> bool:
    """A folder written by `keras-iqa train hcl --stages all` (it holds at least one stage's run directory)."""
    p = Path(path)
    return p.is_dir() and any((p / d).is_dir() for d in HCL_STAGE_DIRS.values())


def looks_like_run_dir(path: PathLike) -> bool:
    """A run directory, finished or not: it holds model.keras, checkpoints/, run_info.json or config.json, or HCL stages."""
    p = Path(path)
    return p.is_dir() and (any((p / n).exists() for n in (MODEL_FILE, CHECKPOINTS_DIR, RUN_INFO_FILE, CONFIG_FILE))
                           or is_hcl_stages_dir(p))


def model_file(path: PathLike) -> Optional[Path]:
    """The model of a run directory: its `model.keras`, or for an HCL `--stages all` folder the last stage's
    (`3-finetune/model.keras`); None when there is none (not a run directory, or training not finished)."""
    p = Path(path)
    for cand in (p / MODEL_FILE, p / HCL_STAGE_DIRS["finetune"] / MODEL_FILE):
        if cand.is_file():
            return cand
    return None


def find_model_file(path: PathLike) -> Path:
    """The `.keras` file a run directory or a `.keras` path names (see `model_file`), or a `MissingModelError` saying
    what is there and what to pass instead."""
    p = Path(path)
    if p.is_dir():
        found = model_file(p)
        if found is not None:
            return found
        if is_hcl_stages_dir(p):
            raise MissingModelError(f"{p}: an HCL `--stages all` folder whose last stage has no {MODEL_FILE} yet "
                                    f"({HCL_STAGE_DIRS['finetune']}/{MODEL_FILE}; training not finished?); finish "
                                    "training, or pass a stage's run directory or a .keras file")
        if looks_like_run_dir(p):
            raise MissingModelError(f"{p} looks like a run directory without {MODEL_FILE} (training not finished?); "
                                    "finish training or pass a .keras file")
        raise MissingModelError(f"{p} is not a run directory: no {MODEL_FILE} in it (train first, or pass a .keras file)")
    if p.suffix == ".keras":
        if not p.is_file():
            raise MissingModelError(f"{p}: no such .keras file")
        return p
    if not p.exists():
        raise MissingModelError(f"{p} does not exist (expected a run directory or a .keras file)")
    raise MissingModelError(f"{p}: not a run directory or a .keras file")


def run_dir_of(path: PathLike) -> Path:
    """The run directory whose files (config.json, results.json, run_info.json) describe the model `path` names: for an
    HCL `--stages all` folder, its last stage."""
    f = find_model_file(path)
    return f.parent if Path(path).is_dir() else Path(path).parent


def read_run_json(run_dir: PathLike, name: str = CONFIG_FILE, default: Optional[dict] = None) -> dict:
    """A JSON file of a run directory (config.json, results.json, run_info.json): `default` ({}) when absent, a
    ValueError naming the file when it is damaged."""
    path = Path(run_dir) / name
    if not path.is_file():
        return {} if default is None else default
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); the file is damaged: delete it, or train again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
