"""Scoring images with any keras-iqa model: `keras_iqa.score` (one call, any input), `load_scorer` + `score_paths` (files).

One line (docs/scoring.md):

    keras_iqa.score("photo.jpg", model="runs/reqa-koniq")           # -> Scores; float(...) for a single image
    keras_iqa.score(["a.jpg", pil_image, uint8_array, jpeg_bytes, "photos/"], model="saved_models/reqa")

MODEL (`model=` here, the first argument of `keras-iqa score`) may be:
- a run directory (`runs/NAME/` holding `model.keras`, written by `RunDir.save_final`);
- a `.keras` file;
- a SavedModel directory written by `keras-iqa export --format savedmodel` (`saved_models/NAME/1/`, or `saved_models/NAME/`,
  which picks the highest version); its `predict_crops` signature is used;
- a `.tflite` file (its contract is in the model's metadata or the sidecar `.json`): a per-crop model (one invoke per
  crop) or a whole-photo model (one invoke per photo; images of another size are scaled to its size first, bilinear);
- a preset handle (`keras_iqa.presets.is_preset_handle`: a preset folder, a registered name, kaggle://, hf://, https://);
- a model card name (`keras-iqa models`, e.g. "reqa-tiny"): a freshly built model with the card's initial weights, whose
  scores mean nothing until it is trained (a warning says so);
- an already built keras-iqa `keras.Model`, or a `Scorer` from `load_scorer` (load once, score many times).

Every image goes through the decode policy (`data_pipeline.images`: all formats Pillow reads, EXIF orientation, CMYK,
alpha on white, 16-bit `>> 8`) and the model's test-time contract (`data_pipeline.test_time.TestTimeCrops`: the same crops
and the same mean as evaluation, the SavedModel signatures and TFLite), so a file, its bytes, its decoded array and its
Pillow image get the same score. Images are decoded in threads while the previous batch is scored; the crops of a batch of
images share forward passes. Inputs that cannot be scored are reported per item with the reason; the others are scored.
`precision="bf16"` scores a Keras model through a `mixed_bfloat16` copy with its backbone's batch norm folded into the
convolutions (faster on CPUs with native bf16; scores differ from fp32 by bf16 rounding).

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
>>> result = keras_iqa.score([photo, tmp / "photos"], model=scorer)  # an array, then a folder's files (one is broken)
>>> result
Scores(3 items: 2 scored, 1 failed)
>>> bool(np.isclose(result.scores[0], row["score"], atol=1e-4)), [Path(src).name for _, src, _ in result.errors]
(True, ['b.jpg'])
>>> bool(np.isclose(float(keras_iqa.score(photo, model=scorer)), row["score"], atol=1e-4))  # one image: float(...)
True
"""

from __future__ import annotations

import collections
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from data_pipeline import layout

PRECISIONS = ("fp32", "bf16", "auto")


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
    precision: str = "fp32"

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


