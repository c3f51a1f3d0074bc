"""`keras_iqa.score` (one call, any input, any model) and its command-line twin `keras-iqa score`: every input kind gives
the score of the same pixels as a file, bad inputs are reported per item and never raise, per-crop scores, every MODEL kind
(run directory, .keras, SavedModel, per-crop and whole-photo .tflite, preset folder, card name, keras.Model, Scorer)."""

import io
import json
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_iqa
from keras_iqa.layers.preprocessing import ImageNetNormalization
from keras_iqa.models.base import IQAModel

ATOL = 1e-4


@keras.saving.register_keras_serializable(package="keras_iqa_test_score_api")
class TinyApiIQA(IQAModel):
    """conv + GAP + dense on a 0..10 scale, lower = better (exercises the normalisation flip); BN to fold under bf16."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.norm = ImageNetNormalization()
        self.conv = keras.layers.Conv2D(4, 3, strides=2, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(1, dtype="float32")

    def call(self, x, training=False):
        return self.head(self.pool(self.conv(self.norm(x))))[:, 0] + 5.0


def _photo(h, w, seed):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.2, 1.0, w)[None, :, None]
    return (rng.uniform(0, 255, (h, w, 3)) * ramp).astype(np.uint8)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny model saved as a run directory, .keras, SavedModel and per-crop .tflite (once per module), and photos."""
    from keras_iqa.export.savedmodel import export_savedmodel
    from keras_iqa.export.tflite import export_tflite
    from keras_iqa.training.runner import RunDir

    root = tmp_path_factory.mktemp("score_api")
    keras.utils.set_random_seed(0)
    model = TinyApiIQA(score_range=(0, 10), higher_better=False, crop_size=32, test_crops=3, crop_policy="random")
    model(np.zeros((1, 32, 32, 3), "float32"))
    run = RunDir.create(root / "run", config={"model": "tiny"})
    run.save_final(model)
    export_savedmodel(model, root / "saved_models" / "tiny")
    tfl = export_tflite(model, root / "tiny.tflite", quantize=["none"], parity=False)["files"]["none"]
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    rgb = _photo(40, 56, 0)
    Image.fromarray(rgb).save(photos / "a.png")
    Image.fromarray(_photo(48, 50, 1)).save(photos / "b.jpg", quality=90)
    Image.fromarray(_photo(36, 60, 2)).save(photos / "sub" / "c.webp", lossless=True)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated JPEG")
    (root / "empty").mkdir()
    return {"model": model, "root": root, "run": run.path, "photos": photos, "rgb": rgb, "tflite": tfl,
            "keras": run.path / "model.keras", "savedmodel": root / "saved_models" / "tiny"}


def _expected(model, img):
    """The score by hand: the contract's crops of `img`, the model's crop scores, their mean."""
    from data_pipeline.test_time import TestTimeCrops

    return float(np.mean(np.asarray(model.score(TestTimeCrops.from_model(model).crops(img)))))


def test_every_input_kind_scores_the_same_pixels(env):
    from data_pipeline.images import load_image

    model, photos, rgb = env["model"], env["photos"], env["rgb"]
    png = (photos / "a.png").read_bytes()
    want = _expected(model, rgb)
    inputs = [str(photos / "a.png"), photos / "a.png", png, bytearray(png), Image.open(photos / "a.png"), rgb,
              rgb / 255.0, rgb.astype(np.float32), tf.constant(rgb), rgb.astype(np.int64), rgb.astype(np.uint16) << 8,
              np.stack([rgb, rgb])]
    result = keras_iqa.score(inputs, model=model)
    assert result.errors == [] and len(result) == 13  # the batch gives two rows
    np.testing.assert_allclose(result.scores, want, atol=ATOL)
    assert result.input_index.tolist() == list(range(12)) + [11]
    assert result.sources[0] == str(photos / "a.png") and result.sources[2] == "<bytes 2>"
    assert result.sources[4] == "<PIL image 4>" and result.sources[11:] == ["<array 11>[0]", "<array 11>[1]"]
    assert (result.crops == 3).all()
    np.testing.assert_allclose(result.normalized, 1 - np.asarray(result.scores) / 10, atol=1e-9)  # lower = better
    # a JPEG: its file, its bytes and the decode policy's array agree
    jpg = photos / "b.jpg"
    r = keras_iqa.score([jpg, jpg.read_bytes(), load_image(jpg), Image.open(jpg)], model=model)
    np.testing.assert_allclose(r.scores, _expected(model, load_image(jpg)), atol=ATOL)


