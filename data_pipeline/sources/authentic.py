"""Adapters of the authentic-distortion datasets: KonIQ-10k, LIVE Challenge (CLIVE), BID, SPAQ, CID2013 (docs/datasets.md)."""

from __future__ import annotations

import csv
import io

import pandas as pd

from data_pipeline import fs
from data_pipeline.sources.base import MetadataError, Source, cell_str, check_columns, load_mat


def _read_table(path: str):
    try:
        src = path if not fs.is_uri(path) else io.BytesIO(fs.read_bytes(path))
        if path.lower().endswith((".xlsx", ".xls")):
            return pd.read_excel(src, sheet_name=0)
        return pd.read_csv(src, sep=None, engine="python")  # sniffs , ; or tab
    except Exception as e:
        raise MetadataError(f"{path}: cannot read table ({type(e).__name__}: {e})") from e


class KonIQ10k(Source):
    """KonIQ-10k: `1024x768/<flickr id>.jpg` (or `512x384/`), `koniq10k_scores_and_distributions.csv`
    (image_name, c1..c5, c_total, MOS, SD, MOS_zscore) and the official split in `koniq10k_distributions_sets.csv` (column `set`).

    Options: resolution `1024x768` | `512x384`; score_column `MOS_zscore` (default, 0-100, as HyperIQA/REQA train) or `MOS` (1-5,
    then SD is the std). Ids are the file names, identical for both resolutions.
    """

    name = "koniq10k"
    layout = ("ROOT/1024x768/*.jpg (and/or ROOT/512x384/*.jpg), ROOT/koniq10k_scores_and_distributions.csv, "
              "optional ROOT/koniq10k_distributions_sets.csv (official split)")
    SCORES = "koniq10k_scores_and_distributions.csv"
    SETS = "koniq10k_distributions_sets.csv"

    @classmethod
    def options(cls):
        return {"resolution": "1024x768", "score_column": "MOS_zscore"}

    def __init__(self, root, **options):
        super().__init__(root, **options)
        if self.opts["resolution"] not in ("1024x768", "512x384"):
            raise ValueError(f"koniq10k: resolution must be 1024x768 or 512x384, got {self.opts['resolution']!r}")
        if self.opts["score_column"] not in ("MOS_zscore", "MOS"):
            raise ValueError(f"koniq10k: score_column must be MOS_zscore or MOS, got {self.opts['score_column']!r}")
        self.score_range = (0.0, 100.0) if self.opts["score_column"] == "MOS_zscore" else (1.0, 5.0)

    def _image_dir(self):
        res = self.opts["resolution"]
        for cand in (self.path(res), self.path(f"koniq10k_{res}", res), self.path(f"koniq10k_{res}")):
            if self.isdir(cand):
                return cand
        raise MetadataError(f"{self.path(res)}: image folder not found; koniq10k expects {self.layout}")

    def read(self):
        scores = self.require(self.SCORES)
        df = _read_table(scores)
        col = self.opts["score_column"]
        check_columns(scores, df.columns, ["image_name", col])
        official = {}
        if self.exists(self.path(self.SETS)):
            sets = _read_table(self.path(self.SETS))
            check_columns(self.path(self.SETS), sets.columns, ["image_name", "set"])
            official = {str(n): {"training": "train", "validation": "validation", "test": "test"}.get(str(s).strip(), str(s))
                        for n, s in zip(sets["image_name"], sets["set"])}
        folder = self._image_dir()
        has_sd = "SD" in df.columns and col == "MOS"
        for i, r in enumerate(df.itertuples(index=False)):
            d = r._asdict()
            name = str(d["image_name"])
            yield {"id": name, "path": self.find_ci(folder, name), "missing": fs.join(folder, name), "mos": d[col],
                   "std": d["SD"] if has_sd else None, "official": official.get(name, ""), "where": f"{scores} row {i + 2}"}


class CLIVE(Source):
    """LIVE In the Wild Image Quality Challenge: `Images/`, `Data/AllImages_release.mat` (1169x1 cell of names),
    `Data/AllMOS_release.mat`, `Data/AllStdDev_release.mat`. The first 7 entries (the study's training images) are dropped
    -> 1162 images (pyiqa; REQA `[7:1169]`). MOS 0-100, higher = better."""

    name = "clive"
    layout = "ROOT/Images/*.bmp|*.JPG, ROOT/Data/AllImages_release.mat, ROOT/Data/AllMOS_release.mat, ROOT/Data/AllStdDev_release.mat"

    @classmethod
    def options(cls):
        return {"drop_first": 7}

    def read(self):
        names_p = self.require("Data", "AllImages_release.mat")
        mos_p = self.require("Data", "AllMOS_release.mat")
        names = [cell_str(x) for x in load_mat(names_p, "AllImages_release").reshape(-1)]
        mos = load_mat(mos_p, "AllMOS_release").astype(float).reshape(-1)
        std = [None] * len(names)
        std_p = self.path("Data", "AllStdDev_release.mat")
        if self.exists(std_p):
            std = load_mat(std_p, "AllStdDev_release").astype(float).reshape(-1).tolist()
        if not (len(names) == len(mos) == len(std)):
            raise MetadataError(f"{names_p}: {len(names)} names but {len(mos)} MOS values in {mos_p} and {len(std)} stds")
        folder = self.require("Images")
        k = int(self.opts["drop_first"])
        for i in range(k, len(names)):
            yield {"id": names[i], "path": self.find_ci(folder, names[i]), "missing": fs.join(folder, names[i]),
                   "mos": mos[i], "std": std[i], "where": f"{names_p} entry {i + 1}"}


