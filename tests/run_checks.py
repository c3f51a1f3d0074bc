"""Checks of finished training runs, recomputed independently of keras_iqa.

`check_test_metrics(run_dir, data)`: results.json's test SROCC / PLCC equal scipy.stats' over the run's predictions.csv
(1e-6), and predictions.csv has one row per image of the test subset in the dataset's splits.csv (read with `csv`).
`stopped_after(run, copy, epoch)` and `assert_same_finish(a, b)`: the reference of the SIGKILL resume tests (a finished run
as it was after an epoch's commit; two finished runs equal in every array of model.keras, read with h5py).
"""

import csv
import io
import json
import math
import re
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import stats

TOL = 1e-6


def split_test_ids(data, split: str) -> list:
    """The image ids of `split`'s test subset, straight from `<data>/splits.csv`."""
    with open(Path(data) / "splits.csv", newline="", encoding="utf-8") as f:
        return [row["image_id"] for row in csv.DictReader(f) if row[split] == "test"]


def check_metrics(metrics: dict, pred, target) -> None:
    """`metrics` (a results.json "test" entry) against scipy.stats over (pred, target)."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    assert metrics["n"] == len(pred) == len(target)
    if np.ptp(pred) == 0:  # a collapsed model: the correlations are undefined and the reason is given
        assert math.isnan(metrics["srocc"]) and math.isnan(metrics["plcc"]) and "constant" in metrics["error"]
        return
    srocc, plcc = stats.spearmanr(pred, target).statistic, stats.pearsonr(pred, target).statistic
    assert abs(metrics["srocc"] - srocc) <= TOL, (metrics["srocc"], srocc)
    assert abs(metrics["plcc"] - plcc) <= TOL, (metrics["plcc"], plcc)


def check_test_metrics(run_dir, data, split: str = None) -> pd.DataFrame:
    """results.json's "test" metrics of `run_dir` recomputed from its predictions.csv; one row per test image of `split`
    (default: the run's) in `data`'s splits.csv. Returns the predictions."""
    run_dir = Path(run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    df = pd.read_csv(run_dir / "predictions.csv", dtype={"image_id": str})
    ids = split_test_ids(data, split or res.get("split", "split_00"))
    assert len(df) == len(ids) > 0, (len(df), len(ids))
    if "image_id" in df:
        assert sorted(df["image_id"]) == sorted(ids)
    check_metrics(res["test"], df["pred"], df["target"])
    return df


def check_model_test_metrics(run_dir, data, split: str = "split_00", target: str = "normalized") -> pd.DataFrame:
    """For runs without predictions.csv (MetaIQA): the saved model.keras predicts the test subset of `split` (its test-time
    contract, `predict_reader`), one row per test image in splits.csv, and results.json's test SROCC / PLCC are
    scipy's over those predictions. Returns the predictions."""
    import keras

    from data_pipeline.input import RecordReader
    from keras_iqa.evaluation import predict_reader

    res = json.loads((Path(run_dir) / "results.json").read_text())
    model = keras.models.load_model(Path(run_dir) / "model.keras")
    df = predict_reader(model, RecordReader(str(data), split=split, subset="test", target=target))
    assert sorted(df["image_id"]) == sorted(split_test_ids(data, split))
    check_metrics(res["test"], df["pred"], df["target"])
    return df


def arrays(path) -> dict:
    """{name: array} of a .weights.h5 file, the weights of a .keras archive, or an .npz file."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    source = io.BytesIO(zipfile.ZipFile(path).read("model.weights.h5")) if path.suffix == ".keras" else path
    out = {}
    with h5py.File(source, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_arrays(a, b, what):
    a, b = (x if isinstance(x, dict) else arrays(x) for x in (a, b))
    assert a and a.keys() == b.keys(), (what, sorted(a)[:5], sorted(b)[:5])
    differ = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not differ, f"{what}: {len(differ)} of {len(a)} arrays differ, e.g. {differ[:3]}"


def stopped_after(run, copy, epoch, state_dir="backup"):
    """`copy` = the finished run directory `run` as it was right after `epoch`'s commit: later backup versions (files and
    indexes of `state_dir`), epoch checkpoints and the final model, results and predictions removed."""
    shutil.copytree(run, copy)
    for p in (copy / state_dir).iterdir():
        m = re.search(r"-(\d{4})\.", p.name)
        if m and int(m.group(1)) > epoch:
            p.unlink()
    for p in copy.rglob("epoch_*.weights.h5"):
        if int(re.search(r"epoch_(\d+)", p.name).group(1)) > epoch:
            p.unlink()
    for name in ("model.keras", "results.json", "predictions.csv"):
        for p in copy.rglob(name):
            p.unlink()
    return copy


def assert_same_finish(out, ref):
    """Two finished runs are the same: every array of model.keras (weights and optimizer state) and the test results."""
    assert_same_arrays(out / "model.keras", ref / "model.keras", "final model.keras")
    a, b = (json.loads((d / "results.json").read_text()) for d in (out, ref))
    assert json.dumps(a.get("test"), sort_keys=True) == json.dumps(b.get("test"), sort_keys=True)
    if (ref / "predictions.csv").exists():
        assert (out / "predictions.csv").read_text() == (ref / "predictions.csv").read_text()
