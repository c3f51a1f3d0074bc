"""Adapters of the synthetic-distortion datasets: KADID-10k, TID2013, LIVE IQA release 2, CSIQ, and the KADIS-700k references
(docs/datasets.md). Rows carry distortion type, name, level and the reference id (splits are grouped by reference)."""

from __future__ import annotations

import csv
import io
import math
import re

import pandas as pd

from data_pipeline import fs
from data_pipeline.sources.base import MetadataError, Source, cell_str, check_columns, load_mat

#: KADID-10k / KADIS-700k type names, ids 1..25 (Waterloo list strings, docs/distortions.md).
KADID_TYPES = ("GBLUR", "Lens_Blur", "Motion_Blur", "Color_Diffusion", "Color_Shift", "Color_Quantization", "Saturation_Dist._HSV",
               "Saturation_Dist._Lab", "JP2K", "JPEG", "AWGN", "AWGN_YCbCr", "Impulse_Noise", "Multiplicative_Noise", "Denoising",
               "Brighten", "Darken", "Mean_Shift", "Jitter", "Non-eccentricity_patch", "Pixelate", "Quantization", "Color_Block",
               "High_Sharpen", "Contrast_Dist.")
#: TID2013 type names, ids 1..24 (docs/datasets.md; names 21 and 24 unverified).
TID_TYPES = ("AWGN", "Additive_noise_in_color_components", "Spatially_correlated_noise", "Masked_noise", "High_frequency_noise",
             "Impulse_noise", "Quantization_noise", "Gaussian_blur", "Image_denoising", "JPEG", "JPEG2000",
             "JPEG_transmission_errors", "JPEG2000_transmission_errors", "Non_eccentricity_pattern_noise",
             "Local_block-wise_distortions", "Mean_shift", "Contrast_change", "Change_of_color_saturation",
             "Multiplicative_Gaussian_noise", "Comfort_noise", "Lossy_compression_of_noisy_images",
             "Image_color_quantization_with_dither", "Chromatic_aberrations", "Sparse_sampling_and_reconstruction")
#: LIVE release 2 folders in the order of dmos.mat, with their image counts.
LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
#: CSIQ type tokens (lower-case) -> (id, name).
CSIQ_TYPES = {"awgn": (1, "AWGN"), "jpeg": (2, "JPEG"), "jpeg2000": (3, "JPEG2000"), "jp2k": (3, "JPEG2000"),
              "fnoise": (4, "pink_noise"), "blur": (5, "Gaussian_blur"), "contrast": (6, "contrast_decrement")}


class KADID10k(Source):
    """KADID-10k: `images/IXX_YY_ZZ.png` (reference XX, type YY 1-25, level ZZ 1-5) + `images/IXX.png`, and `dmos.csv`
    (`dist_img,ref_img,dmos,var`). Despite the name `dmos` is a MOS on 1-5, higher = better; std = sqrt(var)."""

    name = "kadid10k"
    kind = "synthetic"
    score_range = (1.0, 5.0)
    layout = "ROOT/images/I01_01_01.png ... ROOT/images/I81.png, ROOT/dmos.csv (dist_img,ref_img,dmos,var)"

    def read(self):
        p = self.require("dmos.csv")
        try:
            df = pd.read_csv(self.open_table(p))
        except Exception as e:
            raise MetadataError(f"{p}: cannot read CSV ({type(e).__name__}: {e})") from e
        check_columns(p, df.columns, ["dist_img", "ref_img", "dmos"])
        folder = self.require("images")
        for i, r in enumerate(df.itertuples(index=False)):
            name, where = str(r.dist_img), f"{p} row {i + 2}"
            m = re.match(r"^I(\d+)_(\d+)_(\d+)\.\w+$", name, re.IGNORECASE)
            if not m:
                yield {"id": name, "path": None, "missing": f"name {name!r} is not IXX_YY_ZZ.png", "where": where}
                continue
            t = int(m.group(2))
            var = getattr(r, "var", float("nan"))
            yield {"id": name, "path": self.find_ci(folder, name), "missing": fs.join(folder, name), "mos": r.dmos,
                   "std": math.sqrt(var) if var == var and var >= 0 else None, "type": t,
                   "type_name": KADID_TYPES[t - 1] if 1 <= t <= 25 else f"type{t}", "level": int(m.group(3)),
                   "reference": str(r.ref_img), "where": where}


