"""Batched scoring of image files and folders with any keras-iqa model artifact.

MODEL may be:
- a run directory (`runs/NAME/` holding `model.keras`, written by `RunDir.save_final`);
- a `.keras` file;
- a SavedModel directory written by `keras-iqa export --format savedmodel` (`saved_models/NAME/1/`, or `saved_models/NAME/`,
  which picks the highest version); its `predict_crops` signature is used;
- a `.tflite` file (its contract is in the model's metadata or the sidecar `.json`): a per-crop model (one invoke per
  crop) or a whole-photo model (one invoke per photo; images of another size are scaled to its size first, bilinear).

Every image goes through the decode policy's Python path (`data_pipeline.images.load_image`: all formats Pillow reads, EXIF
orientation, CMYK, alpha, 16-bit) and the model's test-time contract (`data_pipeline.test_time.TestTimeCrops`: the same
crops and the same mean as evaluation, the SavedModel signatures and TFLite). Unreadable files are reported with the
reason and skipped. `score_images` scores decoded arrays the same way.

Example:
>>> import tempfile
>>> from pathlib import Path
>>> import numpy as np
>>> from PIL import Image
>>> import keras_iqa
>>> from keras_iqa.scoring import load_scorer, score_images, score_paths
>>> tmp = Path(tempfile.mkdtemp())
>>> keras_iqa.create_model("metaiqa-tiny").save(tmp / "model.keras")  # or a run directory, a SavedModel, a .tflite
>>> scorer = load_scorer(tmp / "model.keras")
>>> (tmp / "photos").mkdir()
>>> photo = np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)
>>> Image.fromarray(photo).save(tmp / "photos" / "a.png")
>>> _ = (tmp / "photos" / "b.jpg").write_bytes(b"not a JPEG")
>>> rows, bad = score_paths(scorer, [tmp / "photos"], recursive=True, batch_size=32, progress=False)
>>> [(Path(r["path"]).name, r["crops"]) for r in rows], [Path(p).name for p, _ in bad]
([('a.png', 4)], ['b.jpg'])
>>> (row,) = rows
>>> bool(np.isclose(score_images(scorer, [photo])[0], row["score"], atol=1e-4))  # arrays score as their files do
True
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np


@dataclass
class Scorer:
    """A loaded model: `crop_scores(crops [N, c, c, 3] float32) -> [N]` plus the contract needed to crop and normalise."""

    crop_scores: Callable[[np.ndarray], np.ndarray]
    kind: str
    source: str
    score_range: tuple
    higher_better: bool
    crop_size: int
    test_crops: int
    crop_policy: str
    max_crops_per_call: int = 256
    extra: dict = field(default_factory=dict)
    test_resize: object = None
    crop_seed: int = 0
    image_scores: Optional[Callable[[list], np.ndarray]] = None  # whole-photo models: decoded images -> scores

    @property
    def test_time(self):
        """The test-time contract (`data_pipeline.test_time.TestTimeCrops`) this scorer crops and averages with."""
        from data_pipeline.test_time import TestTimeCrops

        return TestTimeCrops(crop_size=self.crop_size, num_crops=self.test_crops, policy=self.crop_policy,
                             resize=self.test_resize, seed=self.crop_seed)

    def normalized(self, scores: np.ndarray) -> np.ndarray:
        lo, hi = self.score_range
        x = np.clip((np.asarray(scores, np.float64) - lo) / (hi - lo), 0.0, 1.0)
        return x if self.higher_better else 1.0 - x


def _contract_fields(d: dict) -> dict:
    """Scorer fields from an export's contract JSON (version 1 exports served "random" as a grid: kept so)."""
    out = {k: d[k] for k in ("score_range", "higher_better", "crop_size", "test_crops", "crop_policy")}
    tt = d.get("test_time")
    if tt is None:  # contract version 1
        out["crop_policy"] = d.get("served_crop_policy", "resize" if d["crop_policy"] == "resize" else "grid")
        return out
    out.update(crop_policy=tt["policy"], test_crops=tt["num_crops"], test_resize=tt.get("resize"), crop_seed=tt.get("seed", 0))
    return out


def _from_keras_model(model, kind: str, source: str) -> Scorer:
    from keras_iqa.evaluation.predict import make_score_fn

    c = int(model.crop_size)
    fn = make_score_fn(model, c)
    return Scorer(lambda crops: np.asarray(fn(crops)), kind, source, tuple(model.score_range), bool(model.higher_better),
                  c, int(model.test_crops), model.crop_policy, extra={"model": model},
                  test_resize=getattr(model, "test_resize", None))


