"""A run killed at any moment resumes: atomic, verified backups (runner.BackupStore), fallback with a message.

In-process: the commit protocol of `BackupStore` at each moment a kill can hit it, damaged / missing / foreign backups
(the reported case: `backup/latest.weights.h5` cut to 381 KB of 3.3 MB by a SIGKILL), and both optimizers' state coming
back. Subprocesses: `keras-iqa train reqa|hcl|metaiqa` killed with SIGKILL (from outside mid-epoch, and from inside while
the backup file is half written, KERAS_IQA_KILL_BACKUP) once a backup is committed, then re-run the documented way: they
finish with no traceback, exactly as the uninterrupted seeded run of the same command does when stopped at the same epoch
and re-run (every array of the final model compared), with the test metrics that scipy computes from predictions.csv.
"""

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from run_checks import arrays, assert_same_arrays, assert_same_finish, check_test_metrics, stopped_after

from keras_iqa.training import runner
from keras_iqa.training.runner import BackupStore, RunDir

ROOT = Path(__file__).parents[2]


# ---------------------------------------------------------------------------------------------------- commit protocol
def _writer(text, fail_after=None):
    def write(path):
        with open(path, "w") as f:
            f.write(text[:fail_after] if fail_after is not None else text)
        if fail_after is not None:
            raise KeyboardInterrupt("killed while writing")  # what a kill leaves: a partial temporary file

    return write


def test_store_survives_a_kill_at_every_moment_of_a_save(tmp_path):
    store = BackupStore(tmp_path, keep=2)
    store.save(1, {"state": (".txt", _writer("one"))})
    store.save(2, {"state": (".txt", _writer("two"))})
    # killed while writing epoch 3's file: the index still names 2 and 1, both intact; the partial file is ignored
    with pytest.raises(KeyboardInterrupt):
        store.save(3, {"state": (".txt", _writer("three", fail_after=2))})
    assert [e["epoch"] for e in store.entries()] == [2, 1] and store.problem(store.entries()[0]) is None
    assert any(".partial" in p.name for p in tmp_path.iterdir())
    # killed after the file, before the index: same (the new file is not committed)
    (tmp_path / "state-0003.txt").write_text("three")
    assert [e["epoch"] for e in store.entries()] == [2, 1]
    # the next save commits and removes what no entry names (older versions, partial leftovers)
    store.save(3, {"state": (".txt", _writer("three"))})
    assert [e["epoch"] for e in store.entries()] == [3, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index-0002.json", "index-0003.json", "state-0002.txt",
                                                           "state-0003.txt"]
    # damage is detected by size, then by hash
    (tmp_path / "state-0003.txt").write_text("thr")
    assert "has 3 B of 5 B" in store.problem(store.entries()[0])
    (tmp_path / "state-0003.txt").write_text("THREE")
    assert "SHA-256" in store.problem(store.entries()[0])
    (tmp_path / "state-0002.txt").unlink()
    assert "missing" in store.problem(store.entries()[1])
    (tmp_path / "index-0003.json").write_text("{not json")  # a damaged index: the previous one is read
    assert [e["epoch"] for e in store.entries()] == [2, 1]
    (tmp_path / "index-0002.json").write_text("")
    assert store.entries() == []  # no readable index: no entries (callers fall back to checkpoints), no traceback


def test_store_on_an_object_store_path(tmp_path):
    """The remote code path (any "://" path goes through tf.io.gfile) on TensorFlow's in-memory file system: nothing is
    overwritten in place (TF's ram:// appends to an existing file instead of replacing it; new names only)."""
    store = BackupStore(f"ram://{tmp_path.name}/backup", keep=2)
    for epoch in (1, 2, 3):
        store.save(epoch, {"state": (".txt", _writer(f"epoch {epoch}"))})
    entries = store.entries()
    assert [e["epoch"] for e in entries] == [3, 2] and store.problem(entries[0]) is None
    import tensorflow as tf

    assert sorted(tf.io.gfile.listdir(store.dir)) == ["index-0002.json", "index-0003.json", "state-0002.txt",
                                                      "state-0003.txt"]


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path):
    target = tmp_path / "a.json"
    runner.atomic_write(target, _writer("old"), suffix=".json")
    with pytest.raises(KeyboardInterrupt):
        runner.atomic_write(target, _writer("new content", fail_after=3), suffix=".json")
    assert target.read_text() == "old"


