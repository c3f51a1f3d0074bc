"""Batch scoring on Beam (`keras-iqa score --runner`, `keras_iqa.scoring.batch`): the same scores as `keras-iqa score`,
per-item errors as rows, sharded output committed by a manifest, and a job on S3 (moto on 127.0.0.1) SIGKILLed after its
first shard, then resumed: every input scored exactly once."""

import collections
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import keras_iqa
from data_pipeline import fs
from keras_iqa.cli import main
from keras_iqa.scoring.batch import read_shard, shard_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A saved reqa-tiny model and a folder of 8 small photos of different sizes plus one broken file."""
    root = tmp_path_factory.mktemp("batch")
    keras_iqa.create_model("reqa-tiny").save(root / "model.keras")
    folder = root / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        img = rng.integers(0, 256, (48 + 5 * i, 64 + 3 * i, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / (f"p{i}.png" if i % 2 else f"p{i}.jpg"), quality=90)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    return root


def _rows(out) -> list:
    manifest = json.loads(fs.read_text(fs.join(out, "manifest.json")))
    return [r for s in manifest["shards"] for r in read_shard(fs.join(out, s["name"]))], manifest


def test_pipeline_scores_equal_keras_iqa_score_and_errors_are_rows(photos, tmp_path, capsys):
    model, folder = str(photos / "model.keras"), photos / "photos"
    table = tmp_path / "one.csv"
    assert main(["score", model, str(folder), "--scores", str(table)]) == 0
    with open(table) as f:
        expected = {r["path"]: float(r["score"]) for r in csv.DictReader(f)}
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in sorted(expected)[:3]) + "# a comment\n")
    out = tmp_path / "scores"
    rc = main(["score", model, str(folder), f"@{listing}", "--runner", "DirectRunner", "--out", str(out),
               "--num-shards", "3", "--batch-size", "3"])
    assert rc == 0, capsys.readouterr().err
    rows, manifest = _rows(out)
    assert len(rows) == 9 and manifest["rows"] == 9 and manifest["failed"] == 1  # the list repeats 3 folder files
    assert list(csv.DictReader(open(out / manifest["shards"][0]["name"])).fieldnames) == \
        ["path", "score", "score_normalized", "out_of_range", "crops", "error"]
    for s in manifest["shards"]:  # each input in the shard of its path's hash bucket
        assert {f"scores-{shard_of(r['path'], 3):05d}-of-00003.csv" for r in read_shard(str(out / s["name"]))} == \
            {s["name"]}
    for r in rows:
        name = r["path"]
        if name.endswith("broken.jpg"):
            assert r["score"] is None and "cannot decode" in r["error"]
        else:
            assert r["error"] == "" and r["crops"] > 0
            np.testing.assert_allclose(r["score"], expected[name], rtol=1e-5)
    # the same command again: everything is committed, nothing is scored twice
    assert main(["score", model, str(folder), f"@{listing}", "--runner", "DirectRunner", "--out", str(out)]) == 0
    again, manifest = _rows(out)
    assert manifest["scored_now"] == 0 and sorted(r["path"] for r in again) == sorted(r["path"] for r in rows)
    capsys.readouterr()
    assert main(["score", model, str(folder), "--runner", "DirectRunner", "--out", str(out), "--num-shards", "5"]) != 0
    assert "already holds shards of 3" in capsys.readouterr().err  # another shard count would split inputs anew


def test_missing_model_is_one_line_before_any_worker(photos, tmp_path, capsys):
    rc = main(["score", str(tmp_path / "nosuch.keras"), str(photos / "photos"), "--runner", "DirectRunner",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc != 0 and "nosuch.keras does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_without_runner_out_is_refused(photos, capsys):
    assert main(["score", str(photos / "model.keras"), str(photos / "photos"), "--out", "x"]) != 0
    assert "--runner" in capsys.readouterr().err


def test_killed_job_on_s3_resumes_with_nothing_scored_twice_or_lost(photos, moto_s3):
    """Model, images and output on S3; the job SIGKILLed once its first shard is committed, then run again."""
    client, bucket = moto_s3["client"], moto_s3["bucket"]
    for f in sorted((photos / "photos").iterdir()):
        client.upload_file(str(f), bucket, f"in/{f.name}")
    client.upload_file(str(photos / "model.keras"), bucket, "models/model.keras")  # each worker copies it
    src, out = f"s3://{bucket}/in", f"s3://{bucket}/out"
    names = sorted(f"{src}/{f.name}" for f in (photos / "photos").iterdir())
    assert len({shard_of(n, 4) for n in names}) >= 2  # more than one shard, so a kill after the first leaves work
    cmd = [sys.executable, "-m", "keras_iqa.cli", "score", f"s3://{bucket}/models/model.keras", src, "--runner", "DirectRunner",
           "--out", out, "--num-shards", "4", "--batch-size", "2", *[f"--pipeline-arg={a}" for a in moto_s3["args"]]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run(cmd, env={**env, "KERAS_IQA_KILL_SCORE": "1"}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    fs.configure(moto_s3["args"])
    left = [n for n in fs.listdir(out) if n.startswith("scores-")]
    assert len(left) == 1 and not fs.exists(f"{out}/manifest.json")  # one shard committed, the job not
    first = {r["path"] for r in read_shard(f"{out}/{left[0]}")}
    assert main(cmd[3:]) == 0  # the same command, resumed (in this process: a second interpreter start saved)
    rows, manifest = _rows(out)
    assert manifest["scored_now"] == len(names) - len(first)
    assert collections.Counter(r["path"] for r in rows) == collections.Counter(names)  # each input exactly once
    assert [r["path"] for r in rows if r["error"]] == [f"{src}/broken.jpg"]