class TID2013(Source):
    """TID2013: `distorted_images/iXX_YY_Z.bmp`, `reference_images/IXX.BMP`, `mos_with_names.txt` (`<MOS> <name>` per line),
    optional `mos_std.txt` (one std per line, same order). File-name case is inconsistent on disk (`I01_01_1.bmp` vs
    `i01_01_1.bmp`, `I25.BMP` vs `i25.bmp`): lookups are case-insensitive and ids are lower-cased. MOS 0-9, higher = better."""

    name = "tid2013"
    kind = "synthetic"
    score_range = (0.0, 9.0)
    layout = "ROOT/distorted_images/i01_01_1.bmp ..., ROOT/reference_images/I01.BMP ..., ROOT/mos_with_names.txt, ROOT/mos_std.txt"

    def read(self):
        p = self.require("mos_with_names.txt")
        lines = self.read_text(p).splitlines()
        stds = []
        sp = self.path("mos_std.txt")
        if self.exists(sp):
            stds = [ln.strip() for ln in self.read_text(sp).splitlines() if ln.strip()]
        folder = self.require("distorted_images")
        k = 0
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            where = f"{p} line {i + 1}"
            parts = line.split()
            if len(parts) != 2:
                raise MetadataError(f"{where}: expected '<MOS> <file name>', found {line!r}")
            mos, name = parts
            std = stds[k] if k < len(stds) else None
            k += 1
            m = re.match(r"^i(\d+)_(\d+)_(\d+)\.\w+$", name, re.IGNORECASE)
            if not m:
                yield {"id": name.lower(), "path": None, "missing": f"name {name!r} is not iXX_YY_Z.bmp", "where": where}
                continue
            t = int(m.group(2))
            yield {"id": name.lower(), "path": self.find_ci(folder, name), "missing": fs.join(folder, name), "mos": mos,
                   "std": std, "type": t, "type_name": TID_TYPES[t - 1] if 1 <= t <= 24 else f"type{t}",
                   "level": int(m.group(3)), "reference": f"i{int(m.group(1)):02d}", "where": where}
        if stds and len(stds) != k:
            raise MetadataError(f"{sp}: {len(stds)} stds for {k} images in {p}; the files must list the same images in order")


class LIVE(Source):
    """LIVE IQA release 2: `jp2k/ jpeg/ wn/ gblur/ fastfading/` (img1.bmp ...), `refimgs/`, `dmos.mat` (`dmos`, `orgs`, 1x982 in
    that folder order), `refnames_all.mat` (`refnames_all`). Undistorted copies (`orgs == 1`) are dropped -> 779 images.
    DMOS ~0-100, LOWER = better (10 % range tolerance: realigned DMOS slightly overshoots)."""

    name = "live"
    kind = "synthetic"
    score_range = (0.0, 100.0)
    higher_better = False
    range_tolerance = 0.10
    layout = "ROOT/{jp2k,jpeg,wn,gblur,fastfading}/img<k>.bmp, ROOT/refimgs/*.bmp, ROOT/dmos.mat, ROOT/refnames_all.mat"

    def read(self):
        dp = self.require("dmos.mat")
        rp = self.require("refnames_all.mat")
        dmos = load_mat(dp, "dmos").astype(float).reshape(-1)
        orgs = load_mat(dp, "orgs").reshape(-1)
        refs = [cell_str(x) for x in load_mat(rp, "refnames_all").reshape(-1)]
        total = sum(n for _, n in LIVE_FOLDERS)
        if not (len(dmos) == len(orgs) == len(refs) == total):
            raise MetadataError(f"{dp}/{rp}: expected {total} entries (jp2k 227, jpeg 233, wn 174, gblur 174, fastfading 174); "
                                f"found dmos {len(dmos)}, orgs {len(orgs)}, refnames {len(refs)}")
        i = 0
        for t, (folder, n) in enumerate(LIVE_FOLDERS, start=1):
            for k in range(1, n + 1):
                if int(orgs[i]) != 1:
                    name = f"img{k}.bmp"
                    yield {"id": f"{folder}/{name}", "path": self.find_ci(self.path(folder), name),
                           "missing": self.path(folder, name), "mos": dmos[i], "type": t, "type_name": folder, "level": -1,
                           "reference": refs[i], "where": f"{dp} entry {i + 1}"}
                i += 1


