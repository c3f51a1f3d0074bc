"""`prepare` / `synthesize` given what a careless user or an attacker gives them (docs/security.md, "prepare"): rows whose
path leaves --root, a dataset name that leaves --out, path options, two runs on one output (local disk and an S3 server
started here), a full disk, Ctrl-C, and a finished run started again."""

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf

from data_pipeline import fixtures, fs, layout
from data_pipeline.beam import writer
from data_pipeline.beam.prepare import prepare
from keras_iqa import cli

OPTIONS = {"image_dir": "photos", "image_column": "file", "score_column": "score", "score_range": "1,10"}
BUCKET = "keras-iqa-test"  # conftest.moto_s3's bucket


def _folder(tmp_path, n=6):
    """A user's folder: ROOT/photos/photo_<i>.png and ROOT/scores.csv (file,score,split on 1-10)."""
    root = tmp_path / "data"
    return root, fixtures.make_csv_folder(str(root), n=n)["ids"]


def _argv(root, out, csv=None, *extra):
    opts = dict(OPTIONS, csv=str(csv or root / "scores.csv"))
    return ["prepare", "csv", "--root", str(root), "--out", str(out), "--num-splits", "2", "-q",
            *[a for k, v in opts.items() for a in ("--option", f"{k}={v}")], *extra]


def _records(data_dir):
    """`{image id: (mos, encoded bytes)}` of a prepared dataset (local or s3://), read from the shards it lists."""
    man = json.loads(fs.read_bytes(fs.join(data_dir, "manifest.json")))
    out = {}
    for s in man["shards"]:
        for rec in writer.iter_records(fs.join(data_dir, s["file"])):
            f = tf.train.Example.FromString(rec).features.feature
            out[f["image/id"].bytes_list.value[0].decode()] = (f["score/mos"].float_list.value[0],
                                                              f["image/encoded"].bytes_list.value[0])
    return out


def _scores(csv):
    lines = open(csv).read().splitlines()[1:]
    return {ln.split(",")[0]: float(ln.split(",")[1]) for ln in lines}


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), os.environ.get("PYTHONPATH", "")]))
    env.pop("KERAS_IQA_PROGRESS", None)
    return env


def _fifo(path):
    """Replaces the image at `path` by a FIFO (a run that reaches it blocks there until it is written); returns its bytes."""
    data = path.read_bytes()
    path.unlink()
    os.mkfifo(path)
    return data


def _reader_waiting(path, deadline, running=lambda: True):
    """Blocks until a run has opened the FIFO for reading (observed, not timed); returns our write end."""
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            assert running(), "the run ended before it reached the FIFO image"
            assert time.time() < deadline, "no prepare reached the FIFO image"
            time.sleep(0.02)


# --------------------------------------------------------------------------------------------------- rows leaving --root
def test_rows_leaving_root_rejected_per_row_unless_allowed(tmp_path):
    root, ids = _folder(tmp_path)
    secret = tmp_path / "outside" / "secret.png"
    fixtures.save(fixtures.content_image(99), str(secret))
    os.symlink(secret, root / "photos" / "link.png")
    with open(root / "scores.csv", "a") as f:  # rows 8, 9, 10: a `..`, an absolute path, a symlink out
        f.write(f"../../outside/secret.png,5,train\n{secret},5,train\nlink.png,5,train\n")
    m = prepare("csv", root, tmp_path / "out", options=dict(OPTIONS, csv=str(root / "scores.csv")), runner=None,
                num_splits=2)
    assert m["count"] == len(ids)
    leaving = [r for r in m["rejects"] if "leaves the dataset root" in r["reason"]]
    assert len(leaving) == 3 == len(m["rejects"])
    for row, r in zip((8, 9, 10), leaving):  # the bad-row report: score file and row, where it leads, the fix
        assert f"scores.csv row {row})" in r["reason"] and str(secret) in r["reason"]
        assert "--allow-outside-root" in r["reason"]
    assert all(enc != secret.read_bytes() for _, enc in _records(str(tmp_path / "out" / "custom")).values())

    assert cli.main(_argv(root, tmp_path / "out2", None, "--runner", "inline", "--allow-outside-root")) == 0
    recs = _records(str(tmp_path / "out2" / "custom"))
    assert len(recs) == len(ids) + 3 and recs["link.png"][1] == secret.read_bytes()


