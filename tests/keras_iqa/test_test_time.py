"""The test-time contract (`data_pipeline.test_time`): its geometry, and one image -> one score on every path.

Paths compared, per model family (tiny cards) and number of crops n in {1, 2, 3, 4, 5, 7, 10, 25}:
records (`predict_reader`, what training validation and `keras-iqa evaluate` run), files through a `.keras` (`keras-iqa
score`'s `score_paths`), decoded arrays (`scoring.score_images`), the SavedModel's `serving_default` (encoded bytes) and
the whole-photo TFLite fp32 model. Tolerance: 1e-4 of the score range (float32 arithmetic in different orders; the
whole-photo model's resizes run as matrix products).
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import fixtures
from data_pipeline.test_time import TestTimeCrops, grid_layout, resize_matrix

CROP_COUNTS = (1, 2, 3, 4, 5, 7, 10, 25)
FAMILIES = ("reqa-tiny", "metaiqa-tiny", "hcl-tiny")
TOL = 1e-4  # of the score range


# ------------------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("n", CROP_COUNTS)
@pytest.mark.parametrize("policy", ("grid", "random"))
def test_positions_and_offsets_stay_inside_any_image(n, policy):
    t = TestTimeCrops(crop_size=16, num_crops=n, policy=policy, seed=3)
    p = t.positions()
    assert p.shape == (n, 2) and (p >= 0).all() and (p <= 1).all()
    for h, w in ((16, 16), (17, 300), (300, 17), (40, 50), (1000, 20)):
        img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        crops = t.crops(img).numpy()
        hh, ww = t.prepared_size(h, w)
        offs = t.offsets(hh, ww)
        assert crops.shape == (n, 16, 16, 3)
        assert (offs >= 0).all() and (offs[:, 0] <= hh - 16).all() and (offs[:, 1] <= ww - 16).all()
        if (hh, ww) == (h, w):  # no resize: exact pixel windows
            for k, (y, x) in enumerate(offs):
                np.testing.assert_array_equal(crops[k], img[y:y + 16, x:x + 16])


def test_grid_spreads_from_corner_to_corner_and_random_is_seeded():
    img = (np.arange(40 * 50 * 3).reshape(40, 50, 3) % 251).astype(np.uint8)
    grid = TestTimeCrops(crop_size=16, num_crops=4, policy="grid").crops(img).numpy()
    np.testing.assert_array_equal(grid[0], img[:16, :16])
    np.testing.assert_array_equal(grid[-1], img[-16:, -16:])
    assert grid_layout(10)[:2] == (3, 4)
    one = TestTimeCrops(crop_size=16, num_crops=1, policy="grid").offsets(40, 50)
    np.testing.assert_array_equal(one, [[12, 17]])  # a single crop is the centre one
    a = TestTimeCrops(crop_size=16, num_crops=5, policy="random", seed=1)
    b = TestTimeCrops(crop_size=16, num_crops=5, policy="random", seed=2)
    np.testing.assert_array_equal(a.positions(), TestTimeCrops(crop_size=16, num_crops=5, seed=1).positions())
    assert not np.array_equal(a.positions(), b.positions())
    # the same fractions on every image: crops of a bigger image sit at the same relative places
    np.testing.assert_array_equal(a.offsets(40, 50), np.round(a.positions() * [24, 34]).astype(int))


def test_resize_small_images_and_whole_image_policy():
    img = np.random.default_rng(1).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    t = TestTimeCrops(crop_size=32, num_crops=3, policy="grid")
    assert t.prepared_size(30, 45) == (32, 48)  # short side upsampled to the crop, the other rounded up
    assert t.crops(img).shape == (3, 32, 32, 3)
    r = TestTimeCrops(crop_size=16, num_crops=2, policy="grid", resize=(20, 60))
    assert r.prepared_size(30, 45) == (20, 60)
    assert TestTimeCrops(crop_size=16, num_crops=2, resize=24).prepared_size(30, 45) == (24, 36)
    whole = TestTimeCrops(crop_size=16, num_crops=9, policy="resize")
    assert whole.num_crops == 1 and whole.resize is None and whole.crops(img).shape == (1, 16, 16, 3)
    # resize_matrix is tf.image.resize along one axis
    x = np.random.default_rng(2).uniform(0, 255, (30, 1, 1)).astype(np.float32)
    m = resize_matrix(30, 47, "bicubic", True)
    ref = tf.image.resize(x, [47, 1], method="bicubic", antialias=True).numpy()[:, 0, 0]
    np.testing.assert_allclose(m @ x[:, 0, 0], ref, atol=1e-3)


def test_contract_round_trip_and_bad_values():
    t = TestTimeCrops(crop_size=32, num_crops=7, policy="random", resize=[64, 96], seed=5)
    d = json.loads(json.dumps(t.to_dict()))
    assert TestTimeCrops.from_dict(d) == t and len(d["positions"]) == 7 and d["aggregation"] == "mean"
    for bad in (dict(policy="center"), dict(num_crops=0), dict(resize=(10,)), dict(resize=-3), dict(crop_size=0)):
        with pytest.raises(ValueError):
            TestTimeCrops(**bad)
    np.testing.assert_allclose(TestTimeCrops.image_score(np.array([[1.0, 2.0, 6.0]])), [3.0])


# ------------------------------------------------------------------------------------------------- every path
def _images():
    """Photos of several shapes: ordinary, smaller than the crop (upsampled), extreme aspect ratio; PNG and JPEG."""
    return {"ordinary.png": fixtures.degrade(fixtures.content_image(1, (96, 128)), 0.3, 2),
            "small.png": fixtures.degrade(fixtures.content_image(3, (40, 52)), 0.6, 4),
            "panorama.jpg": fixtures.degrade(fixtures.content_image(5, (70, 400)), 0.1, 6),
            "dark.png": (fixtures.content_image(7, (90, 90)) * 0.4).astype(np.uint8)}


@pytest.fixture(scope="module")
def photo_data(tmp_path_factory):
    from data_pipeline.beam.prepare import prepare

    root = tmp_path_factory.mktemp("photos")
    (root / "photos").mkdir()
    lines = ["file,score,split"]
    for i, (name, img) in enumerate(_images().items()):
        fixtures.save(img, str(root / "photos" / name), quality=90)
        lines.append(f"{name},{2 + i},test")
    (root / "scores.csv").write_text("\n".join(lines) + "\n")
    opts = {"csv": "scores.csv", "image_dir": "photos", "image_column": "file", "score_column": "score",
            "score_range": "1,10", "split_column": "split"}
    manifest = prepare("csv", str(root), str(root / "records"), options=opts, runner=None, num_splits=1)
    assert manifest["count"] == 4, manifest.get("rejects")
    data_dir = str(root / "records" / os.listdir(root / "records")[0])
    return root, data_dir


def _spread(model, images, steps=30):
    """A few Adam steps so the model's scores follow the images' brightness over ~20 % of the score range: a random model's
    scores barely vary between images, and a comparison within 1e-4 of the range would then prove little."""
    import keras

    t = TestTimeCrops(crop_size=model.crop_size, num_crops=4, policy="grid")
    crops = np.concatenate([t.crops(im).numpy() for im in images])
    lo, hi = model.score_range
    y = (lo + (hi - lo) * (0.4 + 0.2 * (crops.mean(axis=(1, 2, 3)) / 255.0))).astype("float32")
    opt = keras.optimizers.Adam(3e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.reshape(tf.cast(model.score(crops), tf.float32), [-1]) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])

    for _ in range(steps):
        step()


CASES = [(n, "random" if n % 2 else "grid", None) for n in CROP_COUNTS] + [(1, "resize", None), (3, "random", (72, 96))]
# A SavedModel export takes ~8 s for the tiny REQA / HCL: every case is exported for MetaIQA (~3 s), these for the others
# (the serving graph's crops and mean do not depend on the family; the family's own graph is covered by each).
SAVEDMODEL_CASES = {(1, "random", None), (7, "random", None), (25, "random", None), (1, "resize", None), (3, "random", (72, 96))}


@pytest.mark.parametrize("family", FAMILIES)
def test_one_image_one_score_on_every_path(family, photo_data, tmp_path):
    import keras

    import keras_iqa
    from data_pipeline.images import load_image
    from data_pipeline.input import RecordReader
    from keras_iqa.evaluation.predict import predict_reader
    from keras_iqa.export.savedmodel import export_savedmodel
    from keras_iqa.export.tflite import TFLiteScorer, convert
    from keras_iqa.scoring import load_scorer, score_images, score_paths

    root, data_dir = photo_data
    files = sorted(str(p) for p in (root / "photos").iterdir())
    names = [os.path.basename(f) for f in files]
    decoded = [load_image(f) for f in files]
    keras.utils.set_random_seed(0)
    model = keras_iqa.create_model(family)
    _spread(model, decoded)
    lo, hi = model.score_range
    reader = RecordReader(data_dir, subset=None, target="mos")
    for n, policy, resize in CASES:
        model.test_crops, model.crop_policy, model.test_resize = n, policy, resize
        case = f"{family} n={n} {policy} resize={resize}"
        df = predict_reader(model, reader).set_index("image_id")
        records = np.array([df.loc[name, "pred"] for name in names])
        assert np.ptp(records) > 1e-3 * (hi - lo), f"{case}: scores hardly vary ({records}); the comparison would be empty"
        path = tmp_path / f"{n}_{policy}.keras"
        model.save(path)
        scorer = load_scorer(path)
        assert scorer.test_time == TestTimeCrops.from_model(model), case
        rows, bad = score_paths(scorer, files, progress=False)
        assert not bad, bad
        by_file = np.array([r["score"] for r in rows])
        arrays = score_images(scorer, decoded)
        paths = [("score files (.keras)", by_file), ("score_images", arrays)]
        if family.startswith("metaiqa") or (n, policy, resize) in SAVEDMODEL_CASES:
            version = export_savedmodel(model, tmp_path / "sm" / f"{n}_{policy}")
            served = tf.saved_model.load(str(version)).signatures["serving_default"]
            batch = tf.constant([open(f, "rb").read() for f in files])  # one request, images of several sizes
            paths.append(("SavedModel", served(images=batch)["score"].numpy()))
        h, w = decoded[0].shape[:2]
        paths.append(("TFLite whole photo", TFLiteScorer(convert(model, "none", photo_size=(h, w))).score_photos(decoded[:1])))
        for label, got in paths:
            err = np.max(np.abs(np.asarray(got, np.float64) - records[:len(got)])) / (hi - lo)
            assert err <= TOL, f"{case}: {label} differs from evaluate by {err:.2e} of the range ({got} vs {records})"


def test_photo_tflite_scores_from_score_and_carries_its_contract(photo_data, tmp_path):
    """`keras-iqa export --photo-size` writes a whole-photo model whose metadata holds the contract, and `keras-iqa score`
    on it gives the score `score` gives through the .keras for a photo of that size."""
    import keras

    import keras_iqa
    from data_pipeline.images import load_image
    from keras_iqa.cli import main
    from keras_iqa.export.tflite import read_contract
    from keras_iqa.scoring import load_scorer, score_paths

    root, _ = photo_data
    photo = str(root / "photos" / "ordinary.png")
    keras.utils.set_random_seed(1)
    model = keras_iqa.create_model("metaiqa-tiny", test_crops=5, crop_policy="random")
    _spread(model, [load_image(photo)])
    model.save(tmp_path / "m.keras")
    rc = main(["export", str(tmp_path / "m.keras"), "--format", "tflite", "--out", str(tmp_path / "lite"),
               "--photo-size", "96x128"])
    assert rc == 0
    lite = next((tmp_path / "lite").glob("*_photo96x128.tflite"))
    meta = read_contract(lite)
    assert meta["kind"] == "photo" and meta["tflite_input"]["shape"] == [1, 96, 128, 3]
    assert meta["test_time"]["num_crops"] == 5 and len(meta["test_time"]["positions"]) == 5
    os.remove(lite.with_suffix(".json"))  # the metadata alone is enough
    a = score_paths(load_scorer(lite), [photo], progress=False)[0][0]["score"]
    b = score_paths(load_scorer(tmp_path / "m.keras"), [photo], progress=False)[0][0]["score"]
    assert abs(a - b) <= TOL * (model.score_range[1] - model.score_range[0])
    assert json.loads((tmp_path / "lite" / "parity_photo96x128.json").read_text())["pass"]
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "m.keras"), "--format", "tflite", "--out", str(tmp_path / "x"), "--photo-size", "96by128"])


def test_bad_item_in_a_batch_is_named_by_index(photo_data, tmp_path):
    import keras_iqa
    from keras_iqa.export.savedmodel import export_savedmodel
    from keras_iqa.scoring import load_scorer, score_images

    root, _ = photo_data
    model = keras_iqa.create_model("metaiqa-tiny")
    model.save(tmp_path / "m.keras")
    scorer = load_scorer(tmp_path / "m.keras")
    good = np.zeros((70, 80, 3), np.uint8)
    with pytest.raises(ValueError, match="image 2"):
        score_images(scorer, [good, good, np.zeros((70, 80), np.uint8)])
    with pytest.raises(ValueError, match="image 1"):
        score_images(scorer, [good, np.zeros((70, 80, 3), np.float32)])
    served = tf.saved_model.load(str(export_savedmodel(model, tmp_path / "sm"))).signatures["serving_default"]
    ok = open(root / "photos" / "ordinary.png", "rb").read()
    with pytest.raises(tf.errors.InvalidArgumentError, match="input index.*2"):
        served(images=tf.constant([ok, ok, b"not an image", ok]))


@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_precision_model_is_scored_as_it_is_saved(family, photo_data, tmp_path):
    """A model trained under mixed_bfloat16 is saved (and exported) as float32: its validation / test passes score it in
    float32 too, so the training run's own numbers are the ones `evaluate` and `score` give for the saved model."""
    import keras

    import keras_iqa
    from data_pipeline.images import load_image
    from data_pipeline.input import RecordReader
    from keras_iqa.evaluation.predict import predict_reader
    from keras_iqa.scoring import load_keras_model

    _, data_dir = photo_data
    reader = RecordReader(data_dir, subset=None, target="mos")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = keras_iqa.create_model(family)
        assert model.compute_dtype == "bfloat16"
        root, _ = photo_data
        _spread(model, [load_image(str(f)) for f in sorted((root / "photos").iterdir())])
        in_training = predict_reader(model, reader).set_index("image_id").pred
        model.save(tmp_path / "m.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    saved = load_keras_model(tmp_path / "m.keras")
    assert saved.compute_dtype == "float32"
    evaluated = predict_reader(saved, reader).set_index("image_id").pred
    lo, hi = model.score_range
    assert np.max(np.abs(in_training - evaluated.reindex(in_training.index))) <= TOL * (hi - lo)