# ---------------------------------------------------------------------------------------------------- restore fallback
def _model():
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    m.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return m


def _data():
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    return x, x.sum(1, keepdims=True)


def _epochs(run):
    with open(run.history_csv) as f:
        return [r["epoch"] for r in csv.DictReader(f)]


def test_damaged_backups_fall_back_with_a_message(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="keras_iqa")
    run = RunDir.create(tmp_path / "run", config={}, seed=0)
    runner.fit(_model(), _data(), epochs=3, run=run, verbose=0, tensorboard=False)
    entries = run.backup_store().entries()
    assert [e["epoch"] for e in entries] == [3, 2]
    latest = run.shared / "backup" / entries[0]["files"]["weights"]["file"]
    with open(latest, "r+b") as f:  # what a kill during a non-atomic write left in the reported case
        f.truncate(os.path.getsize(latest) // 9)
    assert run.restore(_model()) == 3  # the epoch-3 checkpoint is intact
    assert "resume: backup/weights-0003.weights.h5 has 1." in caplog.text
    assert "resuming after epoch 3 from checkpoints/epoch_003.weights.h5" in caplog.text
    # the checkpoint of epoch 3 and the previous backup damaged too: the newest readable epoch checkpoint
    prev = run.shared / "backup" / entries[1]["files"]["weights"]["file"]
    prev.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    (run.checkpoints / "epoch_003.weights.h5").write_bytes(b"garbage")
    caplog.clear()
    assert run.restore(_model()) == 2 and "from checkpoints/epoch_002.weights.h5" in caplog.text
    # resumed training continues after epoch 2: one more epoch, history without duplicates
    runner.fit(_model(), _data(), epochs=4, run=run, verbose=0, tensorboard=False)
    assert _epochs(run) == ["0", "1", "2", "3"]
    # nothing usable: a message and a fresh start (no traceback)
    for p in list((run.shared / "backup").iterdir()) + list(run.checkpoints.iterdir()):
        p.write_bytes(b"x")
    caplog.clear()
    assert run.restore(_model()) == 0 and "training starts again from epoch 1" in caplog.text


def test_keras_backup_layout_of_earlier_runs_is_read_and_checked(tmp_path, caplog):
    """Run directories of earlier versions hold keras.callbacks.BackupAndRestore's latest.weights.h5 (+ .bkp)."""
    caplog.set_level(logging.WARNING, logger="keras_iqa")
    run = RunDir.create(tmp_path / "old", config={}, seed=0)
    m = _model()
    x, y = _data()
    m.fit(x, y, epochs=2, verbose=0,
          callbacks=[keras.callbacks.BackupAndRestore(str(run.path / "backup"), double_checkpoint=True,
                                                      delete_checkpoint=False)])
    latest = run.path / "backup" / "latest.weights.h5"
    with open(latest, "r+b") as f:
        f.truncate(os.path.getsize(latest) // 9)  # "bad object header version number" for Keras's own restore
    assert run.restore(_model()) == 1 and "backup/latest.weights.h5 unreadable" in caplog.text


def test_an_intact_backup_of_another_model_is_an_error_not_a_fresh_start(tmp_path):
    run = RunDir.create(tmp_path / "run", config={}, seed=0)
    runner.fit(_model(), _data(), epochs=1, run=run, verbose=0, tensorboard=False)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    other.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="another config"):
        run.restore(other)


@pytest.mark.parametrize("card", ["reqa-tiny", "hcl-tiny"])
def test_resume_restores_both_optimizers_state(tmp_path, card):
    import tensorflow as tf

    import keras_iqa
    from keras_iqa.training.optimizers import FusedAdam

    def build():
        m = keras_iqa.create_model(card)
        if card.startswith("reqa"):
            m.compile(lr=1e-3, backbone_lr=1e-4)
        else:
            m.compile(optimizer=FusedAdam(1e-3), backbone_optimizer=FusedAdam(1e-4), loss="mae")
        return m

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (10, 64, 64, 3)).astype("float32")
    y = np.tile(np.array([5.0, 25.0, 45.0, 65.0, 85.0], "float32"), 2)
    ds = tf.data.Dataset.from_tensor_slices((x, y if card.startswith("reqa") else y[:, None])).batch(10).repeat()
    run = RunDir.create(tmp_path / card, config={}, seed=0)
    m = build()
    runner.fit(m, ds, epochs=1, steps_per_epoch=2, run=run, verbose=0, tensorboard=False)
    m2 = build()
    assert run.restore(m2) == 1
    for a, b in ((m.optimizer, m2.optimizer), (m.backbone_optimizer, m2.backbone_optimizer)):
        assert int(b.iterations.numpy()) == int(a.iterations.numpy()) == 2
        assert all(np.array_equal(u.numpy(), v.numpy()) for u, v in zip(a.variables, b.variables))


