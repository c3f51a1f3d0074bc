"""Opening any MODEL as a `Scorer`: run directory, `.keras`, SavedModel, `.tflite`, preset handle, card name, model.

What is checked before a model is loaded (docs/security.md, Models: data and programs): a `.keras` file is a zip whose
config names a keras-iqa model class, loaded with `safe_mode=True` (no Lambda code); a SavedModel's graph holds only the
ops a keras-iqa scorer uses (`savedmodel_check`) and a `.tflite` no custom or Flex operator, unless `trust=True`.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from data_pipeline import layout
from keras_iqa import registry
from keras_iqa.classical.baseline import Baseline, is_baseline, load_baseline
from keras_iqa.scoring.savedmodel_check import check_savedmodel, check_tflite
from keras_iqa.scoring.scorer import PRECISIONS, Scorer, _contract_fields, resolve_precision

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _from_keras_model(model, kind: str, source: str, precision: str = "fp32") -> Scorer:
    from keras_iqa.evaluation.predict import make_score_fn, policy_twin

    precision = resolve_precision(precision)
    scored = policy_twin(model, "mixed_bfloat16" if precision == "bf16" else "float32")  # fp32: as saved and exported
    c = int(model.crop_size)
    fn = make_score_fn(scored, c, fold_bn=True)  # bf16: the backbone's BN folded into its convolutions (one trace)
    return Scorer(lambda crops: np.asarray(fn(crops)), kind, source, tuple(model.score_range), bool(model.higher_better),
                  c, int(model.test_crops), model.crop_policy, max_crops_per_call=64, extra={"model": model, "scored": scored},
                  test_resize=getattr(model, "test_resize", None), precision=precision)


def load_keras_model(path: os.PathLike, compile: bool = False):
    """Loads a keras-iqa `.keras` file (`safe_mode=True`); anything else fails in one line naming the file and what it
    is: not a zip ("not a .keras archive"), or a model of another class ("not a keras-iqa model (it is a ...)")."""
    import keras

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    if not zipfile.is_zipfile(p):
        raise ValueError(f"{p}: not a .keras archive (a .keras file is the zip that model.save writes)")
    try:
        with zipfile.ZipFile(p) as z:
            config = json.loads(z.read("config.json"))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{p}: not a .keras archive (no readable config.json: {e})") from e
    registry.list_models()  # imports the family modules: registers their serializable classes
    what = registry.not_a_model(config)
    if what:
        raise ValueError(f"{p}: not a keras-iqa model (it is a {what})")
    model = keras.saving.load_model(str(p), compile=compile, safe_mode=True)
    if not _is_keras_model(model):
        raise ValueError(f"{p}: not a keras-iqa model (it is a {type(model).__module__}.{type(model).__name__})")
    return model


def load_model(path: os.PathLike, compile: bool = True):
    """`keras_iqa.load_model`: a keras-iqa model from a `.keras` file, a run directory (its model.keras) or a preset
    (folder or handle), the twin of `model.save(path)` / `save_to_preset`. `.keras` files load with `safe_mode=True`;
    a config's `backbone_weights` is ignored (the weights come from the file); anything that is no keras-iqa model fails
    in one line. `compile` restores a `.keras` file's optimizers (as `keras.saving.load_model` does). Example:
    `model = keras_iqa.load_model("runs/reqa-koniq")`, then `model.score("photo.jpg")`.
    """
    p = Path(os.fspath(path)).expanduser()
    if p.is_dir() and layout.model_file(p) is not None:
        return load_keras_model(layout.model_file(p), compile=compile)
    if p.suffix == ".keras" or p.is_file():
        return load_keras_model(p, compile=compile)
    if _is_preset_handle(str(path)):
        from keras_iqa.presets import from_preset

        return from_preset(str(path))
    raise FileNotFoundError(f"{path}: neither a .keras file, a run directory (model.keras) nor a preset folder / handle")


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


def load_scorer(model, precision: str = "fp32", trust: bool = False) -> Scorer:
    """Opens any MODEL (see the module docstring) as a `Scorer`. Errors name the model and what was expected there.

    Args:
        model: path, preset handle, card name, keras-iqa `keras.Model` or `Scorer` (returned as it is).
        precision: "fp32" (default: the scores of evaluation and the exports), "bf16" (Keras models only: a
            `mixed_bfloat16` copy with the backbone's batch norm folded; faster on CPUs with native bf16) or "auto"
            (bf16 where the CPU has native bf16, else fp32; exported models keep their own precision).
        trust: load a SavedModel or .tflite even when it holds ops a keras-iqa scorer does not use (file or system
            operations, custom ops): only for a model you made or verified; they are refused otherwise.
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
    if is_baseline(text):  # a classical baseline: "niqe" or a fitted folder (brisque.json); docs/baselines.md
        return baseline_scorer(load_baseline(text))
    p = Path(text).expanduser()
    if p.exists():
        if p.is_dir() and layout.model_file(p) is None and not (p / "saved_model.pb").is_file() \
                and _is_preset_handle(str(p)):
            return _from_preset(str(p), precision)
        return _load_path(p, precision, trust)
    if _is_preset_handle(text):
        return _from_preset(text, precision)

    if text in registry.list_models():
        card = registry.get_card(text)
        warnings.warn(f"model {text!r} is a model card: a freshly built model ({card.trained_on}) whose scores mean "
                      "nothing until it is trained; pass a run directory, .keras, SavedModel, .tflite or a preset with "
                      "trained weights", UserWarning, stacklevel=_caller_stacklevel())
        return _from_keras_model(registry.create_model(text), "card", text, precision)

    close = difflib.get_close_matches(text, registry.list_models(), n=3, cutoff=0.6)
    hint = f" (did you mean the card {', '.join(repr(c) for c in close)}?)" if close else ""
    raise FileNotFoundError(f"MODEL {text} does not exist (expected a run directory, .keras file, SavedModel directory, "
                            f".tflite, a preset handle or a model card name){hint}")


def baseline_scorer(b: Baseline) -> Scorer:
    """A classical baseline as a whole-photo `Scorer` (its features read the whole decoded image; no crops)."""
    return Scorer(lambda crops: b.score_images(list(crops)), "baseline", b.source, tuple(b.score_range), b.higher_better,
                  224, 1, "resize", extra={"baseline": b}, image_scores=b.score_images)


def _from_preset(handle: str, precision: str) -> Scorer:
    from keras_iqa.presets import from_preset

    return _from_keras_model(from_preset(handle), "preset", handle, precision)


def _exported_precision(p: Path, precision: str) -> None:
    if precision == "bf16":
        raise ValueError(f"{p}: precision bf16 applies to Keras models (run directory, .keras, preset, card); an exported "
                         "SavedModel or .tflite runs in the precision it was exported with")


def _load_path(p: Path, precision: str, trust: bool = False) -> Scorer:
    if p.is_file() and p.suffix == ".keras":
        return _from_keras_model(load_keras_model(p), "keras", str(p), precision)
    if p.is_file() and p.suffix == ".tflite":
        _exported_precision(p, precision)
        if not trust:
            check_tflite(p)
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
            return _load_savedmodel(p, trust)
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


def _load_savedmodel(p: Path, trust: bool = False) -> Scorer:
    import tensorflow as tf

    from keras_iqa.export.savedmodel import CONTRACT_FILE

    meta_path = p / CONTRACT_FILE
    if not meta_path.is_file():
        raise ValueError(f"{p}: {CONTRACT_FILE} is missing (not written by keras-iqa export); cannot know the crop contract")
    meta = json.loads(meta_path.read_text())
    if not trust:
        check_savedmodel(p)  # before anything of it runs: resource initializers run at load
    loaded = tf.saved_model.load(str(p))
    if "predict_crops" not in loaded.signatures:
        raise ValueError(f"{p}: no predict_crops signature (has {sorted(loaded.signatures)})")
    sig = loaded.signatures["predict_crops"]

    def run(crops):
        return np.asarray(sig(crops=tf.constant(crops, tf.float32))["score"])

    return Scorer(run, "savedmodel", str(p), **_contract_fields(meta), extra={"contract": meta, "loaded": loaded})


def _caller_stacklevel() -> int:
    """The `stacklevel` of the first frame outside this package (a warning then points at the user's line)."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        level, frame = level + 1, frame.f_back
    return level
