"""Classical baselines (keras_iqa/classical, docs/baselines.md): the BRISQUE / NIQE statistics against known
distributions, NIQE's ranking, and a fitted BRISQUE scored through every path of the CLI."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage
from scipy.stats import gennorm

from data_pipeline import pristine
from data_pipeline.dataloaders.decoder import Decoder
from data_pipeline.fixtures import write_tiny_records
from keras_iqa.classical import features as F
from keras_iqa.classical.niqe import niqe_score, pristine_model
from keras_iqa.cli import main
from keras_iqa.scoring import load_scorer


def test_constant_image_gives_zero_mscn_and_finite_features():
    flat = np.full((64, 80, 3), 117.0)
    assert np.all(F.mscn(F.gray(flat), mode="nearest") == 0)  # NIQE's replicated border
    assert np.all(F.mscn(F.gray(flat))[3:-3, 3:-3] == 0)  # BRISQUE's zero-padded border: zero inside the window's reach
    f = F.brisque_features(flat)
    assert f.shape == (36,) and np.all(np.isfinite(f))
    degenerate = F.scale_features(np.zeros((16, 16)))  # no spread: variances 0, the Gaussian shape, no NaN
    assert degenerate[0] == F.DEGENERATE_SHAPE and np.all(degenerate[1::2][:1] == 0) and np.all(np.isfinite(degenerate))


def test_mscn_is_invariant_to_contrast_scaling_and_brightness():
    y = F.gray(pristine.load_embedded("chelsea")[:120, :160])
    base = F.mscn(y)
    # (kI - k mu) / (k sigma + k c): contrast scaling with the stabilising constant scaled alike changes nothing
    np.testing.assert_allclose(F.mscn(3.7 * y, c=3.7), base, rtol=1e-9, atol=1e-9)
    # an added constant changes nothing away from the zero-padded border (the window's 3 pixels)
    np.testing.assert_allclose(F.mscn(y + 40.0)[3:-3, 3:-3], base[3:-3, 3:-3], rtol=1e-9, atol=1e-9)
    assert F.brisque_features(np.stack([y] * 3, -1)).shape == (36,)


@pytest.mark.parametrize("shape", [0.6, 1.0, 2.0, 3.0])
def test_ggd_fit_recovers_the_shape_of_a_known_generalized_gaussian(shape):
    x = gennorm.rvs(shape, scale=1.3, size=200_000, random_state=1)
    a, var = F.fit_ggd(x)
    assert abs(a - shape) < 0.05 * shape
    assert var == pytest.approx(gennorm.var(shape, scale=1.3), rel=0.03)


def test_aggd_fit_recovers_shape_sides_and_mean_of_a_known_asymmetric_gaussian():
    rng = np.random.default_rng(2)
    shape, bl, br, n = 1.5, 0.5, 1.2, 300_000
    g = np.abs(gennorm.rvs(shape, size=n, random_state=3))  # one-sided GGD, scale 1
    left = rng.random(n) < bl / (bl + br)  # an AGGD puts mass bl / (bl + br) on the left
    x = np.where(left, -bl * g, br * g)
    a, mean, lvar, rvar = F.fit_aggd(x)
    assert abs(a - shape) < 0.05 * shape
    assert lvar == pytest.approx(np.mean(x[x < 0] ** 2), rel=1e-9) and rvar == pytest.approx(np.mean(x[x > 0] ** 2), rel=1e-9)
    assert mean == pytest.approx(x.mean(), rel=0.05)


def test_niqe_ranks_a_blurred_and_a_noisy_photo_worse_than_the_pristine_one():
    img = pristine.load_embedded("chelsea").astype(np.float64)
    model = pristine_model()
    clean = niqe_score(img, model)
    blurred = niqe_score(ndimage.gaussian_filter(img, (2.5, 2.5, 0)), model)
    noisy = niqe_score(np.clip(img + np.random.default_rng(0).normal(0, 25, img.shape), 0, 255), model)
    assert clean < blurred and clean < noisy
    scorer = load_scorer("niqe")
    assert scorer.higher_better is False and scorer.kind == "baseline"


def _write_images(data_dir, out):
    out.mkdir()
    dec = Decoder("authentic", fields=("id", "encoded"))
    for f in sorted(data_dir.glob("*.tfrecord")):
        for r in tf.data.TFRecordDataset(str(f)):
            d = dec.decode(r)
            (out / d["id"].numpy().decode()).write_bytes(d["encoded"].numpy())


def test_brisque_fit_then_evaluate_and_score_give_the_same_score(tmp_path, capsys):
    data = tmp_path / "rec"
    write_tiny_records(str(data), kind="authentic", n=24, size=(64, 80))
    assert main(["baseline", "fit", "brisque", "--data", str(data), "--out", str(tmp_path / "bq"), "-q"]) == 0
    saved = json.loads((tmp_path / "bq" / "brisque.json").read_text())
    assert len(saved["support_vectors"][0]) == 36 and saved["score_range"] == [0.0, 100.0]
    rep = tmp_path / "rep"
    assert main(["evaluate", str(tmp_path / "bq"), "--data", str(data), "--split", "split_00", "--protocol", "splits",
                 "--out", str(rep), "--no-plots", "-q"]) == 0
    with open(rep / "predictions.csv") as fh:
        evaluated = {r["image_id"]: float(r["pred"]) for r in csv.DictReader(fh)}
    _write_images(data, tmp_path / "imgs")
    assert main(["score", str(tmp_path / "bq"), str(tmp_path / "imgs"), "--scores", str(tmp_path / "s.csv"), "-q"]) == 0
    with open(tmp_path / "s.csv") as fh:
        scored = {r["path"].rsplit("/", 1)[-1]: float(r["score"]) for r in csv.DictReader(fh)}
    assert evaluated and all(scored[k] == v for k, v in evaluated.items())  # the same image, the same score


@pytest.mark.parametrize("content, key", [("{not json", "not a readable JSON"),
                                          ('{"format": "keras-iqa-brisque", "support_vectors": [[1, 2]]}', "missing"),
                                          (None, "'support_vectors'")])
def test_a_malformed_brisque_json_fails_in_one_line(tmp_path, capsys, content, key):
    folder = tmp_path / "bq"
    folder.mkdir()
    if content is None:  # every key present, support vectors of the wrong width
        from keras_iqa.classical.brisque import BrisqueModel

        BrisqueModel([0.0] * 36, [1.0] * 36, [[0.0] * 35], [1.0], 0.0, 0.1, 1.0, 0.01, [0.0, 100.0], True).save(folder)
    else:
        (folder / "brisque.json").write_text(content)
    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    assert main(["score", str(folder), str(img)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "brisque.json" in err[0] and key in err[0] and "keras-iqa baseline fit brisque" in err[0]


def test_niqe_evaluates_by_name_with_its_lower_is_better_direction(tmp_path):
    from scipy.stats import spearmanr

    data, rep = tmp_path / "rec", tmp_path / "rep"
    write_tiny_records(str(data), kind="authentic", n=10, size=(96, 128))
    assert main(["evaluate", "niqe", "--data", str(data), "--protocol", "cross", "--out", str(rep), "--no-plots", "-q"]) == 0
    with open(rep / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    pred, mos = [float(r["pred"]) for r in rows], [float(r["target"]) for r in rows]
    srocc = json.loads((rep / "results.json").read_text())["rows"][0]["srocc"]
    assert len(rows) == 10 and srocc != 0
    assert srocc == pytest.approx(-spearmanr(pred, mos)[0])  # lower NIQE = better: the sign flips