def test_dataset_name_cannot_leave_out(tmp_path, capsys):
    root, _ = _folder(tmp_path)
    for name in ("../escaped", "a/b", "..", str(tmp_path / "abs")):
        assert cli.main(_argv(root, tmp_path / "out", None, "--runner", "inline", "--option", f"name={name}")) == 2
        assert "is not a plain folder name" in capsys.readouterr().err
    assert cli.main(["synthesize", "--pristine", "embedded:astronaut", "--out", str(tmp_path / "out"),
                     "--name", "../escaped", "--runner", "inline", "-q"]) == 2
    assert "is not a plain folder name" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["data"]  # nothing written anywhere


def test_path_options_relative_to_the_current_folder(tmp_path, monkeypatch, caplog, capsys):
    root, ids = _folder(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    opts = dict(OPTIONS, csv="scores.csv")
    # a label sheet of the same name in the current folder is the one read, not ROOT's
    (work / "scores.csv").write_text("file,score\n" + "".join(f"{i},2.5\n" for i in ids))
    m = prepare("csv", root, "out", options=opts, runner=None, num_splits=2)
    assert m["source"]["options"]["csv"] == str(work / "scores.csv")
    assert {mos for mos, _ in _records(str(work / "out" / "custom")).values()} == {2.5}
    # a name found only under ROOT: read from there, with a warning that says so
    (work / "scores.csv").unlink()
    with caplog.at_level(logging.WARNING):
        m = prepare("csv", root, "out2", options=opts, runner=None, num_splits=2)
    assert m["count"] == len(ids) and "not in the current folder" in caplog.text
    # nowhere: the error says where paths are read from
    (root / "scores.csv").rename(root / "other.csv")
    assert cli.main(_argv(root, "out3", "scores.csv", "--runner", "inline")) == 2
    assert "scores.csv: score table not found (paths are relative to the current folder, not --root" in \
        capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------- locks
def _race(tmp_path, out):
    """Two `prepare` runs started together (threads) on one output, with other score sheets. The one that gets the lock
    blocks on a FIFO image until fed; the other must stop on the lock. Returns (the winner's scores, the ids)."""
    root, ids = _folder(tmp_path, n=8)
    fifo = root / "photos" / ids[3]
    data = _fifo(fifo)
    sheets = [root / "scores.csv", root / "scores_b.csv"]
    sheets[1].write_text("file,score\n" + "".join(f"{i},{1 + k % 9}.5\n" for k, i in enumerate(ids)))
    results = [None, None]

    def run(k):
        try:
            results[k] = prepare("csv", root, out, options=dict(OPTIONS, csv=str(sheets[k])), runner=None, num_splits=2)
        except Exception as e:  # reported to the test
            results[k] = e

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in (0, 1)]
    for t in threads:
        t.start()
    deadline = time.time() + 120
    try:
        while all(t.is_alive() for t in threads):  # the loser ends on its own; the winner waits at the FIFO
            assert time.time() < deadline, "neither prepare stopped on the lock"
            time.sleep(0.02)
        lost = next(k for k, t in enumerate(threads) if not t.is_alive())
        won = 1 - lost
        assert isinstance(results[lost], fs.LockedError), results[lost]
        assert "another run is writing here (prepare custom started" in str(results[lost])
        fd = _reader_waiting(fifo, deadline, threads[won].is_alive)  # still holding the lock
        os.write(fd, data)
        os.close(fd)
        threads[won].join(timeout=120)
    finally:
        if any(t.is_alive() for t in threads):  # a failed test: let a reader blocked on the FIFO go
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
    assert isinstance(results[won], dict) and results[won]["count"] == 8, results[won]
    return _scores(sheets[won]), ids