# ---------------------------------------------------------------------------------------------------- real SIGKILLs
# What a resumed run must equal. Seeds: `RunDir.create` seeds Python, NumPy and Keras from the config's seed and the input
# pipelines are seeded (deterministic tf.data), so the same command gives the same numbers on the same machine; a resume
# loads the last committed state exactly (weights and every optimizer's state) and then runs the rest of the command in a
# fresh process whose data stream starts again from its seed (it is not fast-forwarded). So a run killed after epoch E's
# commit must (a) have committed exactly the uninterrupted run's state of epoch E and (b) finish bit for bit as the
# uninterrupted run does when it is stopped after E and re-run (`stopped_after`). Both compare every array exactly.
def _cli(args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "KERAS_IQA_KILL_BACKUP": ""}
    env.update(env_extra or {})
    return [sys.executable, "-m", "keras_iqa.cli", *args], env


def _run(args, env_extra=None, timeout=600):
    cmd, env = _cli(args, env_extra)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _kill_when(args, path, log, timeout=600):
    """Starts the command and SIGKILLs it as soon as `path` exists (a committed backup index); returns the exit code."""
    cmd, env = _cli(args)
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + timeout
            while not path.exists():  # polled every 10 ms: the kill follows the commit, whatever the machine's speed
                assert proc.poll() is None, f"ended before {path.name} appeared: {Path(log).read_text()[-2000:]}"
                assert time.time() < deadline, f"{path.name} did not appear in {timeout} s"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
    return proc.returncode