class CSIQ(Source):
    """CSIQ: `src_imgs/<ref>.png`, distorted `<ref>.<TYPE>.<level>.png` in `dst_imgs_all/`, `dst_imgs/` or `dst_imgs/<TYPE>/`,
    and `csiq_label.txt` (`<dist_name> <dmos>` per line, the HyperIQA/REQA/pyiqa label file). DMOS 0-1, LOWER = better.
    Reference = first dot-token; types AWGN, JPEG, jpeg2000, fnoise, BLUR, contrast -> ids 1-6."""

    name = "csiq"
    kind = "synthetic"
    score_range = (0.0, 1.0)
    higher_better = False
    layout = "ROOT/dst_imgs_all/1600.AWGN.1.png ... (or dst_imgs/ or dst_imgs/<TYPE>/), ROOT/src_imgs/1600.png, ROOT/csiq_label.txt"
    path_options = {"label_file": "label file"}  # the default is ROOT's own csiq_label.txt

    @classmethod
    def options(cls):
        return {"label_file": "csiq_label.txt"}

    def _find(self, name, typ):
        for folder in ("dst_imgs_all", "dst_imgs"):
            p = self.find_ci(self.path(folder), name)
            if p:
                return p
        base = self.path("dst_imgs")
        if self.isdir(base):
            for sub in sorted(n for n, size in self._entries(base).items() if size is None):
                if sub.lower() == typ.lower() or (sub.lower() in ("jpeg2000", "jp2k") and typ.lower() in ("jpeg2000", "jp2k")):
                    p = self.find_ci(fs.join(base, sub), name)
                    if p:
                        return p
        return None

    def read(self):
        p = self.opts["label_file"]
        if fs.isabs(p):
            if not self.exists(p):
                raise MetadataError(f"{p}: label file not found (paths are relative to the current folder, not --root)")
        else:
            p = self.require(p)
        lines = self.read_text(p).splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            where = f"{p} line {i + 1}"
            parts = line.split()
            if len(parts) != 2:
                raise MetadataError(f"{where}: expected '<dist_name> <dmos>', found {line!r}")
            name, score = parts
            if not re.search(r"\.\w+$", name):
                name += ".png"
            tok = name.split(".")
            if len(tok) < 4 or tok[1].lower() not in CSIQ_TYPES or not tok[2].isdigit():
                yield {"id": name, "path": None, "missing": f"name {name!r} is not <ref>.<TYPE>.<level>.png", "where": where}
                continue
            t, tname = CSIQ_TYPES[tok[1].lower()]
            yield {"id": name, "path": self._find(name, tok[1]), "missing": name, "mos": score, "type": t, "type_name": tname,
                   "level": int(tok[2]), "reference": tok[0], "where": where}


class KADIS700kRefs(Source):
    """KADIS-700k references (no subjective scores): `ref_imgs/*.png` and `kadis700k_ref_imgs.csv` (first column the reference
    file name, the others its assigned distortion type(s); a cell may hold "7,8"). Rows carry `dist_types` (list of ints) for
    the synthesize pipeline; prepared as authentic-kind records with NaN MOS."""

    name = "kadis700k"
    requires_score = False
    score_range = (0.0, 1.0)  # placeholder: there are no scores
    layout = "ROOT/ref_imgs/*.png, ROOT/kadis700k_ref_imgs.csv (ref_im, dist_type...)"

    def read(self):
        p = self.require("kadis700k_ref_imgs.csv")
        folder = self.require("ref_imgs")
        rows = list(csv.reader(io.StringIO(self.read_text(p), newline="")))
        start = 1 if rows and not re.search(r"\.\w+$", rows[0][0].strip()) else 0  # header is optional
        for i, r in enumerate(rows[start:], start=start):
            if not r or not r[0].strip():
                continue
            name = r[0].strip()
            types = []
            for cell in r[1:]:
                types += [int(float(x)) for x in re.split(r"[,\s;]+", cell.strip()) if x]
            yield {"id": name, "path": self.find_ci(folder, name), "missing": fs.join(folder, name),
                   "mos": float("nan"), "dist_types": types, "where": f"{p} row {i + 1}"}
