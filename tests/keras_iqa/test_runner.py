"""The common training runner: run directory contents and resume after a kill (`RunDir.restore`, `BackupStore`)."""

import csv
import json

import keras
import numpy as np
import pytest

from keras_iqa.training import runner


class _Kill(keras.callbacks.Callback):
    """Simulates a killed process right after epoch `at` (0-based) completed and was backed up."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt("killed")


class _Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)


def _model():
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return m


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    return x, x.sum(1, keepdims=True)


def test_run_dir_files(tmp_path):
    run = runner.RunDir.create(tmp_path / "run", config={"epochs": 2, "lr": 1e-2}, seed=7)
    x, y = _data()
    runner.fit(_model(), (x, y), epochs=2, run=run, verbose=0, tensorboard=False)
    info = json.loads((run.path / "run_info.json").read_text())
    assert info["seed"] == 7 and info["versions"]["tensorflow"] and run.config()["lr"] == 1e-2
    assert sorted(p.name for p in run.checkpoints.glob("epoch_*.weights.h5")) == ["epoch_001.weights.h5", "epoch_002.weights.h5"]
    rows = list(csv.DictReader(open(run.history_csv)))
    assert [r["epoch"] for r in rows] == ["0", "1"]


def test_resume_after_kill_continues_at_next_epoch(tmp_path):
    x, y = _data()
    run = runner.RunDir.create(tmp_path / "run", config={}, seed=0)
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=4, verbose=0, callbacks=run.callbacks(tensorboard=False) + [_Kill(at=1)])
    # a fresh process would build a fresh model: same here
    tracker = _Epochs()
    model2 = _model()
    runner.fit(model2, (x, y), epochs=4, run=runner.RunDir(run.path), verbose=0, tensorboard=False, callbacks=[tracker])
    assert tracker.seen == [2, 3], f"resumed epochs {tracker.seen}"
    rows = list(csv.DictReader(open(run.history_csv)))
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"], "no duplicated or lost history rows"


def test_save_final_and_results(tmp_path):
    run = runner.RunDir.create(tmp_path / "r")
    m = _model()
    m(np.zeros((1, 4), "float32"))
    path = run.save_final(m)
    assert path.exists() and keras.models.load_model(path).count_params() == 5
    run.save_results({"srocc": np.float32(0.5), "arr": np.arange(2)})
    assert json.loads((run.path / "results.json").read_text()) == {"srocc": 0.5, "arr": [0, 1]}


def test_strategy_names():
    assert runner.get_strategy("auto") is not None
    with pytest.raises(ValueError, match="mirrored"):
        runner.get_strategy("bogus")
