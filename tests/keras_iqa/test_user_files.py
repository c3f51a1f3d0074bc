"""User files and faults: `train --out` never writes over a folder keras-iqa did not make, two runs on one --out refuse
each other, `--scores` never replaces a label sheet, a full disk ends in one line with the last backup intact and resumes,
config type errors name the key before any folder exists, impossible crop sizes are refused, out-of-range scores are
flagged (docs/security.md: Your files are never overwritten, Faults end cleanly)."""

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_iqa.cli import main
from keras_iqa.config import load_config
from keras_iqa.models.base import IQAModel
from keras_iqa.tasks.reqa import REQATrainConfig
from keras_iqa.training import files, runner
from keras_iqa.training.files import DiskFullError
from keras_iqa.training.memory import check_step_memory
from data_pipeline import fs
from keras_iqa.training.out_dir import LOCK_FILE, MARK_FILE, check_out, claim_output
from keras_iqa.training.runner import RunDir

ROOT = Path(__file__).parents[2]
TINY = ["--model", "reqa-tiny", "--set", "epochs=1", "--set", "steps_per_epoch=1", "-q"]


def _user_folder(path: Path) -> dict:
    path.mkdir(parents=True)
    files_ = {"config.json": '{"mine": 1}', "results.json": '{"srocc": 0.9}', "model.keras": "my model",
              "notes.txt": "my notes"}
    for name, text in files_.items():
        (path / name).write_text(text)
    return files_


# ------------------------------------------------------------------------------------------------------ train --out
def test_train_refuses_a_folder_that_is_not_a_keras_iqa_run(tmp_path, capsys):
    out = tmp_path / "mine"
    before = _user_folder(out)
    rc = main(["train", "reqa", "--data", str(tmp_path / "records"), "--out", str(out), *TINY])
    err = capsys.readouterr().err
    assert rc == 2
    line = [x for x in err.splitlines() if "error" in x]
    assert len(line) == 1 and str(out) in line[0] and "config.json" in line[0] and "--overwrite" in line[0]
    assert {p.name: p.read_text() for p in out.iterdir()} == before  # nothing written, nothing replaced


def test_out_rules_new_resume_other_kind_other_config(tmp_path):
    cfg = {"epochs": 2, "lr": 0.1, "data": "/d"}
    assert check_out(tmp_path / "absent", "train reqa", cfg) == "new"
    (tmp_path / "empty").mkdir()
    assert check_out(tmp_path / "empty", "train reqa", cfg) == "new"
    with claim_output(tmp_path / "run", "train reqa", cfg) as state:
        assert state == "new" and (tmp_path / "run" / LOCK_FILE).exists()
    assert not (tmp_path / "run" / LOCK_FILE).exists() and (tmp_path / "run" / MARK_FILE).exists()
    with pytest.raises(FileNotFoundError):  # fails before any state: no folder left behind
        with claim_output(tmp_path / "failed", "train reqa", cfg):
            RunDir.create(tmp_path / "failed", config=cfg)
            raise FileNotFoundError("records/x: no manifest.json")
    assert not (tmp_path / "failed").exists()
    # a run that stopped before its first epoch (a wrong --data): the corrected command starts it anew
    assert check_out(tmp_path / "run", "train reqa", {**cfg, "data": "/right"}) == "new"
    (tmp_path / "run" / "history.csv").write_text("epoch,loss\n0,1.0\n")
    assert check_out(tmp_path / "run", "train reqa", cfg) == "resume"
    assert check_out(tmp_path / "run", "train reqa", {**cfg, "epochs": 5}) == "resume"  # more epochs: resumable
    with pytest.raises(ValueError, match=r"holds a keras-iqa 'train reqa' run, not 'train metaiqa'.*--overwrite"):
        check_out(tmp_path / "run", "train metaiqa", cfg)
    with pytest.raises(ValueError, match=r"another config \(lr: 0.1 -> 0.2\)"):
        check_out(tmp_path / "run", "train reqa", {**cfg, "lr": 0.2})
    # a run directory written through the Python API (run_info.json, no mark) is a keras-iqa run too
    RunDir.create(tmp_path / "api", config={"epochs": 1})
    (tmp_path / "api" / "history.csv").write_text("epoch,loss\n0,1.0\n")
    assert check_out(tmp_path / "api", "train reqa", cfg) == "resume"