def _assert_clean(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from data_pipeline.fixtures import write_tiny_records

    d = tmp_path_factory.mktemp("data")
    write_tiny_records(str(d / "auth"), kind="authentic", n=30, size=(72, 80))
    write_tiny_records(str(d / "syn"), kind="synthetic", n=24, n_types=2)
    return d


def test_reqa_killed_mid_epoch_and_during_the_backup_write_resumes(data, tmp_path):
    def args(out):
        return ["train", "reqa", "--model", "reqa-tiny", "--data", str(data / "auth"), "--out", str(out), "--quiet",
                "--set", "epochs=4", "--set", "steps_per_epoch=2", "--set", "stage_epochs=1", "--set", "eval_crops=1"]

    ref, out = tmp_path / "uninterrupted", tmp_path / "reqa"
    _assert_clean(_run(args(ref)))
    # 1. SIGKILL from outside as soon as epoch 3's backup is committed (the reported case: killed in the next epoch)
    assert _kill_when(args(out), out / "backup" / "index-0003.json", tmp_path / "kill.log") == -signal.SIGKILL
    store = RunDir(out).backup_store()
    assert store.entries()[0]["epoch"] == 3, "the kill landed after epoch 4's commit"
    committed = arrays(store.path(store.entries()[0]["files"]["weights"]["file"]))
    assert_same_arrays(committed, ref / "backup" / "weights-0003.weights.h5", "epoch 3's committed backup")
    # 2. the re-run is killed from inside while it writes the backup after epoch 4 (half of the file written)
    p = _run(args(out), {"KERAS_IQA_KILL_BACKUP": "4:write"})
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    assert any(".partial" in f.name for f in (out / "backup").iterdir())
    # 3. the next re-run finishes: epochs 0..3 once each, the partial file cleaned up, results = scipy's over predictions
    p = _run(args(out))
    _assert_clean(p)
    with open(out / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == [str(e) for e in range(4)]
    assert not any(".partial" in f.name for f in (out / "backup").iterdir())
    check_test_metrics(out, data / "auth")
    # 4. and it ends exactly where the uninterrupted run ends when stopped after epoch 3 and re-run
    _assert_clean(_run(args(stopped_after(ref, tmp_path / "stopped", 3))))
    assert_same_finish(out, tmp_path / "stopped")


def test_hcl_killed_during_the_backup_write_with_a_damaged_backup_resumes(data, tmp_path):
    def args(out):
        return ["train", "hcl", "--model", "hcl-tiny", "--stage", "finetune", "--data", str(data / "auth"), "--out",
                str(out), "--quiet", "--precision", "fp32", "--set", "finetune.epochs=3", "--set",
                "finetune.steps_per_epoch=1", "--set", "finetune.batch_size=4", "--set", "finetune.test_crops=1"]

    def damage(run):  # the committed backup of epoch 2 cut to its first 1000 bytes on disk
        store = RunDir(run).backup_store()
        newest = Path(store.path(store.entries()[0]["files"]["weights"]["file"]))
        newest.write_bytes(newest.read_bytes()[:1000])

    ref, out = tmp_path / "uninterrupted", tmp_path / "hcl"
    _assert_clean(_run(args(ref)))
    p = _run(args(out), {"KERAS_IQA_KILL_BACKUP": "3:commit"})  # files written, index not committed
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    store = RunDir(out).backup_store()
    assert [e["epoch"] for e in store.entries()] == [2, 1]
    assert_same_arrays(store.path(store.entries()[0]["files"]["weights"]["file"]),
                        ref / "backup" / "weights-0002.weights.h5", "epoch 2's committed backup")
    assert_same_arrays(out / "checkpoints" / "epoch_002.weights.h5", ref / "checkpoints" / "epoch_002.weights.h5",
                        "epoch 2's checkpoint")
    damage(out)
    p = _run(args(out))
    _assert_clean(p)
    assert "resume: backup/weights-0002.weights.h5 has 1000 B" in p.stderr and "resuming after epoch 2" in p.stderr
    with open(out / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1", "2"]
    check_test_metrics(out, data / "auth")
    # the uninterrupted run stopped after epoch 2, its backup damaged the same way, re-run: the same finish
    stopped = stopped_after(ref, tmp_path / "stopped", 2)
    damage(stopped)
    _assert_clean(_run(args(stopped)))
    assert_same_finish(out, stopped)


def test_metaiqa_killed_during_the_meta_state_write_resumes(data, tmp_path):
    def args(out):
        return ["train", "metaiqa", "--model", "metaiqa-tiny", "--crop-size", "32", "--batch-size", "4", "--meta-data",
                str(data / "syn"), "--out", str(out), "--quiet", "--set", "meta_epochs=3", "--set", "inner_steps=1",
                "--set", "tasks_per_batch=2"]

    ref, out = tmp_path / "uninterrupted", tmp_path / "meta"
    _assert_clean(_run(args(ref)))
    p = _run(args(out), {"KERAS_IQA_KILL_BACKUP": "3:write"})  # killed writing the state of meta epoch 3
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    state = "meta/meta_state"
    for name in ("theta-0002.weights.h5", "adam-0002.npz"):  # the committed state of epoch 2 is the uninterrupted run's
        assert_same_arrays(out / state / name, ref / state / name, name)
    p = _run(args(out))
    _assert_clean(p)
    with open(out / "meta" / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1", "2"]
    assert len(json.loads((out / "results.json").read_text())["meta_history"]["query_loss"]) == 3
    _assert_clean(_run(args(stopped_after(ref, tmp_path / "stopped", 2, state_dir=state))))
    assert_same_finish(out, tmp_path / "stopped")