def load_keras_model(path: os.PathLike):
    """Loads a `.keras` file with every keras-iqa family registered (so their custom classes deserialize)."""
    import keras

    from keras_iqa import registry

    registry.list_models()  # imports the family modules: registers their serializable classes
    return keras.saving.load_model(str(path), compile=False)


def _latest_version(root: Path) -> Optional[Path]:
    versions = sorted((int(p.name), p) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    return versions[-1][1] if versions else None


def load_scorer(path: os.PathLike) -> Scorer:
    """Opens any MODEL kind (see the module docstring). Errors name the path and what was expected there."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"MODEL {p} does not exist (expected a run directory, .keras file, SavedModel directory or .tflite)")
    if p.is_file() and p.suffix == ".keras":
        return _from_keras_model(load_keras_model(p), "keras", str(p))
    if p.is_file() and p.suffix == ".tflite":
        from keras_iqa.export.tflite import TFLiteScorer, read_contract

        sidecar = p.with_suffix(".json")
        meta = read_contract(p) or (json.loads(sidecar.read_text()) if sidecar.exists() else None)
        if meta is None:
            raise ValueError(f"{p}: no keras-iqa contract in the model's metadata and no sidecar {sidecar.name} (score range, "
                             "crop policy); re-export with keras-iqa export")
        tfl = TFLiteScorer(p, num_threads=min(4, os.cpu_count() or 1))
        photo = _photo_scores(tfl) if tfl.is_photo else None
        return Scorer(tfl, "tflite", str(p), **_contract_fields(meta), extra={"contract": meta}, image_scores=photo)
    if p.is_dir():
        if (p / "model.keras").is_file():  # run directory
            return _from_keras_model(load_keras_model(p / "model.keras"), "run", str(p))
        if not (p / "saved_model.pb").is_file():
            latest = _latest_version(p)
            if latest is not None and (latest / "saved_model.pb").is_file():
                p = latest
        if (p / "saved_model.pb").is_file():
            return _load_savedmodel(p)
        if (p / "checkpoints").is_dir() or (p / "config.json").is_file():
            raise ValueError(f"{p} looks like a run directory without model.keras (training not finished?); "
                             "finish training or pass a .keras file")
        raise ValueError(f"{p} is neither a run directory (model.keras), nor a SavedModel (saved_model.pb), "
                         "nor a TF Serving model root (numbered version folders)")
    raise ValueError(f"MODEL {p}: unsupported file type {p.suffix!r}; use a run directory, .keras, SavedModel directory or .tflite")


def _photo_scores(tfl) -> Callable[[list], np.ndarray]:
    """Scores decoded images with a whole-photo .tflite: each scaled to its photo size (bilinear) when it differs."""
    from data_pipeline.test_time import scale_to_photo_size

    def run(images):
        return tfl.score_photos([scale_to_photo_size(img, tfl.photo_size) for img in images]).astype(np.float64)

    return run


def _load_savedmodel(p: Path) -> Scorer:
    import tensorflow as tf

    from keras_iqa.export.savedmodel import CONTRACT_FILE

    meta_path = p / CONTRACT_FILE
    if not meta_path.is_file():
        raise ValueError(f"{p}: {CONTRACT_FILE} is missing (not written by keras-iqa export); cannot know the crop contract")
    meta = json.loads(meta_path.read_text())
    loaded = tf.saved_model.load(str(p))
    if "predict_crops" not in loaded.signatures:
        raise ValueError(f"{p}: no predict_crops signature (has {sorted(loaded.signatures)})")
    sig = loaded.signatures["predict_crops"]

    def run(crops):
        return np.asarray(sig(crops=tf.constant(crops, tf.float32))["score"])

    return Scorer(run, "savedmodel", str(p), **_contract_fields(meta), extra={"contract": meta, "loaded": loaded})


def iter_image_files(paths: Iterable[os.PathLike], recursive: bool = False) -> tuple[list, list]:
    """Expands files and folders to image files (by extension, sorted). Returns (files, problems[(path, reason)])."""
    from data_pipeline.images import is_image_file

    files, problems = [], []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            found = sorted(str(f) for f in it if f.is_file() and is_image_file(f))
            if not found:
                problems.append((str(p), "folder holds no image files" + ("" if recursive else " (use --recursive for subfolders)")))
            files.extend(found)
        elif p.is_file():
            files.append(str(p))  # named explicitly: try it whatever its extension; the decoder decides
        else:
            problems.append((str(p), "no such file or directory"))
    return list(dict.fromkeys(files)), problems


def score_paths(scorer: Scorer, paths: Iterable[os.PathLike], recursive: bool = False, batch_size: int = 32,
                progress: bool = True, workers: int = 2, on_rows: Optional[Callable[[list], None]] = None) -> tuple[list, list]:
    """Scores every image under `paths`; returns (rows, bad).

    rows: dicts {path, score, score_normalized, crops}; bad: (path, reason) for files that could not be decoded.
    `batch_size` images are decoded (in `workers` threads), cropped and scored together; `on_rows` receives each batch's rows
    (for streaming output).
    """
    import tensorflow as tf

    from data_pipeline.images import ImageDecodeError, load_image
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    files, bad = iter_image_files(paths, recursive)
    crop = scorer.test_time.crop_function()
    bar = _progress(len(files)) if progress and files else None

    def decode(path):
        try:
            return path, load_image(path), None
        except ImageDecodeError as e:
            return path, None, str(e)
        except Exception as e:  # anything else a broken file triggers: report and go on
            return path, None, f"{type(e).__name__}: {e}"

    rows = []
    done = 0
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(files), batch_size):
            batch = list(pool.map(decode, files[start:start + batch_size]))
            good, crops = [], []
            for path, img, err in batch:
                if err is not None:
                    bad.append((path, err))
                    continue
                try:
                    crops.append(img if scorer.image_scores else np.asarray(crop(tf.constant(img))))
                    good.append(path)
                except Exception as e:
                    bad.append((path, f"cropping failed: {e}"))
            batch_rows = []
            if good:
                if scorer.image_scores:
                    scores, n = scorer.image_scores(crops), scorer.test_time.num_crops
                else:
                    scores, n = _image_scores(scorer, crops)
                norm = scorer.normalized(scores)
                batch_rows = [{"path": pth, "score": float(s), "score_normalized": float(z), "crops": n}
                              for pth, s, z in zip(good, scores, norm)]
                rows.extend(batch_rows)
                if on_rows:
                    on_rows(batch_rows)
            done += len(batch)
            if bar is not None:
                bar(done, len(bad))
    return rows, bad


def _image_scores(scorer: Scorer, crops: list) -> tuple[np.ndarray, int]:
    """Image scores from each image's crops [n, c, c, 3] (the contract's mean), in calls of <= max_crops_per_call crops."""
    allc = np.concatenate(crops)
    step = scorer.max_crops_per_call
    per_crop = np.concatenate([np.asarray(scorer.crop_scores(allc[i:i + step])).reshape(-1)
                               for i in range(0, len(allc), step)])
    n = len(per_crop) // len(crops)
    return scorer.test_time.image_score(per_crop.reshape(len(crops), n)), n


def score_images(scorer: Scorer, images) -> np.ndarray:
    """Scores decoded images (uint8 [H, W, 3] arrays, any sizes) through the test-time contract: float64 [len(images)].

    Raises:
        ValueError: naming the index of an item that is not an RGB uint8 [H, W, 3] image.
    """
    import tensorflow as tf

    crop = scorer.test_time.crop_function()
    arrays = []
    for i, img in enumerate(images):
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or min(arr.shape[:2]) < 1:
            raise ValueError(f"image {i}: expected an RGB uint8 array [H, W, 3], got dtype {arr.dtype} shape {arr.shape}")
        arrays.append(arr)
    if not arrays:
        return np.zeros(0)
    if scorer.image_scores:
        return scorer.image_scores(arrays)
    return _image_scores(scorer, [np.asarray(crop(tf.constant(a))) for a in arrays])[0]


def _progress(total: int):
    """A progress callback(done, bad) on stderr: tqdm when installed, else keras' Progbar (stdout may hold the table)."""
    import sys

    try:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="image", file=sys.stderr, dynamic_ncols=True)

        def update(done, nbad):
            bar.set_postfix(skipped=nbad, refresh=False)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        return update
    except ImportError:
        import keras

        pb = keras.utils.Progbar(total, unit_name="image")
        return lambda done, nbad: pb.update(done)


def write_rows(rows: list, out: os.PathLike) -> Path:
    """Writes scores as CSV (`.csv`) or JSON lines (`.jsonl` / `.json`), atomically."""
    import csv

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    elif out.suffix.lower() in (".csv", ".tsv", ".txt"):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["path", "score", "score_normalized", "crops"],
                               delimiter="\t" if out.suffix.lower() == ".tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    else:
        raise ValueError(f"--out {out}: use a .csv or .jsonl file name")
    os.replace(tmp, out)
    return out
