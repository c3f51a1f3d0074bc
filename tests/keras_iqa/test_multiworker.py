"""`--distribute multiworker` on localhost: two worker processes (TF_CONFIG) train REQA together; after one worker is
SIGKILLed mid-run, the restarted job resumes from the chief's backup and finishes without redoing finished epochs.

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


def test_two_workers_train_and_resume_after_one_is_killed(tmp_path):
    from data_pipeline.fixtures import write_tiny_records
    from keras_iqa.training.runner import BackupStore

    write_tiny_records(str(tmp_path / "data"), kind="authentic", n=30, size=(72, 80))
    out = tmp_path / "run"
    args = ["train", "reqa", "--model", "reqa-tiny", "--data", str(tmp_path / "data"), "--out", str(out), "--quiet",
            "--distribute", "multiworker", "--precision", "fp32", "--set", "epochs=4", "--set", "steps_per_epoch=2",
            "--set", "micro_batches=2", "--set", "stage_epochs=1", "--set", "eval_crops=1"]
    procs = _start(args, tmp_path, "first")
    try:
        t0 = time.time()
        # an epoch is done once its backup is committed (its history row is written just before the backup)
        while not list((out / "backup").glob("index-*.json")) and time.time() - t0 < 400:
            assert all(p.poll() is None for p, _ in procs), (tmp_path / "first-worker0.log").read_text()[-3000:]
            time.sleep(0.1)
        assert list((out / "backup").glob("index-*.json")), "the workers committed no epoch in time"
        procs[1][0].send_signal(signal.SIGKILL)  # the non-chief worker dies in the middle of the run
        procs[1][0].wait(timeout=60)
        time.sleep(1.0)
    finally:
        _stop(procs)  # the chief waits on the lost worker's collectives: the job is stopped and restarted, as a scheduler would
    done_before = BackupStore(out / "backup").entries()[0]["epoch"]
    assert 1 <= done_before < 4

    procs = _start(args, tmp_path, "second")
    try:
        for p, _ in procs:
            p.wait(timeout=600)
    finally:
        _stop(procs)
    logs = [(tmp_path / f"second-worker{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p, _ in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert not any("Traceback" in t for t in logs)
    assert _rows(out / "history.csv") == ["0", "1", "2", "3"]  # every epoch once
    res = json.loads((out / "results.json").read_text())
    assert len(res["history"]["loss"]) == 4 - done_before  # the restarted job ran only the epochs left
    assert BackupStore(out / "backup").entries()[0]["epoch"] == 4
    assert sorted(p.name for p in (out / "backup").iterdir()) == ["index-0003.json", "index-0004.json",
                                                                   "weights-0003.weights.h5", "weights-0004.weights.h5"]