def test_two_prepares_on_one_output_one_refused_no_scores_lost(tmp_path):
    out = tmp_path / "out"
    scores, ids = _race(tmp_path, out)
    recs = _records(str(out / "custom"))
    assert sorted(recs) == sorted(ids)
    assert {i: mos for i, (mos, _) in recs.items()} == pytest.approx(scores)  # the winner's scores, every one
    assert not (out / "custom" / layout.LOCK).exists()


@pytest.fixture
def s3(moto_s3):
    """conftest's moto server (bucket BUCKET), this process's file layer pointed at it."""
    fs.configure(moto_s3["args"])
    return moto_s3


def test_two_prepares_on_one_s3_output_one_refused_no_scores_lost(tmp_path, s3):
    out = f"s3://{BUCKET}/race"
    fs.configure(s3["args"])
    scores, ids = _race(tmp_path, out)
    recs = _records(f"{out}/custom")
    assert {i: mos for i, (mos, _) in recs.items()} == pytest.approx(scores) and sorted(recs) == sorted(ids)
    assert not fs.exists(f"{out}/custom/{layout.LOCK}")


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", ""])
    p.wait()
    return p.pid


@pytest.mark.parametrize("where", ["local", "s3"])
def test_stale_lock_of_a_dead_process_removed_others_refuse(tmp_path, where, request, caplog):
    if where == "s3":
        s3 = request.getfixturevalue("s3")
        fs.configure(s3["args"])
        path = f"s3://{BUCKET}/stale/{tmp_path.name}/{layout.LOCK}"
    else:
        path = str(tmp_path / "d" / layout.LOCK)
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00Z", "command": "prepare x"}
    fs.write_bytes(path, json.dumps(stale).encode())
    with caplog.at_level(logging.WARNING), fs.lock(path, "prepare x"):
        assert json.loads(fs.read_bytes(path))["pid"] == os.getpid()
        with pytest.raises(fs.LockedError, match="another run is writing here"):  # a live holder: ourselves
            with fs.lock(path, "prepare x"):
                pass
    assert "removed a stale lock" in caplog.text and not fs.exists(path)
    other = dict(stale, host="another-host")  # its pid cannot be checked from here: never broken
    fs.write_bytes(path, json.dumps(other).encode())
    with pytest.raises(fs.LockedError, match=f"delete {path}"):
        with fs.lock(path, "prepare x"):
            pass
    assert json.loads(fs.read_bytes(path)) == other


def test_s3_stale_lock_replaced_meanwhile_is_kept(s3):
    """Breaking a stale lock on S3 is a delete conditional on the ETag read: a lock another run took in between stays."""
    path = f"s3://{BUCKET}/replaced/{layout.LOCK}"
    fs.configure(s3["args"])
    fs.write_bytes(path, b'{"pid": 1}')
    old_etag = s3["client"].head_object(Bucket=BUCKET, Key=f"replaced/{layout.LOCK}")["ETag"]
    fresh = {"pid": os.getpid(), "host": "h", "token": "fresh"}
    fs.write_bytes(path, json.dumps(fresh).encode())
    assert fs.lock(path)._break({"pid": 1}, old_etag) is False
    assert json.loads(fs.read_bytes(path)) == fresh


def test_synthesize_refused_while_prepare_holds_the_output(tmp_path, capsys):
    out = tmp_path / "out"
    with fs.lock(str(out / "demo" / layout.LOCK), "prepare demo"):
        assert cli.main(["synthesize", "--pristine", "embedded:astronaut", "--out", str(out), "--name", "demo",
                         "--types", "1", "--levels", "1", "--runner", "inline", "-q"]) == 2
    err = capsys.readouterr().err
    assert "another run is writing here (prepare demo started" in err and f"pid {os.getpid()}" in err
    assert not (out / "demo" / "manifest.json").exists()