# --------------------------------------------------------------------------------------------------------- loading models
def resolve_precision(precision: str) -> str:
    """"fp32" or "bf16": "auto" is bf16 on CPUs with native bf16 dot products (`keras_iqa.training.cpu`), else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    from keras_iqa.training.cpu import resolve_precision as resolve

    import tensorflow as tf

    return resolve("auto", gpu=bool(tf.config.list_physical_devices("GPU")))


def _from_keras_model(model, kind: str, source: str, precision: str = "fp32") -> Scorer:
    from keras_iqa.evaluation.predict import make_score_fn, policy_twin

    precision = resolve_precision(precision)
    scored = policy_twin(model, "mixed_bfloat16" if precision == "bf16" else "float32")  # fp32: as saved and exported
    c = int(model.crop_size)
    fn = make_score_fn(scored, c, fold_bn=True)  # bf16: the backbone's BN folded into its convolutions (one trace)
    return Scorer(lambda crops: np.asarray(fn(crops)), kind, source, tuple(model.score_range), bool(model.higher_better),
                  c, int(model.test_crops), model.crop_policy, max_crops_per_call=64, extra={"model": model, "scored": scored},
                  test_resize=getattr(model, "test_resize", None), precision=precision)


def load_keras_model(path: os.PathLike):
    """Loads a `.keras` file with every keras-iqa family registered (so their custom classes deserialize)."""
    import keras

    from keras_iqa import registry

    registry.list_models()  # imports the family modules: registers their serializable classes
    return keras.saving.load_model(str(path), compile=False)


def _latest_version(root: Path) -> Optional[Path]:
    versions = sorted((int(p.name), p) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    return versions[-1][1] if versions else None


def _is_keras_model(obj) -> bool:
    try:
        import keras
    except ImportError:  # pragma: no cover - keras is a dependency
        return False
    return isinstance(obj, keras.Model) and hasattr(obj, "score") and hasattr(obj, "crop_size")


def _is_preset_handle(text: str) -> bool:
    from keras_iqa.presets import is_preset_handle

    return is_preset_handle(text)


def load_scorer(model, precision: str = "fp32") -> Scorer:
    """Opens any MODEL (see the module docstring) as a `Scorer`. Errors name the model and what was expected there.

    Args:
        model: path, preset handle, card name, keras-iqa `keras.Model` or `Scorer` (returned as it is).
        precision: "fp32" (default: the scores of evaluation and the exports), "bf16" (Keras models only: a
            `mixed_bfloat16` copy with the backbone's batch norm folded; faster on CPUs with native bf16) or "auto"
            (bf16 where the CPU has native bf16, else fp32; exported models keep their own precision).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if isinstance(model, Scorer):
        return model
    if _is_keras_model(model):
        return _from_keras_model(model, "keras", getattr(model, "card_name", None) or model.name, precision)
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a path, preset handle, card name, keras-iqa keras.Model or Scorer, got "
                        f"{type(model).__name__}")
    text = os.fspath(model)
    p = Path(text).expanduser()
    if p.exists():
        if p.is_dir() and layout.model_file(p) is None and not (p / "saved_model.pb").is_file() \
                and _is_preset_handle(str(p)):
            return _from_preset(str(p), precision)
        return _load_path(p, precision)
    if _is_preset_handle(text):
        return _from_preset(text, precision)
    from keras_iqa import registry

    if text in registry.list_models():
        card = registry.get_card(text)
        warnings.warn(f"model {text!r} is a model card: a freshly built model ({card.trained_on}) whose scores mean "
                      "nothing until it is trained; pass a run directory, .keras, SavedModel, .tflite or a preset with "
                      "trained weights", UserWarning, stacklevel=_caller_stacklevel())
        return _from_keras_model(registry.create_model(text), "card", text, precision)
    import difflib

    close = difflib.get_close_matches(text, registry.list_models(), n=3, cutoff=0.6)
    hint = f" (did you mean the card {', '.join(repr(c) for c in close)}?)" if close else ""
    raise FileNotFoundError(f"MODEL {text} does not exist (expected a run directory, .keras file, SavedModel directory, "
                            f".tflite, a preset handle or a model card name){hint}")


def _from_preset(handle: str, precision: str) -> Scorer:
    from keras_iqa.presets import from_preset

    return _from_keras_model(from_preset(handle), "preset", handle, precision)


def _exported_precision(p: Path, precision: str) -> None:
    if precision == "bf16":
        raise ValueError(f"{p}: precision bf16 applies to Keras models (run directory, .keras, preset, card); an exported "
                         "SavedModel or .tflite runs in the precision it was exported with")


def _load_path(p: Path, precision: str) -> Scorer:
    if p.is_file() and p.suffix == ".keras":
        return _from_keras_model(load_keras_model(p), "keras", str(p), precision)
    if p.is_file() and p.suffix == ".tflite":
        _exported_precision(p, precision)
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
        run_model = layout.model_file(p)  # a run directory (an HCL `--stages all` folder: its last stage)
        if run_model is not None:
            return _from_keras_model(load_keras_model(run_model), "run", str(p), precision)
        if not (p / "saved_model.pb").is_file():
            latest = _latest_version(p)
            if latest is not None and (latest / "saved_model.pb").is_file():
                p = latest
        if (p / "saved_model.pb").is_file():
            _exported_precision(p, precision)
            return _load_savedmodel(p)
        if layout.looks_like_run_dir(p):
            layout.find_model_file(p)  # raises the run directory's message: no model.keras yet, and what to pass
        raise ValueError(f"{p} is neither a run directory (model.keras), nor a SavedModel (saved_model.pb), "
                         "nor a TF Serving model root (numbered version folders), nor a preset folder")
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


# ------------------------------------------------------------------------------------------- the one scoring loop (engine)
@dataclass
class _Item:
    """One image to score: `load()` -> uint8 [H, W, 3] under the decode policy, or raises with the reason."""

    source: str
    input_index: int
    load: Callable[[], np.ndarray]


