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

The package's modules: `scorer` (`Scorer`, precision), `loading` (`load_scorer`: every kind of MODEL), `inputs` (files,
bytes, PIL images, arrays -> items), `engine` (the batched loop, `score_paths`, `score_images`) and `results` (`Scores`,
CSV / JSON lines); `score` and its cache of loaded models are here. Every name is importable from `keras_iqa.scoring`.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Optional

import numpy as np

from data_pipeline import layout
from keras_iqa import registry
from keras_iqa.scoring.engine import _image_scores, _load, _progress, _Result, _run, score_images, score_paths  # noqa: F401
from keras_iqa.scoring.inputs import (_ARRAY_HINT, _decode_bytes, _expand, _expand_path, _file_item,  # noqa: F401
                                      _is_array, _Item, _pixels, iter_image_files)
from keras_iqa.scoring.loading import (_caller_stacklevel, _exported_precision, _from_keras_model,  # noqa: F401
                                       _from_preset, _is_keras_model, _is_preset_handle, _latest_version,
                                       _load_path, _load_savedmodel, _photo_scores, load_keras_model, load_model,
                                       load_scorer)
from keras_iqa.scoring.results import Scores, write_csv, write_rows
from keras_iqa.scoring.scorer import PRECISIONS, Scorer, _contract_fields, resolve_precision  # noqa: F401

__all__ = ["PRECISIONS", "Scorer", "Scores", "iter_image_files", "load_keras_model", "load_model", "load_scorer",
           "resolve_precision", "score", "score_images", "score_paths", "write_csv", "write_rows"]


def score(inputs, model, *, precision: str = "fp32", crop_scores: bool = False, recursive: bool = False,
          batch_size: int = 8, workers: int = 2, value_range: Optional[float] = None, progress: bool = False,
          trust: bool = False, decode_policy=None) -> Scores:
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
        decode_policy: a `data_pipeline.images.DecodePolicy` whose size limits (`max_pixels`, `max_file_bytes`,
            `max_aspect_ratio`) replace the defaults and environment variables (docs/security.md, Images).
        trust: load a SavedModel or .tflite even when it holds ops a keras-iqa scorer does not use (file or system
            operations, custom ops; refused otherwise): only for a model you made or verified (docs/security.md).

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
    scorer = _cached_scorer(model, precision, trust)
    items = _expand(inputs, recursive, value_range, decode_policy)
    bar = _progress(len(items)) if progress and items else None
    rows = [r for results in _run(scorer, items, batch_size, workers, crop_scores, bar, decode_policy) for r in results]
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


def _cached_scorer(model, precision: str, trust: bool = False) -> Scorer:
    """`load_scorer`, remembering the last two models named by a path or preset handle (keyed with the file's
    modification time), so repeated `keras_iqa.score(..., model="runs/x")` calls load and trace once."""
    if not isinstance(model, (str, os.PathLike)):
        return load_scorer(model, precision, trust)
    text = os.fspath(model)
    p = Path(text).expanduser()
    stamp = None
    if p.exists():
        target = layout.model_file(p) or p
        stamp = target.stat().st_mtime_ns
    else:
        if text in registry.list_models() and not _is_preset_handle(text):
            return load_scorer(model, precision, trust)  # a card: a fresh model every time, never cached
    key = (str(p.resolve()) if p.exists() else text, precision, stamp, trust)
    if key in _SCORERS:
        _SCORERS.move_to_end(key)
        return _SCORERS[key]
    scorer = load_scorer(model, precision, trust)
    _SCORERS[key] = scorer
    while len(_SCORERS) > _CACHE_SIZE:
        _SCORERS.popitem(last=False)
    return scorer
