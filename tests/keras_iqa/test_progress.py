"""Progress bars (keras_iqa.progress): prepare, synthesize, evaluate and export show a bar naming its unit on stderr when
forced on (KERAS_IQA_PROGRESS=1), nothing with --quiet, nothing when stderr is not a terminal (pytest's capture)."""

import types

import numpy as np
import pytest

from data_pipeline import fixtures
from keras_iqa.cli import main
from keras_iqa.progress import ENV, progress

CSV_ARGS = ["--option", "csv=scores.csv", "--option", "image_dir=photos", "--option", "image_column=file",
            "--option", "score_column=score", "--option", "score_range=1,10", "--option", "split_column=split"]
BAR = "%|"  # tqdm's "ddd%|####|" meter


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setenv(ENV, "1")


def test_helper_forced_quiet_and_not_a_tty(capsys, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with progress(3, "work", True, unit="thing") as bar:  # stderr captured: not a terminal -> silent
        bar.update(3)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(ENV, "1")
    with progress(3, "work", False, unit="thing") as bar:  # --quiet wins over the environment
        bar.update(3)
    assert capsys.readouterr().err == ""
    with progress(3, "work", True, unit="thing") as bar:
        bar.update(3)
    err = capsys.readouterr().err
    assert "work" in err and "3/3" in err and "thing/s" in err


def _csv_dataset(tmp_path):
    fixtures.make_csv_folder(str(tmp_path / "src"))
    return tmp_path / "src"


def test_prepare_bar_per_image_inline_and_quiet(tmp_path, capsys, forced):
    root = _csv_dataset(tmp_path)
    argv = ["prepare", "csv", "--root", str(root), "--out", str(tmp_path / "out"), "--runner", "inline", *CSV_ARGS]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "prepare " in err and "image" in err and "100%" in err
    assert main(argv + ["--out", str(tmp_path / "out_q"), "--quiet"]) == 0
    assert BAR not in capsys.readouterr().err


def test_prepare_not_a_tty_is_silent(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    root = _csv_dataset(tmp_path)
    assert main(["prepare", "csv", "--root", str(root), "--out", str(tmp_path / "out"), "--runner", "inline",
                 *CSV_ARGS]) == 0
    assert BAR not in capsys.readouterr().err


def test_direct_runner_reports_every_row_in_process(tmp_path, capsys, forced, monkeypatch):
    """DirectRunner (in-process worker): the DoFn finds the driver's callback and reports each row, not only whole shards."""
    from data_pipeline.beam import writer

    seen = []
    real = writer._Tracker.on_row

    def spy(self, shard, row, ok):
        seen.append((shard, row, ok))
        return real(self, shard, row, ok)

    monkeypatch.setattr(writer._Tracker, "on_row", spy)
    rows = fixtures._tiny_rows("authentic", 6, 1, 1, 0)
    fn = fixtures._tiny_examples
    import functools

    writer.write_records(rows, functools.partial(fn, kind="authentic", size=(16, 16), dataset="t"), str(tmp_path / "t"),
                         "authentic", "t", (0, 100), True, num_shards=2, runner="DirectRunner", splits=None,
                         progress=True, progress_desc="prepare t")
    assert sorted(r for _, r, _ in seen) == list(range(6))
    err = capsys.readouterr().err
    assert "prepare t" in err and "6/6" in err
    assert not writer._PROGRESS  # the run's callback is unregistered


def test_synthesize_bars_per_image_and_quiet(tmp_path, capsys, forced):
    from data_pipeline import pristine
    from data_pipeline.beam import synthesize as S
    from PIL import Image

    src = tmp_path / "pristine"
    src.mkdir()
    Image.fromarray(np.ascontiguousarray(pristine.load_embedded("astronaut")[60:92, 180:212])).save(src / "a.png")
    S.synthesize(str(src), tmp_path / "out", name="k", types="1", levels="1-3", runner=None, progress=True)
    err = capsys.readouterr().err
    assert "synthesize k:" in err and "synthesize k_pairs" in err and "3/3" in err and "image" in err
    assert main(["synthesize", "--pristine", str(src), "--out", str(tmp_path / "q"), "--name", "k", "--types", "1",
                 "--levels", "1-3", "--runner", "inline", "--quiet"]) == 0
    assert BAR not in capsys.readouterr().err


def _tiny_model(crop=8):
    import keras

    from keras_iqa.models.base import IQAModel

    class Tiny(IQAModel):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.pool = keras.layers.GlobalAveragePooling2D()

        def call(self, x):
            return self.pool(x)[:, :1]

    return Tiny(crop_size=crop, test_crops=3, crop_policy="grid")


class _Reader:
    """Stands in for RecordReader: 5 images of 3 crops, one `count`."""

    def __init__(self, data_dir=None, split="split_00", subset=None, target="mos"):
        self.data_dir, self.split, self.subset, self.count = data_dir or "d/koniq", split, subset, 5

    def eval_dataset(self, contract=None, **kw):
        import tensorflow as tf

        x = np.zeros((5, 3, 8, 8, 3), np.float32) + 10 * np.arange(5, dtype=np.float32)[:, None, None, None, None]
        return tf.data.Dataset.from_tensor_slices((x, np.arange(5, dtype=np.float32), [b"a", b"b", b"c", b"d", b"e"]))


def test_evaluate_bars_per_image_and_per_split(tmp_path, capsys, forced, monkeypatch):
    import sys

    from keras_iqa.evaluation import protocols as P
    from keras_iqa.evaluation.predict import predict_reader

    predict_reader(_tiny_model(), _Reader(), batch_size=6, progress=True)
    err = capsys.readouterr().err
    assert "predict koniq" in err and "/5 " in err and "image/s" in err  # a transient bar (leave=False): cleared when done
    predict_reader(_tiny_model(), _Reader(), batch_size=6, progress=False)
    assert capsys.readouterr().err == ""
    # the protocol: one bar over its rows (splits) and one per image
    d = tmp_path / "data"
    d.mkdir()
    (d / "manifest.json").write_text('{"dataset": "t", "kind": "authentic", "count": 5, "score_range": [0, 100], '
                                     '"higher_better": true, "shards": []}')
    (d / "splits.csv").write_text("image_id,split_00,split_01\na,test,train\nb,test,train\nc,train,test\n"
                                  "d,train,test\ne,test,test\n")
    monkeypatch.setitem(sys.modules, "data_pipeline.input", types.SimpleNamespace(RecordReader=_Reader))
    monkeypatch.setattr(P, "_score", lambda df, info, s, fine, kw: ({"srocc": 1.0, "n": len(df)}, None))
    monkeypatch.setattr(P, "_finish", lambda *a, **k: None)
    P.evaluate_splits([_tiny_model(), _tiny_model()], str(d), fine=False, progress=True)
    err = capsys.readouterr().err
    assert "evaluate splits" in err and "2/2" in err and "split" in err and "predict" in err
    P.evaluate_splits([_tiny_model(), _tiny_model()], str(d), fine=False, progress=False)
    assert BAR not in capsys.readouterr().err


def test_export_bars_per_stage_and_parity_image(tmp_path, capsys, forced):
    pytest.importorskip("ai_edge_litert")
    import keras

    from keras_iqa.export.samples import synthetic_images
    from keras_iqa.export.tflite import export_tflite
    from keras_iqa.models.base import IQAModel

    class Tiny(IQAModel):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.head = keras.layers.Dense(1)

        def call(self, x, training=False):
            return self.head(self.pool(x))[:, 0]

    model = Tiny(crop_size=16, test_crops=2, crop_policy="grid")
    model(np.zeros((1, 16, 16, 3), "float32"))
    images = synthetic_images(3, size=(24, 24), seed=1)
    export_tflite(model, tmp_path / "m.tflite", quantize=["none"], parity_images=images, progress=True)
    err = capsys.readouterr().err
    assert "export tflite" in err and "stage" in err and "convert fp32" in err
    assert "parity none" in err and "/3 " in err and "image/s" in err  # transient per-image bar under the stage bar
    export_tflite(model, tmp_path / "q.tflite", quantize=["none"], parity_images=images, progress=False)
    assert BAR not in capsys.readouterr().err