@dataclass
class _Result:
    item: _Item
    score: float = float("nan")
    crops: int = 0
    crop_scores: Optional[np.ndarray] = None
    error: Optional[str] = None


def _load(item: _Item):
    from data_pipeline.images import ImageDecodeError

    try:
        return item.load(), None
    except (ImageDecodeError, ValueError, TypeError, FileNotFoundError) as e:
        return None, str(e)
    except Exception as e:  # anything else a broken input triggers: report it and go on
        return None, f"{type(e).__name__}: {e}"


def _run(scorer: Scorer, items: Iterable[_Item], batch_size: int = 8, workers: int = 2, want_crops: bool = False,
         bar: Optional[Callable] = None):
    """Yields each batch's `_Result`s (in input order). Images are decoded in `workers` threads one batch ahead, so the
    next batch decodes while this one is scored; the crops of a batch's images share forward passes."""
    import tensorflow as tf

    if int(batch_size) < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if want_crops and scorer.image_scores:
        raise ValueError(f"{scorer.source}: a whole-photo .tflite gives one score per photo (its crops are inside the graph); "
                         "per-crop scores need the per-crop .tflite, the SavedModel or a Keras model")
    crop = None if scorer.image_scores else scorer.test_time.crop_function()
    pending = collections.deque()
    it = iter(items)
    done = nbad = 0
    with ThreadPoolExecutor(max(1, int(workers))) as pool:
        def fill():
            while len(pending) < 2 * batch_size:
                item = next(it, None)
                if item is None:
                    return
                pending.append((item, pool.submit(_load, item)))

        fill()
        while pending:
            batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
            fill()  # the next batch decodes while this one is scored
            results, good, inputs = [], [], []
            for item, future in batch:
                img, err = future.result()
                res = _Result(item)
                results.append(res)
                if err is None:
                    try:
                        inputs.append(img if crop is None else np.asarray(crop(tf.constant(img))))
                        good.append(res)
                    except Exception as e:
                        err = f"cropping failed: {type(e).__name__}: {e}"
                res.error = err
            if good:
                if crop is None:
                    scores, n, per_crop = scorer.image_scores(inputs), scorer.test_time.num_crops, None
                else:
                    scores, n, per_crop = _image_scores(scorer, inputs, with_crops=True)
                for k, res in enumerate(good):
                    res.score, res.crops = float(scores[k]), int(n)
                    if want_crops:
                        res.crop_scores = np.asarray(per_crop[k], np.float64)
            done += len(results)
            nbad += sum(r.error is not None for r in results)
            if bar is not None:
                bar(done, nbad)
            yield results


def _image_scores(scorer: Scorer, crops: list, with_crops: bool = False):
    """Image scores from each image's crops [n, c, c, 3] (the contract's mean), in calls of <= max_crops_per_call crops.
    Returns (scores [N], n) or, `with_crops`, (scores, n, per-crop scores [N, n])."""
    allc = np.concatenate(crops)
    step = scorer.max_crops_per_call
    per_crop = np.concatenate([np.asarray(scorer.crop_scores(allc[i:i + step])).reshape(-1)
                               for i in range(0, len(allc), step)])
    n = len(per_crop) // len(crops)
    per_crop = per_crop.reshape(len(crops), n)
    scores = scorer.test_time.image_score(per_crop)
    return (scores, n, per_crop) if with_crops else (scores, n)


# ------------------------------------------------------------------------------------------------------------ files
def iter_image_files(paths: Iterable[os.PathLike], recursive: bool = False) -> tuple[list, list]:
    """Expands files and folders to image files (by extension, sorted). Returns (files, problems[(path, reason)])."""
    files, problems = [], []
    for raw in paths:
        found, problem = _expand_path(Path(raw), recursive)
        files.extend(found)
        if problem:
            problems.append((str(raw), problem))
    return list(dict.fromkeys(files)), problems


def _expand_path(p: Path, recursive: bool) -> tuple[list, Optional[str]]:
    """(image files, None) for a file or folder; ([], reason) when there is nothing to score there."""
    from data_pipeline.images import is_image_file

    if p.is_dir():
        it = p.rglob("*") if recursive else p.iterdir()
        found = sorted(str(f) for f in it if f.is_file() and is_image_file(f))
        if not found:
            return [], "folder holds no image files" + ("" if recursive else " (subfolders: --recursive / recursive=True)")
        return found, None
    if p.is_file():
        return [str(p)], None  # named explicitly: try it whatever its extension; the decoder decides
    return [], "no such file or directory"