class BID(Source):
    """BID (blurred image database): `DatabaseImage0001.JPG` ... in the root, `DatabaseGrades.xlsx` (first sheet: column 1 the
    image number, column 2 the MOS on 0-5). REQA/HyperIQA multiply by 20; here the native 0-5 is kept (`normalized` is the same)."""

    name = "bid"
    score_range = (0.0, 5.0)
    layout = "ROOT/DatabaseImage0001.JPG ... ROOT/DatabaseImage0586.JPG, ROOT/DatabaseGrades.xlsx (col 1 image number, col 2 MOS)"

    def read(self):
        grades = self.require("DatabaseGrades.xlsx")
        df = _read_table(grades)
        if df.shape[1] < 2:
            raise MetadataError(f"{grades}: expected image number in column 1 and MOS in column 2; found columns {list(df.columns)}")
        folder = self.root if self.exists(self.path("DatabaseImage0001.JPG")) or not self.isdir(
            self.path("ImageDatabase")) else self.path("ImageDatabase")
        for i, (num, mos) in enumerate(zip(df.iloc[:, 0], df.iloc[:, 1])):
            where = f"{grades} row {i + 2}"
            try:
                n = int(num)
            except (TypeError, ValueError):
                yield {"id": f"row{i + 2}", "path": None, "missing": f"image number {num!r} is not an integer", "where": where}
                continue
            name = f"DatabaseImage{n:04d}.JPG"
            yield {"id": name, "path": self.find_ci(folder, name), "missing": fs.join(folder, name), "mos": mos,
                   "where": where}


class SPAQ(Source):
    """SPAQ: `TestImage/00001.jpg ...`, `Annotations/MOS and Image attribute scores.xlsx` (columns `Image name`, `MOS`).
    MOS 0-100. Option short_side (e.g. 512, ARNIQA; pyiqa uses 448): resize at prepare time, bicubic, stored as lossless PNG
    (the full-resolution photos are ~4000x3000; resizing once saves decoding time at every epoch)."""

    name = "spaq"
    layout = "ROOT/TestImage/*.jpg, ROOT/Annotations/MOS and Image attribute scores.xlsx"

    @classmethod
    def options(cls):
        return {"short_side": None}

    def read(self):
        ann = self.require("Annotations", "MOS and Image attribute scores.xlsx")
        df = _read_table(ann)
        check_columns(ann, df.columns, ["Image name", "MOS"])
        folder = self.require("TestImage")
        side = self.opts["short_side"]
        for i, (name, mos) in enumerate(zip(df["Image name"], df["MOS"])):
            name = str(name)
            row = {"id": name, "path": self.find_ci(folder, name), "missing": fs.join(folder, name), "mos": mos,
                   "where": f"{ann} row {i + 2}"}
            if side:
                row["resize_short_side"] = int(side)
            yield row


class CID2013(Source):
    """CID2013: `IS{1..6}/co{n}/IS_<roman>_C<nn>_D<nn>.jpg` indexed by the Waterloo/icbcbicc list (`CID2013.txt`, columns
    `dis_img_path,dis_type,score`; the official score file's format was not seen). Realigned MOS ~0-100, which can be slightly
    negative (observed -9.55): the range is declared (0, 100) with a 10 % tolerance, normalisation clips."""

    name = "cid2013"
    range_tolerance = 0.10
    layout = "ROOT/IS1/co1/IS_I_C01_D01.jpg ..., ROOT/CID2013.txt (or list_file=...) with columns dis_img_path,dis_type,score"
    path_options = {"list_file": "list file"}

    @classmethod
    def options(cls):
        return {"list_file": None}

    def _list_file(self):
        if self.opts["list_file"]:
            p = self.opts["list_file"]  # made absolute by resolve_path_options
            if not self.exists(p):
                raise MetadataError(f"{p}: list file not found (paths are relative to the current folder, not --root)")
            return p
        for cand in ("CID2013.txt", "CID2013.csv", fs.join("csv", "CID2013.txt")):
            if self.exists(self.path(cand)):
                return self.path(cand)
        raise MetadataError(f"{self.root}: no CID2013.txt / CID2013.csv; pass list_file=... ({self.layout})")

    def _resolve(self, rel: str):
        rel = rel.replace("\\", "/").lstrip("/")
        parts = rel.split("/")
        for cand in (rel, "/".join(parts[1:]), "/".join(parts[2:])):
            if cand and self.is_file(self.path(cand)):
                return self.path(cand), cand
        return None, rel

    def read(self):
        lst = self._list_file()
        rows = list(csv.reader(io.StringIO(self.read_text(lst), newline="")))
        header = [h.strip() for h in rows[0]] if rows else []
        check_columns(lst, header, ["dis_img_path", "score"])
        ip, sp = header.index("dis_img_path"), header.index("score")
        for i, r in enumerate(rows[1:]):
            if not r or all(not c.strip() for c in r):
                continue
            where = f"{lst} row {i + 2}"
            if len(r) <= max(ip, sp):
                yield {"id": f"row{i + 2}", "path": None, "missing": f"row has {len(r)} fields, expected {len(header)}",
                       "where": where}
                continue
            path, rel = self._resolve(r[ip].strip())
            yield {"id": rel if path is None else fs.relpath(path, self.root), "path": path, "missing": rel,
                   "mos": r[sp].strip(), "where": where}