# ------------------------------------------------------------------------------------------------------------ disk full
def test_disk_full_on_a_shard_one_line_then_rerun_resumes(tmp_path, monkeypatch, capfd):
    root, ids = _folder(tmp_path)
    out = tmp_path / "out"
    put = writer._ShardFile._put

    def full(self, b):  # the second shard's writes fail as on a full disk
        if "records-00001-of-00002" in getattr(self.f, "name", ""):
            raise OSError(errno.ENOSPC, "No space left on device")
        put(self, b)

    monkeypatch.setattr(writer._ShardFile, "_put", full)
    argv = _argv(root, out, None, "--num-shards", "2")  # the DirectRunner, in this process
    shown = logging.StreamHandler(sys.stderr)  # log records reach stderr as they do from the command line
    logging.getLogger().addHandler(shown)
    try:
        assert cli.main(argv) == 2
    finally:
        logging.getLogger().removeHandler(shown)
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(out / "custom" / "records-00001-of-00002") in lines[0] and "no space left on the device" in lines[0]
    assert " free)" in lines[0] and "re-run the same command to resume" in lines[0]
    left = os.listdir(out / "custom")
    assert not any(f.startswith("records-00001") for f in left)  # the partial shard was deleted, freeing its space
    assert "manifest.json" not in left and layout.LOCK not in left
    complete = [f for f in left if f.endswith(writer.SIDECAR)]
    monkeypatch.setattr(writer._ShardFile, "_put", put)  # space again
    assert cli.main(argv) == 0
    m = json.loads((out / "custom" / "manifest.json").read_text())
    assert m["count"] == len(ids) and m["writer"]["shards_reused"] == len(complete)
    assert sorted(_records(str(out / "custom"))) == sorted(ids)


# -------------------------------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_during_prepare_one_line_130_then_resume_then_already_complete(tmp_path, monkeypatch, capsys):
    root, ids = _folder(tmp_path)
    out = tmp_path / "out"
    fifo = root / "photos" / ids[3]
    data = _fifo(fifo)
    argv = _argv(root, out, None, "--num-shards", "2")
    proc = subprocess.Popen([sys.executable, "-m", "keras_iqa.cli", *argv], env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fd = None
    try:
        fd = _reader_waiting(fifo, time.time() + 240, lambda: proc.poll() is None)  # mid-shard, inside a Beam step
        assert (out / "custom" / layout.LOCK).exists()
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C: the whole process group
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if fd is not None:
            os.close(fd)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert stderr.splitlines() == ["interrupted; re-run the same command to resume"] and stdout == ""
    assert not (out / "custom" / layout.LOCK).exists() and not (out / "custom" / "manifest.json").exists()

    fifo.unlink()
    fifo.write_bytes(data)
    assert cli.main(argv) == 0
    manifest = out / "custom" / "manifest.json"
    before = (manifest.read_bytes(), manifest.stat().st_mtime_ns)
    capsys.readouterr()

    def no_beam(*a, **k):
        raise AssertionError("a complete dataset started a Beam job")

    monkeypatch.setattr(writer, "_run_beam", no_beam)
    t0 = time.time()
    assert cli.main(argv) == 0
    assert f"already complete: {out / 'custom'} ({len(ids)} images" in capsys.readouterr().out
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns) == before and time.time() - t0 < 30


def test_ctrl_c_in_a_command_that_does_not_resume_says_interrupted(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("keras_iqa.commands.models.run", interrupted)
    assert cli.main(["models"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_two_train_runs_on_one_s3_out_refuse_each_other(s3):
    from keras_iqa.training.out_dir import LOCK_FILE, claim_output

    fs.configure(s3["args"])
    out = f"s3://{BUCKET}/train-run"
    with claim_output(out, "train reqa", {}) as state:
        assert state == "new" and json.loads(fs.read_bytes(f"{out}/{LOCK_FILE}"))["pid"] == os.getpid()
        with pytest.raises(fs.LockedError, match="another run is writing here"):
            with claim_output(out, "train reqa", {}):
                pass
    assert not fs.exists(f"{out}/{LOCK_FILE}")