def _file_item(path: str, index: int = 0) -> _Item:
    from data_pipeline.images import load_image

    return _Item(path, index, lambda: load_image(path))


def score_paths(scorer: Scorer, paths: Iterable[os.PathLike], recursive: bool = False, batch_size: int = 32,
                progress: bool = True, workers: int = 2, on_rows: Optional[Callable[[list], None]] = None,
                crop_scores: bool = False) -> tuple[list, list]:
    """Scores every image under `paths`; returns (rows, bad).

    rows: dicts {path, score, score_normalized, crops} (plus `crop_scores`, a list, when asked); bad: (path, reason)
    for files that could not be decoded. `batch_size` images are decoded (in `workers` threads, one batch ahead), cropped
    and scored together; `on_rows` receives each batch's rows (for streaming output).
    """
    if int(batch_size) < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    files, bad = iter_image_files(paths, recursive)
    bar = _progress(len(files)) if progress and files else None
    rows = []
    for results in _run(scorer, (_file_item(f) for f in files), batch_size, workers, crop_scores, bar):
        batch_rows = []
        for r in results:
            if r.error is not None:
                bad.append((r.item.source, r.error))
                continue
            row = {"path": r.item.source, "score": r.score, "score_normalized": float(scorer.normalized(r.score)),
                   "crops": r.crops}
            if crop_scores:
                row["crop_scores"] = [float(v) for v in r.crop_scores]
            batch_rows.append(row)
        rows.extend(batch_rows)
        if on_rows and batch_rows:
            on_rows(batch_rows)
    return rows, bad


def score_images(scorer: Scorer, images) -> np.ndarray:
    """Scores decoded images (uint8 [H, W, 3] arrays, any sizes) through the test-time contract: float64 [len(images)].

    Raises:
        ValueError: naming the index of an item that is not an RGB uint8 [H, W, 3] image (`keras_iqa.score` takes any
            array and reports bad items instead).
    """
    arrays = []
    for i, img in enumerate(images):
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or min(arr.shape[:2]) < 1:
            raise ValueError(f"image {i}: expected an RGB uint8 array [H, W, 3], got dtype {arr.dtype} shape {arr.shape}")
        arrays.append(arr)
    if not arrays:
        return np.zeros(0)
    items = [_Item(f"image {i}", i, (lambda a=a: a)) for i, a in enumerate(arrays)]
    rows = [r for results in _run(scorer, items, batch_size=32, workers=1) for r in results]
    for r in rows:
        if r.error is not None:
            raise ValueError(f"{r.item.source}: {r.error}")
    return np.array([r.score for r in rows], np.float64)


# ------------------------------------------------------------------------------------------------- any input: score()
@dataclass(repr=False)
class Scores:
    """What `keras_iqa.score` returns: one row per image, in input order (a folder adds its image files, sorted; a
    [N, H, W, C] array adds N rows); rows that could not be scored hold NaN and are listed in `errors`.

    Attributes:
        scores: float64 [N] on the model's `score_range` (NaN where scoring failed). `np.asarray(result)` gives it too,
            and `float(result)` the single score of a one-image result.
        normalized: float64 [N] in [0, 1], 1 = best (the score range mapped, lower-is-better models flipped).
        sources: [N] a file's path, or a label such as "<array 2>", "<array 0>[5]" (image 5 of a batch), "<bytes 1>".
        input_index: int [N] the position in `inputs` each row came from (0 for a single input).
        crops: int [N] crops averaged into each score (0 where scoring failed).
        crop_scores: with `crop_scores=True`, [N] float64 arrays [crops] (None where scoring failed); else None.
        errors: [(row, source, reason)] for every row that could not be scored.
        model, score_range, higher_better, precision: what scored them.
    """

    scores: np.ndarray
    normalized: np.ndarray
    sources: list
    input_index: np.ndarray
    crops: np.ndarray
    crop_scores: Optional[list]
    errors: list
    model: str
    score_range: tuple
    higher_better: bool
    precision: str = "fp32"

    @property
    def ok(self) -> np.ndarray:
        """bool [N]: the rows that were scored."""
        return np.isfinite(self.scores)

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self):
        return iter(self.scores.tolist())

    def __getitem__(self, i):
        return self.scores[i]

    def __array__(self, dtype=None, copy=None):
        return self.scores.astype(dtype) if dtype is not None else self.scores.copy()

    def __float__(self) -> float:
        if len(self.scores) != 1:
            raise TypeError(f"float() needs exactly one image, this result holds {len(self.scores)}; use .scores")
        if self.errors:
            raise ValueError(f"{self.sources[0]} could not be scored: {self.errors[0][2]}")
        return float(self.scores[0])

    def to_pandas(self):
        """A DataFrame: source, input_index, score, score_normalized, crops, error (and crop_scores when asked)."""
        import pandas as pd

        reasons = {row: reason for row, _, reason in self.errors}
        df = pd.DataFrame({"source": self.sources, "input_index": self.input_index, "score": self.scores,
                           "score_normalized": self.normalized, "crops": self.crops,
                           "error": [reasons.get(i) for i in range(len(self.scores))]})
        if self.crop_scores is not None:
            df["crop_scores"] = self.crop_scores
        return df

    def __repr__(self) -> str:
        n, bad = len(self.scores), len(self.errors)
        return f"Scores({n} item{'s' if n != 1 else ''}: {n - bad} scored, {bad} failed)"