def test_gray_alpha_and_float_inputs_follow_the_decode_policy(env, tmp_path):
    model, rgb = env["model"], env["rgb"]
    gray = rgb[..., 1]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgba = np.concatenate([rgb, np.linspace(0, 255, rgb.shape[1]).astype(np.uint8)[None, :, None].repeat(40, 0)], -1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    result = keras_iqa.score([tmp_path / "gray.png", gray, gray[..., None], tmp_path / "rgba.png", rgba,
                              Image.fromarray(rgba)], model=model)
    assert result.errors == []
    np.testing.assert_allclose(result.scores[:3], result.scores[0], atol=ATOL)
    np.testing.assert_allclose(result.scores[3:], result.scores[3], atol=ATOL)
    assert abs(result.scores[3] - _expected(model, rgb)) > 1e-3  # alpha composited on white: other pixels, other score
    # value_range decides for floats that are all <= 1 (a very dark [0, 255] image)
    dark = np.full((40, 56, 3), 1.0)
    a, b = keras_iqa.score([dark, dark], model=model).scores, keras_iqa.score(dark, model=model, value_range=255).scores
    assert a[0] == pytest.approx(_expected(model, np.full((40, 56, 3), 255, np.uint8)), abs=ATOL)
    assert b[0] == pytest.approx(_expected(model, np.ones((40, 56, 3), np.uint8)), abs=ATOL)
    with pytest.raises(ValueError, match="value_range"):
        keras_iqa.score(dark, model=model, value_range=2)


def test_bad_inputs_are_reported_per_item_and_the_rest_scored(env):
    model, photos, rgb, root = env["model"], env["photos"], env["rgb"], env["root"]
    png = (photos / "a.png").read_bytes()
    inputs = [rgb, b"not an image", b"", png[:100], str(root / "missing.jpg"), np.zeros((0, 5, 3), np.uint8),
              rgb.astype(bool), np.zeros((40, 56, 3), np.complex64), np.array([["a"]]), np.zeros(10, np.uint8),
              np.zeros((3, 40, 56)), np.zeros((2, 2, 2, 2, 2)), np.full((8, 8, 3), np.nan), rgb.astype(np.float32) * 3,
              rgb.astype(np.int32) - 1, None, {"image": rgb}, [rgb], np.zeros((0, 8, 8, 3), np.uint8), root / "empty",
              photos, rgb]
    result = keras_iqa.score(inputs, model=model)
    want = _expected(model, rgb)
    reasons = {src: reason for _, src, reason in result.errors}
    expect = {"<bytes 1>": "cannot decode", "<bytes 2>": "empty input", "<bytes 3>": "cannot decode",
              str(root / "missing.jpg"): "no such file", "<array 5>": "empty image", "<array 6>": "dtype bool",
              "<array 7>": "dtype complex64", "<array 8>": "dtype <U1", "<array 9>": "is not an image",
              "<array 10>": "channels-first", "<array 11>": "is not an image", "<array 12>": "NaN",
              "<array 13>": "outside [0, 255]", "<array 14>": "must lie in 0..255", "<input 15>": "None",
              "<input 16>": "dict is not an image", "<input 17>": "nested list", "<array 18>": "empty batch",
              str(root / "empty"): "holds no image files", str(photos / "broken.jpg"): "cannot decode"}
    assert set(reasons) == set(expect), reasons
    for src, part in expect.items():
        assert part in reasons[src], (src, reasons[src])
    df = result.to_pandas()
    ok = df[df["error"].isnull()]
    assert ok["source"].tolist() == ["<array 0>", str(photos / "a.png"), str(photos / "b.jpg"), "<array 21>"]
    assert result.scores[0] == pytest.approx(want, abs=ATOL) and result.scores[-1] == pytest.approx(want, abs=ATOL)
    bad_rows = [row for row, _, _ in result.errors]
    assert np.isnan(result.scores[bad_rows]).all() and (result.crops[bad_rows] == 0).all()
    assert result.ok.sum() == 4 and repr(result) == f"Scores({len(result)} items: 4 scored, {len(bad_rows)} failed)"
    # a folder alone: its good files scored, its broken one reported; recursive adds the subfolder
    top = keras_iqa.score(photos, model=model)
    assert top.ok.sum() == 2 and [s.rsplit("/", 1)[-1] for _, s, _ in top.errors] == ["broken.jpg"]
    assert keras_iqa.score(photos, model=model, recursive=True).ok.sum() == 3
    nothing = keras_iqa.score([], model=model)
    assert len(nothing) == 0 and nothing.errors == []


def test_single_results_lists_and_tables(env):
    model, rgb = env["model"], env["rgb"]
    one = keras_iqa.score(rgb, model=model)
    assert isinstance(float(one), float) and float(one) == pytest.approx(_expected(model, rgb), abs=ATOL)
    assert np.asarray(one).shape == (1,) and list(one) == [one.scores[0]]
    with pytest.raises(TypeError, match="exactly one"):
        float(keras_iqa.score([rgb, rgb], model=model))
    with pytest.raises(ValueError, match="could not be scored"):
        float(keras_iqa.score(b"junk", model=model))
    df = keras_iqa.score([rgb, b"junk"], model=model, crop_scores=True).to_pandas()
    assert list(df.columns) == ["source", "input_index", "score", "score_normalized", "out_of_range", "crops", "error",
                                "crop_scores"]
    assert df["error"].isnull().tolist() == [True, False]


def test_per_crop_scores_on_request(env):
    from data_pipeline.test_time import TestTimeCrops

    model, rgb = env["model"], env["rgb"]
    result = keras_iqa.score([rgb, b"junk", env["photos"] / "b.jpg"], model=model, crop_scores=True)
    by_hand = np.asarray(model.score(TestTimeCrops.from_model(model).crops(rgb)))
    np.testing.assert_allclose(result.crop_scores[0], by_hand, atol=ATOL)
    assert result.crop_scores[1] is None and len(result.crop_scores[2]) == 3
    for i in (0, 2):
        assert result.crop_scores[i].mean() == pytest.approx(result.scores[i], abs=1e-9)
    assert keras_iqa.score(rgb, model=model).crop_scores is None


def test_every_model_kind_gives_the_same_scores(env):
    from keras_iqa.scoring import load_scorer

    images = [env["rgb"], env["photos"] / "b.jpg"]
    ref = keras_iqa.score(images, model=env["model"]).scores
    kinds = {"run": env["run"], "keras": env["keras"], "savedmodel-root": env["savedmodel"],
             "savedmodel": env["savedmodel"] / "1", "tflite": env["tflite"], "scorer": load_scorer(env["keras"])}
    for kind, model in kinds.items():
        result = keras_iqa.score(images, model=model, crop_scores=True)
        assert result.errors == [], kind
        np.testing.assert_allclose(result.scores, ref, atol=ATOL, err_msg=kind)
        assert [len(c) for c in result.crop_scores] == [3, 3], kind
    assert keras_iqa.score(images, model=str(env["run"])).model == str(env["run"])


def test_preset_and_card_names(env, tmp_path):
    from keras_iqa.presets import save_to_preset

    rgb = env["rgb"]
    keras.utils.set_random_seed(3)
    trained = keras_iqa.create_model("metaiqa-tiny")
    folder = save_to_preset(trained, tmp_path / "preset", metadata={"training": {"data": "none", "protocol": "none"}})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = keras_iqa.score([rgb, rgb / 255.0], model=str(folder), crop_scores=True)
    assert not [w for w in seen if "model card" in str(w.message)]  # a preset has weights: no warning
    assert got.errors == [] and got.crops.tolist() == [4, 4]
    assert got.scores[0] == pytest.approx(_expected(trained, rgb), abs=ATOL) and got.scores[1] == got.scores[0]
    with pytest.warns(UserWarning, match="model card.*mean nothing until it is trained") as caught:
        card = keras_iqa.score(rgb, model="reqa-tiny")
    assert [w.filename for w in caught if "model card" in str(w.message)] == [__file__]  # points at the caller's line
    lo, hi = card.score_range
    assert card.errors == [] and lo <= float(card) <= hi and card.crops.tolist() == [2]
    with pytest.raises(FileNotFoundError, match="did you mean the card 'reqa-tiny'"):
        keras_iqa.score(rgb, model="reqa-tinny")
    with pytest.raises(TypeError, match="model must be"):
        keras_iqa.score(rgb, model=3)


def test_bf16_precision(env):
    rgb = env["rgb"]
    fp32 = keras_iqa.score([rgb, env["photos"] / "b.jpg"], model=env["keras"])
    bf16 = keras_iqa.score([rgb, env["photos"] / "b.jpg"], model=env["keras"], precision="bf16")
    assert fp32.precision == "fp32" and bf16.precision == "bf16"
    from keras_iqa.scoring import load_scorer

    assert load_scorer(env["keras"], precision="bf16").extra["scored"].compute_dtype == "bfloat16"
    assert load_scorer(env["keras"]).extra["scored"].compute_dtype == "float32"
    np.testing.assert_allclose(bf16.scores, fp32.scores, atol=0.05)  # bf16 rounding on a 0..10 scale
    assert keras_iqa.score(rgb, model=env["keras"], precision="auto").precision in ("fp32", "bf16")
    with pytest.raises(ValueError, match="bf16 applies to Keras models"):
        keras_iqa.score(rgb, model=env["savedmodel"], precision="bf16")
    with pytest.raises(ValueError, match="precision must be"):
        keras_iqa.score(rgb, model=env["keras"], precision="fp8")


def test_whole_photo_tflite_scores_but_has_no_crop_scores(env, tmp_path):
    from keras_iqa.export.tflite import export_tflite

    model, rgb = env["model"], env["rgb"]
    lite = export_tflite(model, tmp_path / "photo.tflite", quantize=["none"], parity=False, photo_size=rgb.shape[:2])
    path = lite["files"]["none"]
    assert float(keras_iqa.score(rgb, model=path)) == pytest.approx(_expected(model, rgb), abs=ATOL)
    with pytest.raises(ValueError, match="per-crop scores need"):
        keras_iqa.score(rgb, model=path, crop_scores=True)


def test_loaded_models_are_reused_until_the_file_changes(env, tmp_path):
    import os

    from keras_iqa import scoring

    path = tmp_path / "m.keras"
    env["model"].save(path)
    keras_iqa.score(env["rgb"], model=path)
    first = scoring._cached_scorer(path, "fp32")
    assert scoring._cached_scorer(str(path), "fp32") is first
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new file under the same name: loaded again
    assert scoring._cached_scorer(path, "fp32") is not first


def test_cli_twin(env, tmp_path, capsys):
    from keras_iqa.cli import main

    photos, model = env["photos"], env["model"]
    out = tmp_path / "s.jsonl"
    rc = main(["score", str(env["run"]), str(photos), "--crop-scores", "--scores", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 0 and "skipped" in err and "broken.jpg" in err and "(fp32;" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    api = keras_iqa.score(photos, model=model, crop_scores=True)
    assert [r["path"] for r in rows] == [s for s, ok in zip(api.sources, api.ok) if ok]
    for r, s, c in zip(rows, api.scores[api.ok], [c for c in api.crop_scores if c is not None]):
        assert r["score"] == pytest.approx(s, abs=ATOL) and r["crop_scores"] == pytest.approx(list(c), abs=ATOL)
    rc = main(["score", str(env["keras"]), str(photos / "a.png"), "--crop-scores", "--precision", "bf16"])
    captured = capsys.readouterr()
    assert rc == 0 and "(bf16;" in captured.err
    header, row = captured.out.strip().splitlines()
    assert header == "path,score,score_normalized,out_of_range,crops,crop_scores" and len(row.split(",")[-1].split()) == 3
    assert main(["score", "metaiqa-tiny", str(photos / "a.png")]) == 0
    err = capsys.readouterr().err
    assert err.count("is a model card") == 1 and "warning: " in err, err  # the CLI prints a warning once, as one line
    assert main(["score", str(env["savedmodel"]), str(photos / "a.png"), "--precision", "bf16"]) == 2
    assert "bf16 applies to Keras models" in capsys.readouterr().err


def test_import_stays_light_and_score_is_lazy():
    code = ("import sys, keras_iqa\nassert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
            "assert 'score' in keras_iqa.__all__\nfn = keras_iqa.score\nprint(fn.__module__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "keras_iqa.scoring"


def test_score_help_teaches_the_model_kinds():
    out = subprocess.run([sys.executable, "-m", "keras_iqa.cli", "score", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    for part in ("preset", "card", "--precision", "--crop-scores", "keras_iqa.score(", "keras-iqa score reqa-tiny"):
        assert part in out.stdout, part
