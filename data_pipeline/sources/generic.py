"""Generic adapter for a user's own data: a folder of images and a CSV (or XLSX) of scores, column names configurable."""

from __future__ import annotations

import pandas as pd

from data_pipeline import fs
from data_pipeline.layout import check_dataset_name
from data_pipeline.sources.base import MetadataError, Source, check_columns


def _parse_range(value):
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p for p in value.replace(":", ",").split(",") if p.strip()]
        if len(parts) != 2:
            raise ValueError(f"csv: score_range must be 'lo,hi', got {value!r}")
        value = parts
    lo, hi = float(value[0]), float(value[1])
    if not lo < hi:
        raise ValueError(f"csv: score_range needs lo < hi, got {value!r}")
    return lo, hi


class FolderCSV(Source):
    """A folder of images + a CSV/XLSX of scores.

    Options:
        csv: the score table (relative to the current folder, or absolute; required).
        image_dir: folder of the images, relative to ROOT (default ROOT itself); the image column holds paths relative to it
            (a path that leaves ROOT is a rejected row unless `allow_outside_root`).
        image_column (`image`), score_column (`mos`), std_column (None): column names.
        score_range: `lo,hi` of the score scale (required: the range cannot be guessed from a sample safely).
        higher_better: True unless the score is a DMOS / distortion measure.
        split_column: optional column with train/validation/test -> the `official` split column.
        reference_column, type_column, level_column: optional; with a reference column the records are synthetic and splits
            are grouped by reference.
        name: dataset name (directory under --out), default `custom`: a plain folder name, never a path.
    """

    name = "csv"
    layout = "ROOT/<images...>, a CSV/XLSX with an image column and a score column (names configurable)"
    path_options = {"csv": "score table"}

    @classmethod
    def options(cls):
        return {"csv": None, "image_dir": "", "image_column": "image", "score_column": "mos", "std_column": None,
                "score_range": None, "higher_better": True, "split_column": None, "reference_column": None,
                "type_column": None, "level_column": None, "name": "custom"}

    def __init__(self, root, **options):
        super().__init__(root, **options)
        o = self.opts
        if not o["csv"]:
            raise ValueError("csv: pass csv=<score table> (e.g. --option csv=scores.csv)")
        rng = _parse_range(o["score_range"])
        if rng is None:
            raise ValueError("csv: pass score_range=lo,hi (e.g. --option score_range=1,5); it is used to normalise scores")
        self.score_range = rng
        hb = o["higher_better"]
        self.higher_better = hb if isinstance(hb, bool) else str(hb).lower() in ("1", "true", "yes")
        self.kind = "synthetic" if o["reference_column"] else "authentic"
        self.name = check_dataset_name(o["name"], "csv: option name")

    def read(self):
        o = self.opts
        p = o["csv"]  # made absolute by resolve_path_options
        if not self.exists(p):
            raise MetadataError(f"{p}: score table not found (paths are relative to the current folder, not --root)")
        try:
            src = self.open_table(p)
            df = pd.read_excel(src) if p.lower().endswith((".xlsx", ".xls")) else pd.read_csv(src, sep=None, engine="python")
        except Exception as e:
            raise MetadataError(f"{p}: cannot read table ({type(e).__name__}: {e})") from e
        cols = [o["image_column"], o["score_column"]] + [o[k] for k in ("std_column", "split_column", "reference_column",
                                                                          "type_column", "level_column") if o[k]]
        check_columns(p, df.columns, cols)
        folder = self.path(o["image_dir"])
        for i, r in enumerate(df.to_dict("records")):
            rel = str(r[o["image_column"]])
            full = rel if fs.isabs(rel) else fs.join(folder, rel)
            if not self.allow_outside_root and not fs.within(full, self.root):
                found = None  # never list a folder outside ROOT: rows() rejects the row, naming where it leads
            else:
                found = full if self.is_file(full) else self.find_ci(fs.dirname(full), fs.basename(full))
            row = {"id": rel, "path": found, "missing": full, "mos": r[o["score_column"]], "where": f"{p} row {i + 2}"}
            if o["std_column"]:
                row["std"] = r[o["std_column"]]
            if o["split_column"]:
                v = str(r[o["split_column"]]).strip().lower()
                row["official"] = {"training": "train", "val": "validation", "valid": "validation"}.get(v, v)
                if row["official"] not in ("train", "validation", "test"):
                    raise MetadataError(f"{p} row {i + 2}: split {v!r} is not train/validation/test")
            if o["reference_column"]:
                row["reference"] = str(r[o["reference_column"]])
                row["type"] = int(r[o["type_column"]]) if o["type_column"] else -1
                row["type_name"] = str(r[o["type_column"]]) if o["type_column"] else ""
                row["level"] = int(r[o["level_column"]]) if o["level_column"] else -1
            yield row