def test_overwrite_replaces_what_a_run_writes_and_keeps_other_files(tmp_path, caplog):
    out = tmp_path / "mine"
    _user_folder(out)
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "epoch_001.weights.h5").write_bytes(b"old")
    caplog.set_level(logging.WARNING, logger="keras_iqa")
    with claim_output(out, "train reqa", {"epochs": 1}, overwrite=True) as state:
        assert state == "overwrite"
        assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_FILE, MARK_FILE, "notes.txt"])
    assert (out / "notes.txt").read_text() == "my notes"
    assert "--overwrite: removed checkpoints, config.json, model.keras, results.json" in caplog.text


def test_python_api_run_dir_refuses_a_foreign_folder(tmp_path):
    _user_folder(tmp_path / "mine")
    with pytest.raises(ValueError, match="is not a keras-iqa run folder"):
        RunDir.create(tmp_path / "mine", config={})
    assert (tmp_path / "mine" / "config.json").read_text() == '{"mine": 1}'


# -------------------------------------------------------------------------------------------------------------- lock
_HOLDER = """
import sys, time
from pathlib import Path
from keras_iqa.training.out_dir import claim_output
with claim_output(sys.argv[1], "train reqa", {"epochs": 1}):
    Path(sys.argv[2]).write_text("held")
    sys.stdin.read()  # until the test closes stdin
"""


def test_two_train_runs_on_one_out_refuse_each_other(tmp_path, capsys):
    out, ready = tmp_path / "run", tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), str(ready)], stdin=subprocess.PIPE,
                              cwd=ROOT, text=True)
    try:
        t0 = time.time()
        while not ready.exists() and holder.poll() is None and time.time() - t0 < 60:
            time.sleep(0.05)
        assert ready.exists(), "the first run did not take the lock"
        rc = main(["train", "reqa", "--data", str(tmp_path / "records"), "--out", str(out), *TINY])
        err = capsys.readouterr().err
        assert rc == 2 and f"another run is writing here (keras-iqa train reqa started" in err
        assert f"by pid {holder.pid} on {socket.gethostname()})" in err
        lock = json.loads((out / LOCK_FILE).read_text())
        assert lock["pid"] == holder.pid and lock["host"] == socket.gethostname() and lock["started"]
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0 and not (out / LOCK_FILE).exists()


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "t0"}))
    caplog.set_level(logging.WARNING)
    with claim_output(tmp_path, "train reqa", {}):
        assert f"removed a stale lock (a run started t0 by pid {dead.pid}" in caplog.text
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(fs.LockedError, match=f"pid {os.getpid()}"):  # this process holds it now
            with claim_output(tmp_path, "train reqa", {}):
                pass
    assert not (tmp_path / LOCK_FILE).exists()
    # a lock from another host is never taken over (its process cannot be checked from here)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": "elsewhere", "started": "t0"}))
    with pytest.raises(fs.LockedError, match="on elsewhere"):
        with claim_output(tmp_path, "train reqa", {}):
            pass


