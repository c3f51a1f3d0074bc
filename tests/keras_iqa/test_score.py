"""`keras-iqa score` / `keras_iqa.scoring`: every MODEL kind, all image formats, bad files skipped with reasons, exit status."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from keras_iqa.layers.preprocessing import ImageNetNormalization
from keras_iqa.models.base import IQAModel


@keras.saving.register_keras_serializable(package="keras_iqa_test_score")
class TinyScoreIQA(IQAModel):
    """conv + GAP + dense on a 0..10 scale, lower = better (exercises the normalisation flip)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.norm = ImageNetNormalization()
        self.conv = keras.layers.Conv2D(4, 3, strides=2, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(1)

    def call(self, x, training=False):
        return self.head(self.pool(self.conv(self.norm(x))))[:, 0] + 5.0


GOOD = ("a.jpg", "b.png", "c.bmp", "d.gif", "sub/e.webp", "sub/f.tiff")
BAD = ("garbage.jpg", "truncated.png", "empty.bmp")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from keras_iqa.training.runner import RunDir

    root = tmp_path_factory.mktemp("score")
    keras.utils.set_random_seed(0)
    model = TinyScoreIQA(score_range=(0, 10), higher_better=False, crop_size=32, test_crops=4, crop_policy="random")
    model(np.zeros((1, 32, 32, 3), "float32"))
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(GOOD):
        h, w = 40 + 7 * i, 56 - 3 * i
        arr = (rng.uniform(0, 255, (h, w, 3)) * np.linspace(0.2, 1, w)[None, :, None]).astype(np.uint8)
        Image.fromarray(arr).save(folder / name)
    (folder / "garbage.jpg").write_bytes(b"definitely not a jpeg")
    (folder / "truncated.png").write_bytes((folder / "b.png").read_bytes()[:120])
    (folder / "empty.bmp").write_bytes(b"")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    run = RunDir.create(root / "run", config={"model": "tiny"})
    run.save_final(model)
    return model, root, folder, run.path


def expected(model, path):
    from data_pipeline.images import load_image
    from data_pipeline.test_time import TestTimeCrops

    crops = TestTimeCrops.from_model(model).crops(load_image(path))
    return float(np.mean(np.asarray(model.score(crops))))


def test_score_cli_folder_with_good_and_bad_files(setup, capsys):
    from keras_iqa.cli import main

    model, root, folder, run_dir = setup
    out = root / "scores.csv"
    rc = main(["score", str(run_dir), str(folder), "--recursive", "--scores", str(out), "--batch-size", "4"])
    err = capsys.readouterr().err
    assert rc == 0, err
    import pandas as pd

    df = pd.read_csv(out)
    assert sorted(df["path"].map(lambda p: p.split("photos/")[1])) == sorted(GOOD)
    for bad in BAD:
        assert f"skipped {folder / bad}" in err
    assert "cannot decode" in err and "empty" in err and "6 image(s)" in err and "3 skipped" in err
    for _, row in df.iterrows():
        want = expected(model, row["path"])
        assert row["score"] == pytest.approx(want, abs=1e-4)
        assert row["score_normalized"] == pytest.approx(np.clip(1 - want / 10, 0, 1), abs=1e-5)  # lower = better
        assert row["crops"] == 4
    # without --recursive only the top folder
    rc = main(["score", str(run_dir), str(folder), "--scores", str(root / "top.jsonl"), "-q"])
    rows = [json.loads(line) for line in (root / "top.jsonl").read_text().splitlines()]
    assert rc == 0 and len(rows) == 4 and all("sub/" not in r["path"] for r in rows)


def test_every_model_kind_gives_the_same_scores(setup, tmp_path):
    from keras_iqa.export.savedmodel import export_savedmodel
    from keras_iqa.export.tflite import export_tflite
    from keras_iqa.scoring import load_scorer, score_paths

    model, root, folder, run_dir = setup
    sm_root = tmp_path / "saved_models" / "tiny"
    export_savedmodel(model, sm_root)
    tfl = export_tflite(model, tmp_path / "tiny.tflite", quantize=["none"], parity=False)["files"]["none"]
    results = {}
    for kind, path in {"run": run_dir, "keras": run_dir / "model.keras", "savedmodel-root": sm_root,
                       "savedmodel": sm_root / "1", "tflite": tfl}.items():
        scorer = load_scorer(path)
        rows, bad = score_paths(scorer, [folder], recursive=True, batch_size=3, progress=False)
        assert len(rows) == len(GOOD) and len(bad) == len(BAD), (kind, bad)
        results[kind] = np.array([r["score"] for r in sorted(rows, key=lambda r: r["path"])])
    for kind, scores in results.items():
        np.testing.assert_allclose(scores, results["keras"], atol=1e-4, err_msg=kind)


def test_nothing_scored_exits_nonzero_and_bad_model_paths(setup, tmp_path, capsys):
    from keras_iqa.cli import main

    model, root, folder, run_dir = setup
    rc = main(["score", str(run_dir), str(folder / "garbage.jpg"), str(tmp_path / "nope.png")])
    err = capsys.readouterr().err
    assert rc == 1 and "nothing could be scored" in err and "no such file" in err
    assert main(["score", str(tmp_path / "missing_model"), str(folder)]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "half_run" / "checkpoints").mkdir(parents=True)
    assert main(["score", str(tmp_path / "half_run"), str(folder)]) == 2
    assert "without model.keras" in capsys.readouterr().err
    assert main(["score", str(run_dir), str(folder), "--scores", str(tmp_path / "x.parquet")]) == 2
    assert main(["score", str(run_dir), str(folder), "--batch-size", "0"]) == 2


def test_help_teaches():
    import subprocess
    import sys

    for cmd in ("score", "export"):
        out = subprocess.run([sys.executable, "-m", "keras_iqa.cli", cmd, "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert f"keras-iqa {cmd} runs/" in out.stdout  # the epilog's examples