_ARRAY_HINT = "channels last: [H, W], [H, W, 1|2|3|4] or a batch [N, H, W, C]"


def _pixels(x, source: str, value_range: Optional[float] = None) -> np.ndarray:
    """One image as an array (numpy, tf.Tensor, anything with __array__) -> uint8 [H, W, 3] under the decode policy.

    uint8 pixels are taken as they are; uint16 drop their low byte (`>> 8`, as 16-bit files); other integers must lie in
    0..255; floats are [0, 1] when their maximum is <= 1 (else [0, 255]; `value_range` forces 1 or 255) and are rounded
    to uint8, so an array scores as the same pixels saved to a PNG. Gray gives RGB, alpha is composited on white.
    """
    from data_pipeline.images import ImageDecodeError, from_pil

    if hasattr(x, "numpy") and callable(x.numpy):  # tf.Tensor, torch.Tensor (CPU)
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind not in "uif":
        raise ImageDecodeError(f"{source}: pixels of dtype {arr.dtype} (expected uint8, another integer type or float)")
    if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4) and arr.shape[0] in (1, 3, 4):
        raise ImageDecodeError(f"{source}: shape {arr.shape} looks channels-first; move the channels last "
                               f"(np.moveaxis(x, 0, -1)) -- expected {_ARRAY_HINT}")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4)):
        raise ImageDecodeError(f"{source}: shape {arr.shape} is not an image ({_ARRAY_HINT})")
    if arr.size == 0 or min(arr.shape[:2]) < 1:
        raise ImageDecodeError(f"{source}: empty image, shape {arr.shape}")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)  # the decode policy's 16-bit rule
    elif arr.dtype.kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ImageDecodeError(f"{source}: {arr.dtype} pixels in {lo}..{hi}; integer pixels must lie in 0..255 "
                                   "(uint16 images are reduced with >> 8)")
        arr = arr.astype(np.uint8)
    else:
        if not np.all(np.isfinite(arr)):
            raise ImageDecodeError(f"{source}: float pixels hold NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        scale = value_range if value_range is not None else (1.0 if hi <= 1.0 else 255.0)
        if scale not in (1.0, 255.0):
            raise ValueError(f"value_range must be 1 or 255 (the largest pixel value), got {value_range!r}")
        if lo < 0 or hi > scale:
            raise ImageDecodeError(f"{source}: float pixels in [{lo:g}, {hi:g}], outside [0, {scale:g}]; pass floats in "
                                   "[0, 1] or [0, 255] (value_range=1 or 255 chooses)")
        arr = np.round(arr.astype(np.float64) * (255.0 / scale)).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return np.ascontiguousarray(arr)
    from PIL import Image

    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return from_pil(Image.fromarray(np.ascontiguousarray(arr)), name=source)  # L, LA or RGBA: the policy's modes


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or (hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (str, bytes)))


