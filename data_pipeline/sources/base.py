"""Adapter base: a dataset's official on-disk layout -> validated rows + rejects.

A row is a dict: `id` (unique in the dataset), `path` (absolute, or a URI), `mos` (native scale), `std` (NaN if unknown) and, for
synthetic sets, `type`, `type_name`, `level`, `reference` (reference id); optionally `official` (train|validation|test).

Every file access goes through `data_pipeline.fs`, so ROOT may be a local folder or a URI (gs://, s3://, hdfs://...). An adapter
reads only the score/metadata files and lists the image folders (one listing per folder, cached): it never opens an image.

Metadata problems never pass silently:
- a score file with the wrong columns / shape raises `MetadataError` naming the file, what was expected and what was found;
- a row whose image file is missing, whose score is NaN or outside the declared range, or whose id repeats an earlier row is
  REJECTED (`{"path", "reason"}` naming the score file and row), and the others go on to the writer;
- so is a row whose image path leaves ROOT (`..`, an absolute path, a symlink out: `fs.within`), unless
  `allow_outside_root=True`. Path options (`path_options`: a score table, a list file) are read relative to the current
  folder, as every command-line path is (`resolve_path_options`; docs/data-pipeline.md).
"""

from __future__ import annotations

import io
import logging
import math
import os
from typing import Iterable, Optional

import numpy as np
import scipy.io

from data_pipeline import fs
from data_pipeline.images import is_image_file

logger = logging.getLogger(__name__)
OUTSIDE_ROOT_FIX = "pass --allow-outside-root (Python: allow_outside_root=True) to read files outside it"

class MetadataError(ValueError):
    """A score/metadata file that cannot be read as the official layout (the message names the file and the problem)."""


