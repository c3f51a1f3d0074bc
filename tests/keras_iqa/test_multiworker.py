"""`--distribute multiworker` on localhost: two worker processes (TF_CONFIG) train REQA together; after one worker is
SIGKILLed mid-run (once a backup is committed), the restarted job resumes from the chief's backup, finishes without redoing
finished epochs and ends exactly where the uninterrupted job ends when stopped at the same epoch and restarted.

Each worker is one replica (its CPU); both read the same tiny dataset and keep their own half of every global batch (one
micro-batch of 5 each). Ports are free ports of 127.0.0.1 picked by the test; every process is ended by the test.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from run_checks import assert_same_arrays, assert_same_finish, check_test_metrics, stopped_after

ROOT = Path(__file__).parents[2]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start(args, out_dir, tag):
    ports = _free_ports(2)
    procs = []
    for i in range(2):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": i}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "KERAS_IQA_KILL_BACKUP": "",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        log = open(out_dir / f"{tag}-worker{i}.log", "w")
        procs.append((subprocess.Popen([sys.executable, "-m", "keras_iqa.cli", *args], env=env, stdout=log,
                                       stderr=subprocess.STDOUT), log))
    return procs


def _stop(procs):
    for p, log in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        log.close()


def _rows(history):
    if not history.exists():
        return []
    with open(history) as f:
        return [r["epoch"] for r in csv.DictReader(f)]


def _job(args, out_dir, tag):
    """Runs the two-worker job to its end; returns the workers' logs after checking both exited 0 without a traceback."""
    procs = _start(args, out_dir, tag)
    try:
        for p, _ in procs:
            p.wait(timeout=600)
    finally:
        _stop(procs)
    logs = [(out_dir / f"{tag}-worker{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p, _ in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert not any("Traceback" in t for t in logs)
    return logs


def test_two_workers_train_and_resume_after_one_is_killed(tmp_path):
    """The non-chief worker is SIGKILLed as soon as epoch 3's backup is committed; the restarted job finishes exactly as
    the uninterrupted job does when stopped after epoch 3 and restarted (every array of model.keras equal: the same seed
    on every worker, and a two-value all-reduce is the same sum whatever the order; docs in test_resume.py)."""
    from data_pipeline.fixtures import write_tiny_records
    from keras_iqa.training.runner import BackupStore

    write_tiny_records(str(tmp_path / "data"), kind="authentic", n=30, size=(72, 80))

    def args(out):
        return ["train", "reqa", "--model", "reqa-tiny", "--data", str(tmp_path / "data"), "--out", str(out), "--quiet",
                "--distribute", "multiworker", "--precision", "fp32", "--set", "epochs=4", "--set", "steps_per_epoch=2",
                "--set", "micro_batches=2", "--set", "stage_epochs=1", "--set", "eval_crops=1"]

    ref, out = tmp_path / "uninterrupted", tmp_path / "run"
    _job(args(ref), tmp_path, "uninterrupted")
    procs = _start(args(out), tmp_path, "first")
    try:
        t0 = time.time()
        # epoch 3 is done once its backup is committed (its history row is written just before the backup)
        while not (out / "backup" / "index-0003.json").exists():
            assert all(p.poll() is None for p, _ in procs), (tmp_path / "first-worker0.log").read_text()[-3000:]
            assert time.time() - t0 < 400, "the workers did not commit epoch 3 in time"
            time.sleep(0.01)  # polling: the kill follows the commit
        procs[1][0].send_signal(signal.SIGKILL)  # the non-chief worker dies in the middle of epoch 4
        procs[1][0].wait(timeout=60)
    finally:
        _stop(procs)  # the chief waits on the lost worker's collectives: the job is stopped and restarted, as a scheduler would
    store = BackupStore(out / "backup")
    assert store.entries()[0]["epoch"] == 3  # epoch 4 needs both workers: it cannot have been committed
    assert_same_arrays(store.path(store.entries()[0]["files"]["weights"]["file"]),
                       ref / "backup" / "weights-0003.weights.h5", "epoch 3's committed backup")

    _job(args(out), tmp_path, "second")
    assert _rows(out / "history.csv") == ["0", "1", "2", "3"]  # every epoch once
    res = json.loads((out / "results.json").read_text())
    assert len(res["history"]["loss"]) == 1  # the restarted job ran only the epoch left
    assert BackupStore(out / "backup").entries()[0]["epoch"] == 4
    assert sorted(p.name for p in (out / "backup").iterdir()) == ["index-0003.json", "index-0004.json",
                                                                   "weights-0003.weights.h5", "weights-0004.weights.h5"]
    check_test_metrics(out, tmp_path / "data")
    _job(args(stopped_after(ref, tmp_path / "stopped", 3)), tmp_path, "stopped")
    assert_same_finish(out, tmp_path / "stopped")
