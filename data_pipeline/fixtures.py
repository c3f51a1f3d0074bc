"""Tiny generated datasets for tests, notebooks and benchmarks (no real dataset can be downloaded here).

- `write_tiny_records(out_dir, kind=...)` writes a PREPARED dataset (records + manifest.json + splits.csv) directly, through the
  same shard writer as `keras-iqa prepare` but without Beam.
- `make_<dataset>(root, ...)` functions write tiny copies of the OFFICIAL on-disk layouts (docs/datasets.md) with generated images
  and score files, including their awkward parts (CLIVE .mat cells, TID2013 mixed-case names, KADID `dmos.csv`, ...).

Generated images carry a learnable quality signal: a smooth random "content" image, degraded by noise and blur whose strength
grows as the score drops, so tiny models can learn something in a few steps.
"""

from __future__ import annotations

import functools
import io
import os
import zlib
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter
import scipy.io

from data_pipeline import schema
from data_pipeline.beam.writer import write_records
from data_pipeline.sources.synthetic import LIVE_FOLDERS
from data_pipeline.splits import SplitConfig

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
        >>> import tempfile
        >>> write_tiny_records(tempfile.mkdtemp(), kind="synthetic", n=30)["count"]
        30
    """
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


# ------------------------------------------------------------------------------------------------- official layouts (tiny)
def _img(seed: int, quality: float, size) -> np.ndarray:
    return degrade(content_image(seed, size), quality, seed + 1)


def _qualities(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).permutation(n) + 0.5) / n


def _cell(strings) -> np.ndarray:
    """A MATLAB-style Nx1 cell array of strings (what scipy.io.savemat writes as a cell)."""
    arr = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        arr[i, 0] = s
    return arr


def make_koniq10k(root: str, n: int = 8, size=(24, 32), seed: int = 0) -> dict:
    """KonIQ-10k layout: 1024x768/ and 512x384/ (here tiny), the scores CSV and the official sets CSV."""
    q = _qualities(n, seed)
    names = [f"{1000000 + 37 * i}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        img = _img(seed * 1000 + i, q[i], size)
        save(img, os.path.join(root, "1024x768", name))
        save(np.asarray(Image.fromarray(img).resize((size[1] // 2 + 8, size[0] // 2 + 8))), os.path.join(root, "512x384", name))
    mos = 1 + 4 * q
    counts = {f"c{k}": [int(50 * (1 - abs(m - k) / 4)) for m in mos] for k in range(1, 6)}
    df = pd.DataFrame({"image_name": names, **counts, "c_total": [sum(c[i] for c in counts.values()) for i in range(n)],
                       "MOS": mos, "SD": 0.5, "MOS_zscore": 100 * q})
    df.to_csv(os.path.join(root, "koniq10k_scores_and_distributions.csv"), index=False)
    sets = ["training"] * n
    for i in range(n):
        sets[i] = ("training", "training", "validation", "test")[i % 4]
    df2 = df.drop(columns=["MOS_zscore"]).assign(set=sets)
    df2.to_csv(os.path.join(root, "koniq10k_distributions_sets.csv"), index=False)
    return {"ids": names, "mos_zscore": (100 * q).tolist(), "sets": sets}


def make_clive(root: str, n: int = 8, size=(24, 24), seed: int = 0) -> dict:
    """CLIVE layout: Images/ (BMP and upper-case .JPG), Data/*.mat cells; 7 leading training images (t1.bmp..t7.bmp)."""
    names = [f"t{i + 1}.bmp" for i in range(7)] + [f"{100 + i}.{'bmp' if i % 2 else 'JPG'}" for i in range(n)]
    q = np.concatenate([np.full(7, 0.5), _qualities(n, seed)])
    for i, name in enumerate(names):
        save(_img(seed * 1000 + i, q[i], size), os.path.join(root, "Images", name))
    os.makedirs(os.path.join(root, "Data"), exist_ok=True)
    scipy.io.savemat(os.path.join(root, "Data", "AllImages_release.mat"), {"AllImages_release": _cell(names)})
    scipy.io.savemat(os.path.join(root, "Data", "AllMOS_release.mat"), {"AllMOS_release": (3 + 90 * q)[None, :]})
    scipy.io.savemat(os.path.join(root, "Data", "AllStdDev_release.mat"), {"AllStdDev_release": np.full((1, len(names)), 12.5)})
    return {"ids": names[7:], "mos": (3 + 90 * q[7:]).tolist()}


def make_bid(root: str, n: int = 6, size=(24, 32), seed: int = 0) -> dict:
    """BID layout: DatabaseImage0001.JPG ... and DatabaseGrades.xlsx (image number, MOS 0-5)."""
    q = _qualities(n, seed)
    for i in range(n):
        save(_img(seed * 1000 + i, q[i], size), os.path.join(root, f"DatabaseImage{i + 1:04d}.JPG"))
    pd.DataFrame({"Image Number": list(range(1, n + 1)), "Average Grade": (5 * q).round(3)}).to_excel(
        os.path.join(root, "DatabaseGrades.xlsx"), index=False)
    return {"ids": [f"DatabaseImage{i + 1:04d}.JPG" for i in range(n)], "mos": (5 * q).round(3).tolist()}


def make_spaq(root: str, n: int = 5, size=(48, 64), seed: int = 0) -> dict:
    """SPAQ layout: TestImage/00001.jpg ... and Annotations/MOS and Image attribute scores.xlsx."""
    q = _qualities(n, seed)
    names = [f"{i + 1:05d}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        save(_img(seed * 1000 + i, q[i], size), os.path.join(root, "TestImage", name))
    os.makedirs(os.path.join(root, "Annotations"), exist_ok=True)
    pd.DataFrame({"Image name": names, "MOS": (2 + 94 * q).round(2), "Brightness": 50.0, "Colorfulness": 40.0}).to_excel(
        os.path.join(root, "Annotations", "MOS and Image attribute scores.xlsx"), index=False)
    return {"ids": names, "mos": (2 + 94 * q).round(2).tolist()}


def make_cid2013(root: str, size=(24, 32), seed: int = 0) -> dict:
    """CID2013 layout: IS{1,2}/co{1,2}/IS_<roman>_C<nn>_D<nn>.jpg and the icbcbicc-style CID2013.txt (one negative score)."""
    rows, romans, k = [], {1: "I", 2: "II"}, 0
    for s in (1, 2):
        for c in (1, 2):
            for d in (1, 2):
                rel = f"IS{s}/co{c}/IS_{romans[s]}_C{c:02d}_D{d:02d}.jpg"
                q = (k + 0.5) / 8
                save(_img(seed * 1000 + k, q, size), os.path.join(root, rel))
                rows.append((f"CID2013/{rel}", s, round(-5 + 92 * q, 3)))
                k += 1
    with open(os.path.join(root, "CID2013.txt"), "w") as f:
        f.write("dis_img_path,dis_type,score\n")
        for r in rows:
            f.write(f"{r[0]},{r[1]},{r[2]}\n")
    return {"ids": [r[0].split("/", 1)[1] for r in rows], "mos": [r[2] for r in rows]}


def make_kadid10k(root: str, n_refs: int = 3, n_types: int = 2, n_levels: int = 2, size=(24, 32), seed: int = 0) -> dict:
    """KADID-10k layout: images/I01.png, images/I01_01_01.png ..., dmos.csv (dist_img,ref_img,dmos,var)."""
    lines, ids = ["dist_img,ref_img,dmos,var"], []
    for r in range(1, n_refs + 1):
        ref = content_image(seed * 1000 + r, size)
        save(ref, os.path.join(root, "images", f"I{r:02d}.png"))
        for t in range(1, n_types + 1):
            for lv in range(1, n_levels + 1):
                q = 1.0 - 0.2 * lv - 0.05 * t
                name = f"I{r:02d}_{t:02d}_{lv:02d}.png"
                save(degrade(ref, q, r * 100 + t * 10 + lv), os.path.join(root, "images", name))
                lines.append(f"{name},I{r:02d}.png,{1 + 4 * q:.3f},0.25")
                ids.append(name)
    with open(os.path.join(root, "dmos.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return {"ids": ids, "refs": [f"I{r:02d}.png" for r in range(1, n_refs + 1)]}


def make_tid2013(root: str, n_refs: int = 3, n_types: int = 2, n_levels: int = 2, size=(24, 32), seed: int = 0) -> dict:
    """TID2013 layout with its case mess: distorted_images/I01_01_1.bmp (upper) and i01_01_2.bmp (lower),
    reference_images/I01.BMP but i03.bmp, mos_with_names.txt always lower-case, mos_std.txt."""
    mos_lines, std_lines, ids = [], [], []
    for r in range(1, n_refs + 1):
        ref = content_image(seed * 1000 + r, size)
        save(ref, os.path.join(root, "reference_images", f"I{r:02d}.BMP" if r < n_refs else f"i{r:02d}.bmp"))
        for t in range(1, n_types + 1):
            for lv in range(1, n_levels + 1):
                q = 1.0 - 0.2 * lv - 0.05 * t
                name = f"i{r:02d}_{t:02d}_{lv}.bmp"
                disk = name.upper().replace(".BMP", ".bmp") if (r, t, lv) == (1, 1, 1) else name
                save(degrade(ref, q, r * 100 + t * 10 + lv), os.path.join(root, "distorted_images", disk))
                mos_lines.append(f"{9 * q:.5f} {name}")
                std_lines.append("0.8")
                ids.append(name)
    with open(os.path.join(root, "mos_with_names.txt"), "w") as f:
        f.write("\n".join(mos_lines) + "\n")
    with open(os.path.join(root, "mos_std.txt"), "w") as f:
        f.write("\n".join(std_lines) + "\n")
    return {"ids": ids, "refs": [f"i{r:02d}" for r in range(1, n_refs + 1)]}


def make_live(root: str, per_folder: int = 2, size=(24, 32), seed: int = 0) -> dict:
    """LIVE release 2 layout: dmos.mat (1x982 dmos + orgs), refnames_all.mat, 5 folders of imgK.bmp, refimgs/.
    Only `per_folder` entries per folder are distorted images (orgs = 0, files written); the rest are marked as undistorted
    copies (orgs = 1), which the adapter drops, so no file is needed for them."""
    refs = ["parrots.bmp", "buildings.bmp", "caps.bmp"]
    for j, r in enumerate(refs):
        save(content_image(seed * 1000 + j, size), os.path.join(root, "refimgs", r))
    dmos, orgs, refnames, ids = [], [], [], []
    for folder, n in LIVE_FOLDERS:
        for k in range(1, n + 1):
            ref = refs[k % len(refs)]
            if k <= per_folder:
                q = 0.3 + 0.2 * k
                save(degrade(content_image(seed * 1000 + refs.index(ref), size), q, k), os.path.join(root, folder, f"img{k}.bmp"))
                dmos.append(100 * (1 - q))
                orgs.append(0)
                ids.append(f"{folder}/img{k}.bmp")
            else:
                dmos.append(0.0)
                orgs.append(1)
            refnames.append(ref)
    scipy.io.savemat(os.path.join(root, "dmos.mat"), {"dmos": np.asarray(dmos)[None, :], "orgs": np.asarray(orgs)[None, :]})
    scipy.io.savemat(os.path.join(root, "refnames_all.mat"), {"refnames_all": _cell(refnames).T})
    return {"ids": ids, "refs": refs}


def make_csiq(root: str, n_refs: int = 3, size=(24, 32), seed: int = 0) -> dict:
    """CSIQ layout: src_imgs/<ref>.png, dst_imgs/<TYPE>/<ref>.<TYPE>.<level>.png (original per-type folders), csiq_label.txt."""
    refs = [str(1600 + i) for i in range(n_refs)]
    lines, ids = [], []
    for j, r in enumerate(refs):
        img = content_image(seed * 1000 + j, size)
        save(img, os.path.join(root, "src_imgs", f"{r}.png"))
        for typ in ("AWGN", "jpeg2000"):
            for lv in (1, 2):
                name = f"{r}.{typ}.{lv}.png"
                q = 1.0 - 0.3 * lv
                save(degrade(img, q, j * 10 + lv), os.path.join(root, "dst_imgs", typ, name))
                lines.append(f"{name} {1 - q:.4f}")
                ids.append(name)
    with open(os.path.join(root, "csiq_label.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return {"ids": ids, "refs": refs}


def make_kadis700k(root: str, n: int = 4, size=(24, 32), seed: int = 0) -> dict:
    """KADIS-700k references: ref_imgs/*.png and kadis700k_ref_imgs.csv (ref_im,dist_type_1,dist_type_2; one "7,8" cell)."""
    names = [f"ref{i:05d}.png" for i in range(n)]
    with open(os.path.join(_mkdir(root), "kadis700k_ref_imgs.csv"), "w") as f:
        f.write("ref_im,dist_type_1,dist_type_2\n")
        for i, name in enumerate(names):
            save(content_image(seed * 1000 + i, size), os.path.join(root, "ref_imgs", name))
            f.write(f'{name},{i % 25 + 1},"7,8"\n' if i == 0 else f"{name},{i % 25 + 1},{(i + 3) % 25 + 1}\n")
    return {"ids": names}


def make_csv_folder(root: str, n: int = 6, size=(24, 32), seed: int = 0) -> dict:
    """A user's own data: photos/<name>.png + scores.csv (file,score,split) on a 1-10 scale."""
    q = _qualities(n, seed)
    names = [f"photo_{i}.png" for i in range(n)]
    with open(os.path.join(_mkdir(root), "scores.csv"), "w") as f:
        f.write("file,score,split\n")
        for i, name in enumerate(names):
            save(_img(seed * 1000 + i, q[i], size), os.path.join(root, "photos", name))
            f.write(f"{name},{1 + 9 * q[i]:.3f},{'test' if i % 3 == 0 else 'train'}\n")
    return {"ids": names}


def _mkdir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


#: dataset name -> layout generator
LAYOUTS = {"koniq10k": make_koniq10k, "clive": make_clive, "bid": make_bid, "spaq": make_spaq, "cid2013": make_cid2013,
           "kadid10k": make_kadid10k, "tid2013": make_tid2013, "live": make_live, "csiq": make_csiq,
           "kadis700k": make_kadis700k, "csv": make_csv_folder}