def test_only_the_chief_of_a_multi_worker_run_claims_the_folder(tmp_path, monkeypatch):
    from keras_iqa.training.out_dir import is_chief

    cluster = {"worker": ["localhost:1", "localhost:2"]}
    for task, chief in (({"type": "worker", "index": 0}, True), ({"type": "worker", "index": 1}, False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert is_chief() is chief
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {**cluster, "chief": ["localhost:0"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert is_chief() is False
    _user_folder(tmp_path / "mine")
    with claim_output(tmp_path / "mine", "train reqa", {}) as state:  # a worker writes its own temporary folder
        assert state == "new" and not (tmp_path / "mine" / LOCK_FILE).exists()


# --------------------------------------------------------------------------------------------------------- disk full
def _model():
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    m.compile(optimizer="adam", loss="mse")
    return m


def _data():
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    return x, x.sum(1, keepdims=True)


def test_disk_full_during_a_backup_keeps_the_last_one_and_a_rerun_resumes(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "run", config={}, seed=0)
    real, calls = files.write_bytes, []

    def full_on_second_epoch(path, data):
        calls.append(path)
        if "0002" in os.path.basename(path):  # the backup of epoch 2
            with open(path, "wb") as f:
                f.write(data[: len(data) // 3])  # part of it reached the disk, then the disk was full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(files, "write_bytes", full_on_second_epoch)
    with pytest.raises(DiskFullError) as info:
        runner.fit(_model(), _data(), epochs=3, run=run, verbose=0, tensorboard=False)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1
    assert msg.startswith(f"disk full: cannot write {run.shared / 'backup' / 'weights-0002.weights.h5'} (")
    assert " free" in msg and "the last good backup (epoch 1" in msg and "re-run the same command to resume" in msg
    store = run.backup_store()
    assert [e["epoch"] for e in store.entries()] == [1] and store.problem(store.entries()[0]) is None
    assert not [p.name for p in (run.shared / "backup").iterdir() if ".partial" in p.name]  # its space given back
    monkeypatch.setattr(files, "write_bytes", real)
    model = _model()
    assert run.restore(model) == 1
    hist = runner.fit(model, _data(), epochs=3, run=run, verbose=0, tensorboard=False)
    assert len(hist.history["loss"]) == 2  # epochs 2 and 3 only
    assert [e["epoch"] for e in run.backup_store().entries()] == [3, 2]


def test_no_room_for_a_checkpoint_is_refused_before_writing(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "run", config={}, seed=0)
    monkeypatch.setattr(files, "free_bytes", lambda path: 1000)
    with pytest.raises(DiskFullError, match=r"\(1000 B free, 1\.0 MB needed\); no backup was committed yet"):
        runner.fit(_model(), _data(), epochs=1, run=run, verbose=0, tensorboard=False)
    assert not list((run.shared / "backup").glob("*.h5"))


def test_weights_written_through_memory_load_back(tmp_path):
    m = _model()
    m.fit(*_data(), epochs=1, verbose=0)
    files.atomic_write(tmp_path / "w.weights.h5", files.weights_writer(m), suffix=".weights.h5")
    back = _model()
    back.optimizer.build(back.trainable_variables)
    back.load_weights(tmp_path / "w.weights.h5")
    assert int(back.optimizer.iterations) == int(m.optimizer.iterations) == 1
    for a, b in zip(m.weights, back.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------------------------------------------- config errors
@pytest.mark.parametrize("sets,match", [
    (["model_overrides=steps=3"], "config key 'model_overrides' expects a mapping, got 'steps=3' (str)"),
    (["milestones=5"], "config key 'milestones' expects a list, got 5 (int)"),
    (["lr=[1, 2]"], "config key 'lr' expects a string or a number, got [1, 2] (list)"),
    (["epochs=one"], "config key 'epochs' expects an integer, got 'one' (str)"),
    (["epoch=5"], "Unknown config key 'epoch' for REQATrainConfig; did you mean 'epochs'?"),
])
def test_config_errors_name_the_key_type_and_value(sets, match):
    with pytest.raises(ValueError) as info:
        load_config(REQATrainConfig, sets=sets)
    assert match in str(info.value)


def test_config_file_type_errors_come_before_any_run_folder(tmp_path, capsys):
    cfg, out = tmp_path / "c.yaml", tmp_path / "run"
    for text, match in (("model_overrides: steps=3\n", f"{cfg}: config key 'model_overrides' expects a mapping"),
                        ("milestones: 5\n", f"{cfg}: config key 'milestones' expects a list"),
                        ("lr: [1, 2]\n", f"{cfg}: config key 'lr' expects"),
                        ("model_overrides: {stepz: 3}\n", "did you mean 'model_overrides.steps'")):
        cfg.write_text(text)
        rc = main(["train", "reqa", "--data", str(tmp_path), "--out", str(out), "--config", str(cfg), *TINY])
        err = capsys.readouterr().err
        assert rc == 2 and match in err and "Traceback" not in err, err
        assert not out.exists()


def test_a_crop_size_that_cannot_fit_is_refused_before_tensorflow(tmp_path, capsys):
    rc = main(["train", "reqa", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *TINY, "--crop-size", "6400"])
    err = capsys.readouterr().err
    assert rc == 2 and "crop_size=6400 with 15 images per step needs about" in err and "--crop-size" in err
    assert not (tmp_path / "run").exists()
    gib = 1 << 30
    check_step_memory(224, 15, 1.0, memory=16 * gib)  # the paper's REQA step on a 16 GB machine
    with pytest.raises(ValueError, match=r"use a crop size of at most 528 \(crop_size=528\)"):
        check_step_memory(600, 15, 1.0, memory=16 * gib)  # 16 GiB / (15 x 4 KB) = 528²


# ------------------------------------------------------------------------------------------------------------ score
def test_scores_never_replaces_a_label_sheet(tmp_path, capsys):
    sheet = tmp_path / "scores.csv"
    sheet.write_text("image,mos\na.jpg,3.2\n")
    rc = main(["score", "reqa-tiny", str(tmp_path / "a.jpg"), "--scores", str(sheet), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "was not written by keras-iqa score (its first line is 'image,mos')" in err
    assert "--overwrite" in err and sheet.read_text() == "image,mos\na.jpg,3.2\n"


def test_scores_replaces_its_own_output_and_anything_with_overwrite(tmp_path):
    from keras_iqa.scoring.results import check_scores_target, flag_rows, write_rows

    rows = flag_rows([{"path": "a.jpg", "score": 50.0, "score_normalized": 0.5, "crops": 1}], (0, 100))
    for name in ("own.csv", "own.jsonl", "own.tsv"):
        write_rows(rows, tmp_path / name)
        check_scores_target(tmp_path / name)  # keras-iqa's own output: replaced
    (tmp_path / "empty.csv").write_text("")
    check_scores_target(tmp_path / "empty.csv")
    other = tmp_path / "labels.jsonl"
    other.write_text('{"image": "a.jpg", "mos": 3}\n')
    with pytest.raises(ValueError, match="was not written by keras-iqa score"):
        check_scores_target(other)
    check_scores_target(other, overwrite=True)


@keras.saving.register_keras_serializable(package="keras_iqa_test_user_files")
class Overshoot(IQAModel):
    """Scores 126.4 for every image on a declared 0..100 range (a model asked about images unlike its training data)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.head = keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros")

    def call(self, x, training=False):
        return self.head(keras.ops.mean(x, axis=(1, 2)))[:, 0] + 126.4


def test_keras_iqa_score_flags_a_score_outside_the_range(tmp_path, capsys):
    from PIL import Image

    model = Overshoot(score_range=(0, 100), higher_better=True, crop_size=32, test_crops=1, crop_policy="grid")
    model(np.zeros((1, 32, 32, 3), "float32"))
    run = RunDir.create(tmp_path / "run", config={})
    run.save_final(model)
    Image.fromarray(np.full((40, 48, 3), 128, np.uint8)).save(tmp_path / "a.png")
    rc = main(["score", str(run.path), str(tmp_path / "a.png"), "--scores", str(tmp_path / "s.csv"), "-q"])
    err = capsys.readouterr().err
    assert rc == 0 and err.count("fall outside the range 0..100") == 1 and "a.png: 126.4" in err, err
    header, row = (tmp_path / "s.csv").read_text().splitlines()
    assert header == "path,score,score_normalized,out_of_range,crops"
    path, score, norm, flag, crops = row.split(",")
    assert float(score) == pytest.approx(126.4, abs=1e-3) and float(norm) == 1.0 and flag == "True"


def test_a_score_outside_the_declared_range_is_flagged(tmp_path):
    from keras_iqa.scoring.results import Scores, flag_rows, write_rows

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = Scores(scores=np.array([126.4, 50.0, np.nan]), normalized=np.array([1.0, 0.5, np.nan]),
                     sources=["a.jpg", "b.jpg", "c.jpg"], input_index=np.arange(3), crops=np.array([1, 1, 0]),
                     crop_scores=None, errors=[(2, "c.jpg", "bad")], model="m", score_range=(0, 100),
                     higher_better=True)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and "1 of 3 score(s) fall outside the range 0..100" in msgs[0] and "a.jpg: 126.4" in msgs[0]
    assert res.out_of_range.tolist() == [True, False, False] and res.scores[0] == 126.4
    assert res.to_pandas()["out_of_range"].tolist() == [True, False, False]
    with pytest.warns(UserWarning, match="outside the range"):
        rows = flag_rows([{"path": "a.jpg", "score": 126.4, "score_normalized": 1.0, "crops": 1}], (0, 100))
    write_rows(rows, tmp_path / "s.csv")
    assert (tmp_path / "s.csv").read_text().splitlines() == ["path,score,score_normalized,out_of_range,crops",
                                                             "a.jpg,126.4,1.0,True,1"]
    write_rows(rows, tmp_path / "s.jsonl")
    assert json.loads((tmp_path / "s.jsonl").read_text())["out_of_range"] is True