def _expand(inputs, recursive: bool, value_range: Optional[float]) -> list:
    """`score`'s inputs -> `_Item`s (a problem found here becomes an item whose load raises its reason)."""
    def failing(source, index, reason):
        def load():
            raise ValueError(reason)

        return _Item(source, index, load)

    def one(x, index: int, top: bool) -> list:
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow is a dependency
            Image = None
        if x is None:
            return [failing(f"<input {index}>", index, f"<input {index}>: None is not an image")]
        if isinstance(x, (str, os.PathLike)):
            files, problem = _expand_path(Path(x).expanduser(), recursive)
            if problem:
                return [failing(os.fspath(x), index, f"{os.fspath(x)}: {problem}")]
            return [_file_item(f, index) for f in files]
        if isinstance(x, (bytes, bytearray, memoryview)):
            data, source = bytes(x), f"<bytes {index}>"
            return [_Item(source, index, lambda: _decode_bytes(data, source))]
        if Image is not None and isinstance(x, Image.Image):
            source = f"<PIL image {index}>"
            from data_pipeline.images import from_pil

            return [_Item(source, index, lambda: from_pil(x, name=source))]
        if isinstance(x, (list, tuple)) or (not _is_array(x) and hasattr(x, "__iter__") and not isinstance(x, dict)):
            if not top:
                return [failing(f"<input {index}>", index, f"<input {index}>: a nested {type(x).__name__}; pass an "
                                f"array for pixels, or one flat list of images")]
            out = []
            for i, element in enumerate(x):
                out.extend(one(element, i, top=False))
            return out
        if _is_array(x):
            source = f"<array {index}>"
            try:
                shape = tuple(int(d) for d in x.shape)
            except Exception as e:
                return [failing(source, index, f"{source}: unreadable shape ({e})")]
            if len(shape) == 4:  # a batch [N, H, W, C]
                if shape[0] == 0:
                    return [failing(source, index, f"{source}: an empty batch, shape {shape}")]
                batch = x.numpy() if hasattr(x, "numpy") and callable(x.numpy) else np.asarray(x)
                return [_Item(f"{source}[{j}]", index, (lambda j=j: _pixels(batch[j], f"{source}[{j}]", value_range)))
                        for j in range(shape[0])]
            return [_Item(source, index, lambda: _pixels(x, source, value_range))]
        return [failing(f"<input {index}>", index, f"<input {index}>: a {type(x).__name__} is not an image (pass a path, "
                        "folder, bytes, PIL image or array)")]

    return one(inputs, 0, top=True)


def _decode_bytes(data: bytes, source: str) -> np.ndarray:
    """`load_image` on encoded bytes, its errors naming `source` instead of "<bytes>"."""
    from data_pipeline.images import ImageDecodeError, load_image

    if not data:
        raise ImageDecodeError(f"{source}: empty input (0 bytes)")
    try:
        return load_image(data)
    except ImageDecodeError as e:
        raise ImageDecodeError(str(e).replace("<bytes>", source, 1)) from None


def _caller_stacklevel() -> int:
    """The `stacklevel` of the first frame outside this module (a warning then points at the user's line)."""
    import sys

    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        level, frame = level + 1, frame.f_back
    return level