class Source:
    """One dataset adapter. Subclasses set the class attributes and implement `read()`.

    Attributes:
        name: dataset name (directory name under `--out`).
        kind: record kind (`authentic` | `synthetic`).
        score_range: declared native score range (lo, hi).
        higher_better: score direction.
        layout: a short description of the expected on-disk layout (shown by `keras-iqa prepare --help` and in docs).
    """

    name = "source"
    kind = "authentic"
    score_range = (0.0, 100.0)
    higher_better = True
    layout = ""
    #: scores outside the declared range by more than this fraction of the range are rejected
    range_tolerance = 0.02
    #: options naming a file the user points to (relative to the current folder), with what the file is
    path_options: dict = {}

    def __init__(self, root: str, allow_outside_root: bool = False, **options):
        self.root = fs.abspath(root)
        self.allow_outside_root = bool(allow_outside_root)
        if not fs.isdir(self.root):
            raise FileNotFoundError(f"{self.root}: dataset root directory not found (expected layout: {self.layout})")
        unknown = set(options) - set(self.options())
        if unknown:
            raise ValueError(f"{self.name}: unknown option(s) {sorted(unknown)}; known: {sorted(self.options()) or 'none'}")
        self.opts = self.resolve_path_options(self.root, {**self.options(), **options})

    @classmethod
    def options(cls) -> dict:
        """Adapter options and their defaults."""
        return {}

    @classmethod
    def resolve_path_options(cls, root: str, options: dict) -> dict:
        """`options` with each path option the user set made absolute, relative to the current folder as every command
        reads paths. A relative name found only under ROOT is taken from there, with a warning saying so (older command
        lines wrote them relative to ROOT); found nowhere: MetadataError naming both places. Defaults stay ROOT's files."""
        out = dict(options)
        for key, what in cls.path_options.items():
            value = out.get(key)
            if not value or fs.isabs(value) or value == cls.options().get(key):
                continue
            here, under_root = os.path.abspath(os.path.expanduser(str(value))), fs.join(fs.abspath(root), str(value))
            if os.path.exists(here):
                out[key] = here
            elif fs.exists(under_root):
                logger.warning("%s=%s: not in the current folder; reading %s (paths are relative to the current folder; "
                               "write %s=%s to say so)", key, value, under_root, key, under_root)
                out[key] = under_root
            else:
                raise MetadataError(f"{value}: {what} not found (paths are relative to the current folder, not --root; "
                                    f"looked for {here} and {under_root})")
        return out

    # ----------------------------------------------------------------------------------------------------------- helpers
    def path(self, *parts) -> str:
        return fs.join(self.root, *parts)

    def require(self, *parts) -> str:
        p = self.path(*parts)
        if not self.exists(p):
            raise MetadataError(f"{p}: not found; {self.name} expects this layout: {self.layout}")
        return p

    def _cached(self, folder: str) -> Optional[dict]:
        return self.__dict__.get("_scans", {}).get(folder)

    def exists(self, path: str) -> bool:
        """A file or folder at `path` (from its folder's listing when that was made already)."""
        entries = self._cached(fs.dirname(path))
        return fs.basename(path) in entries if entries is not None else fs.exists(path)

    def isdir(self, path: str) -> bool:
        entries = self._cached(fs.dirname(path))
        if entries is not None:
            return fs.basename(path) in entries and entries[fs.basename(path)] is None
        return fs.isdir(path)

    def is_file(self, path: str) -> bool:
        """Something that is not a folder is at `path` (the writer finds out whether it is an image). Image rows are checked
        against their folder's listing: one listing per folder, never one call per image."""
        entries = self._entries(fs.dirname(path))
        return entries.get(fs.basename(path), None) is not None

    def find_ci(self, folder: str, name: str) -> Optional[str]:
        """Case-insensitive lookup of `name` in `folder` (official releases mix `I01.BMP` / `i25.bmp`, `.JPG` / `.jpg`)."""
        if name in self._entries(folder):
            return fs.join(folder, name)
        return self._listing(folder).get(name.lower())

    def _entries(self, folder: str) -> dict:
        """`{name: size, or None for a subfolder}` of `folder`, listed once."""
        cache = self.__dict__.setdefault("_scans", {})
        if folder not in cache:
            try:
                cache[folder] = fs.scan(folder)
            except OSError:
                cache[folder] = {}
        return cache[folder]

    def _listing(self, folder: str) -> dict:
        cache = self.__dict__.setdefault("_listings", {})
        if folder not in cache:
            cache[folder] = {f.lower(): fs.join(folder, f) for f in sorted(self._entries(folder), reverse=True)}
        return cache[folder]

    def read_bytes(self, path: str) -> bytes:
        """A metadata file's bytes; MetadataError naming it when it cannot be read."""
        try:
            return fs.read_bytes(path)
        except OSError as e:
            raise MetadataError(f"{path}: cannot read ({type(e).__name__}: {e})") from e

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8", errors="replace")

    def open_table(self, path: str):
        """What pandas / scipy read: the local path itself, or the bytes of a remote file in a buffer."""
        return path if not fs.is_uri(path) else io.BytesIO(self.read_bytes(path))

    # ------------------------------------------------------------------------------------------------------------ reading
    def read(self) -> Iterable[dict]:
        """Yields raw rows (may hold `path=None` for a missing file, NaN scores...) with a `where` key (file + row) for
        messages. Raises MetadataError for an unreadable score file."""
        raise NotImplementedError

    def rows(self) -> tuple[list[dict], list[dict]]:
        """Validated rows and rejects (`{"path", "reason"}`)."""
        lo, hi = self.score_range
        tol = self.range_tolerance * (hi - lo)
        seen: dict[str, str] = {}
        good, rejects = [], []
        for row in self.read():
            where = row.pop("where", self.root)
            shown = row.get("path") or row.get("id") or where

            def reject(reason):
                rejects.append({"path": str(shown), "reason": f"{reason} ({where})"})

            target = row.get("path") or row.get("missing")
            if (not self.allow_outside_root and isinstance(target, str) and fs.isabs(target)
                    and not fs.within(target, self.root)):
                reject(f"image path leaves the dataset root {self.root} (it resolves to {fs.resolved(target)}); "
                       + OUTSIDE_ROOT_FIX)
                continue
            if not row.get("path") or not self.is_file(row["path"]):
                reject(f"image file not found: {row.get('missing') or row.get('path') or row.get('id')}")
                continue
            row.pop("missing", None)
            mos = row.get("mos")
            if self.requires_score:
                try:
                    mos = float(mos)
                except (TypeError, ValueError):
                    reject(f"score {mos!r} is not a number")
                    continue
                if math.isnan(mos) or math.isinf(mos):
                    reject(f"score is {mos}")
                    continue
                if not (lo - tol <= mos <= hi + tol):
                    reject(f"score {mos} outside the declared range [{lo}, {hi}]")
                    continue
                row["mos"] = mos
            if row["id"] in seen:
                reject(f"duplicate image id {row['id']!r} (first at {seen[row['id']]})")
                continue
            seen[row["id"]] = where
            std = row.get("std")
            row["std"] = float("nan") if std is None or std == "" else float(std)
            good.append(row)
        return good, rejects

    requires_score = True

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "score_range": list(self.score_range), "higher_better": self.higher_better,
                "root": self.root, "options": self.opts}


def cell_str(x) -> str:
    """A MATLAB cell entry (nested numpy object arrays from scipy.io.loadmat) -> str."""
    while isinstance(x, np.ndarray) and x.dtype == object:
        x = x.flat[0] if x.size else ""
    if isinstance(x, np.ndarray):
        return "".join(str(v) for v in x.flat) if x.dtype.kind in "US" else str(x.flat[0])
    return str(x)


def load_mat(path: str, key: str):
    """`scipy.io.loadmat(path)[key]` with errors naming the file and the keys found."""
    try:
        data = scipy.io.loadmat(path if not fs.is_uri(path) else io.BytesIO(fs.read_bytes(path)))
    except Exception as e:
        raise MetadataError(f"{path}: cannot read MATLAB file ({type(e).__name__}: {e})") from e
    if key not in data:
        found = sorted(k for k in data if not k.startswith("__"))
        raise MetadataError(f"{path}: no variable {key!r} (found {found})")
    return data[key]


def check_columns(path: str, columns, required) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise MetadataError(f"{path}: missing column(s) {missing}; found {list(columns)}; expected at least {list(required)}")


def image_files(folder: str) -> list[str]:
    return sorted(f for f in fs.listdir(folder) if is_image_file(f))
