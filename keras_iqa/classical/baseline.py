"""`Baseline`: a classical method as a whole-image scorer (decoded images -> scores), opened by `load_baseline` from a
fitted folder (`brisque.json`) or a name ("niqe"); `predict_records` scores a prepared dataset's images with it.

Light to import (the feature code, SciPy and TensorFlow load when a baseline first scores): `keras_iqa.scoring` and
`keras_iqa.evaluation.sources` recognise baselines through it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

#: Baselines usable by name, without fitting.
NAMES = ("niqe",)
BRISQUE_FILE = "brisque.json"
#: NIQE's declared scale for mapping and direction (lower = better; scores beyond 100 are kept, unclipped, in evaluation).
NIQE_RANGE = (0.0, 100.0)


@dataclass
class Baseline:
    """A classical method: `score_images(list of HxWx3 uint8) -> [N] float64` on `score_range` (`higher_better`);
    `trained_on`: the dataset and split a fitted one learned from (its `split` is what `evaluate` tests it on)."""

    name: str
    method: str
    score_images: Callable[[list], np.ndarray]
    score_range: tuple
    higher_better: bool
    source: str
    trained_on: dict = field(default_factory=dict)


def is_baseline(model) -> bool:
    """True for a baseline name (`NAMES`) or a folder / file that holds a fitted BRISQUE model."""
    if not isinstance(model, (str, os.PathLike)):
        return False
    text = os.fspath(model)
    if text.lower() in NAMES and not os.path.exists(text):
        return True
    p = Path(text).expanduser()
    return (p.is_dir() and (p / BRISQUE_FILE).is_file()) or (p.is_file() and p.name == BRISQUE_FILE)


def load_baseline(model) -> Baseline:
    """A `Baseline` from "niqe" or a folder holding `brisque.json` (or that file); a malformed file fails in one line."""
    text = os.fspath(model)
    if text.lower() == "niqe" and not os.path.exists(text):
        return _niqe()
    p = Path(text).expanduser()
    path = p / BRISQUE_FILE if p.is_dir() else p
    if not path.is_file():
        raise FileNotFoundError(f"{p}: no {BRISQUE_FILE} (fit one with keras-iqa baseline fit brisque --data DIR --out DIR)")
    return _brisque(path)


def _brisque(path: Path) -> Baseline:
    from keras_iqa.classical.brisque import read_model
    from keras_iqa.classical.features import brisque_features

    m = read_model(path)

    def run(images):
        # one image at a time: the same arithmetic whatever the batch, so every path gives the same score bit for bit
        return np.array([m.predict(brisque_features(img))[0] for img in images], np.float64)

    name = path.parent.name if path.name == BRISQUE_FILE else path.stem
    return Baseline(name, "brisque", run, tuple(m.score_range), m.higher_better, str(path), dict(m.trained_on))


def _niqe() -> Baseline:
    from keras_iqa.classical.niqe import niqe_score, pristine_model

    def run(images):
        model = pristine_model()
        return np.array([niqe_score(img, model) for img in images], np.float64)

    return Baseline("niqe", "niqe", run, NIQE_RANGE, False, "niqe")


def predict_records(baseline: Baseline, data_dir, split: Optional[str] = "split_00", subset: Optional[str] = None,
                    progress: bool = False, desc: str = "predict"):
    """DataFrame(image_id, target (MOS), pred) of `baseline` on the images of (split, subset) of a prepared dataset (all
    images with subset None). Each record's bytes are decoded by the one decode policy (`data_pipeline.images.load_image`),
    as `keras-iqa score` decodes the file, so both give the same score; an undecodable record is skipped."""
    import pandas as pd
    import tensorflow as tf

    from data_pipeline.dataloaders.decoder import Decoder
    from data_pipeline.images import ImageDecodeError, load_image
    from data_pipeline.input import RecordReader
    from keras_iqa.progress import progress as make_bar

    reader = RecordReader(str(data_dir), split=split or "split_00", subset=subset, target="mos")
    dec = Decoder(reader.kind, fields=("id", "mos", "encoded"))
    ids, targets, preds = [], [], []
    bar = make_bar(reader.count, desc, progress, unit="image", leave=False)
    try:
        for serialized, _ in reader.records(reader.ids, False, False, 0):
            try:
                d = dec.decode(serialized)
                img = load_image(bytes(d["encoded"].numpy()))
            except (ImageDecodeError, tf.errors.OpError):
                continue
            ids.append(d["id"].numpy().decode("utf-8"))
            targets.append(float(d["mos"]))
            preds.append(float(baseline.score_images([img])[0]))
            bar.update(1)
    finally:
        bar.close()
    return pd.DataFrame({"image_id": pd.Series(ids, dtype=str), "target": np.array(targets, np.float64),
                         "pred": np.array(preds, np.float64)})


def fit_brisque(data_dir, out, split: str = "split_00", C: Optional[float] = None, gamma: Optional[float] = None,
                epsilon: float = 0.01, progress: bool = False) -> Path:
    """Fits BRISQUE's SVR on the training images of `split` of a prepared dataset; writes `out/brisque.json` (the
    dataset's MOS scale and direction) and returns its path."""
    from keras_iqa.classical.brisque import fit_svr
    from keras_iqa.classical.features import brisque_features
    from keras_iqa.evaluation.datasets import load_dataset_info

    info = load_dataset_info(data_dir)
    x = []

    def collect(images):  # the features of each training image, gathered through predict_records' decode path
        x.extend(brisque_features(img) for img in images)
        return np.zeros(len(images))

    df = predict_records(Baseline("features", "brisque", collect, (0, 1), True, ""), data_dir, split, "train", progress,
                         desc="brisque features")
    model = fit_svr(np.asarray(x), df.target.to_numpy(np.float64), info["score_range"],
                    bool(info.get("higher_better", True)), C=C, gamma=gamma, epsilon=epsilon,
                    trained_on={"data": str(data_dir), "dataset": info.get("dataset"), "split": split, "subset": "train",
                                "images": len(x)})
    return model.save(out)