def score(inputs, model, *, precision: str = "fp32", crop_scores: bool = False, recursive: bool = False,
          batch_size: int = 8, workers: int = 2, value_range: Optional[float] = None, progress: bool = False) -> Scores:
    """Scores images with one call, through the model's test-time contract: `keras_iqa.score("photo.jpg", model=...)`.

    Args:
        inputs: one input or a list of them (a list may mix kinds): an image file path (str / Path; every format Pillow
            reads), a folder (its image files, sorted; `recursive` for subfolders), encoded bytes (JPEG, PNG, ...), a
            `PIL.Image`, a numpy array / tf.Tensor [H, W] (gray), [H, W, 1|2|3|4] (RGB, alpha composited on white) or a
            batch [N, H, W, C]. uint8 pixels are used as they are; floats are [0, 1] when their maximum is <= 1, else
            [0, 255] (`value_range=1` or `255` decides), rounded to uint8 like a saved file.
        model: run directory, .keras, SavedModel, .tflite, preset handle, card name (untrained: warns), keras-iqa
            `keras.Model` or a `Scorer` (`load_scorer`: load once, call many times).
        precision: "fp32" (default; the scores of evaluation and every export), "bf16" (Keras models: mixed_bfloat16 with
            the backbone's batch norm folded; faster on CPUs with native bf16) or "auto".
        crop_scores: also return every crop's score (`Scores.crop_scores`).
        batch_size: images decoded and scored together (their crops share forward passes).
        workers: decoding threads (they decode the next batch while the current one is scored).
        progress: a progress bar on stderr.

    Returns:
        `Scores`: `.scores` float64 [N] (one per image, NaN where it failed), `.normalized`, `.sources`, `.crop_scores`,
        `.errors` [(row, source, reason)]; `float(result)` for a single image, `result.to_pandas()` for a table.
        Unreadable inputs never raise: they are reported in `.errors` and the others are scored. A model that cannot
        be loaded raises (FileNotFoundError / ValueError naming it).

    Example:
        >>> import numpy as np
        >>> import keras_iqa
        >>> image = np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)
        >>> model = keras_iqa.create_model("reqa-tiny")          # a trained run / preset in real use
        >>> result = keras_iqa.score([image, image / 255.0, b"not an image"], model=model, crop_scores=True)
        >>> row, source, reason = result.errors[0]
        >>> result.crops.tolist(), bool(result.scores[0] == result.scores[1]), row, source
        ([2, 2, 0], True, 2, '<bytes 2>')
        >>> bool(np.isclose(result.crop_scores[0].mean(), result.scores[0]))
        True
    """
    if value_range is not None and value_range not in (1, 255):
        raise ValueError(f"value_range must be 1 or 255 (the largest pixel value of float inputs), got {value_range!r}")
    scorer = _cached_scorer(model, precision)
    items = _expand(inputs, recursive, value_range)
    bar = _progress(len(items)) if progress and items else None
    rows = [r for results in _run(scorer, items, batch_size, workers, crop_scores, bar) for r in results]
    scores = np.array([r.score for r in rows], np.float64)
    norm = scorer.normalized(scores)
    norm[~np.isfinite(scores)] = np.nan
    return Scores(scores=scores, normalized=norm, sources=[r.item.source for r in rows],
                  input_index=np.array([r.item.input_index for r in rows], np.int64),
                  crops=np.array([r.crops for r in rows], np.int64),
                  crop_scores=[r.crop_scores for r in rows] if crop_scores else None,
                  errors=[(i, r.item.source, r.error) for i, r in enumerate(rows) if r.error is not None],
                  model=scorer.source, score_range=tuple(scorer.score_range), higher_better=bool(scorer.higher_better),
                  precision=scorer.precision)


_SCORERS: "collections.OrderedDict" = collections.OrderedDict()
_CACHE_SIZE = 2


def _cached_scorer(model, precision: str) -> Scorer:
    """`load_scorer`, remembering the last two models named by a path or preset handle (keyed with the file's
    modification time), so repeated `keras_iqa.score(..., model="runs/x")` calls load and trace once."""
    if not isinstance(model, (str, os.PathLike)):
        return load_scorer(model, precision)
    text = os.fspath(model)
    p = Path(text).expanduser()
    stamp = None
    if p.exists():
        target = layout.model_file(p) or p
        stamp = target.stat().st_mtime_ns
    else:
        from keras_iqa import registry

        if text in registry.list_models() and not _is_preset_handle(text):
            return load_scorer(model, precision)  # a card: a fresh model every time, never cached
    key = (str(p.resolve()) if p.exists() else text, precision, stamp)
    if key in _SCORERS:
        _SCORERS.move_to_end(key)
        return _SCORERS[key]
    scorer = load_scorer(model, precision)
    _SCORERS[key] = scorer
    while len(_SCORERS) > _CACHE_SIZE:
        _SCORERS.popitem(last=False)
    return scorer


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
    """Writes scores as CSV (`.csv`) or JSON lines (`.jsonl` / `.json`), atomically (`crop_scores`, when present: a
    JSON list in JSON lines, space-separated values in CSV)."""
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
            write_csv(rows, f, delimiter="\t" if out.suffix.lower() == ".tsv" else ",")
    else:
        raise ValueError(f"--out {out}: use a .csv or .jsonl file name")
    os.replace(tmp, out)
    return out


def write_csv(rows: list, f, delimiter: str = ",") -> None:
    """The CSV table of `score_paths` rows on an open text file (header, then one row per image)."""
    import csv

    names = ["path", "score", "score_normalized", "crops"] + (["crop_scores"] if rows and "crop_scores" in rows[0] else [])
    w = csv.DictWriter(f, fieldnames=names, delimiter=delimiter)
    w.writeheader()
    for r in rows:
        if "crop_scores" in r:
            r = {**r, "crop_scores": " ".join(f"{v:.6g}" for v in r["crop_scores"])}
        w.writerow(r)
