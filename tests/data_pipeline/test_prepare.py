"""`keras-iqa prepare` on tiny official layouts (Beam DirectRunner in-process), rejects, resume, records read back."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data_pipeline import fixtures, schema
from data_pipeline.beam import writer
from data_pipeline.input import RecordReader
from data_pipeline.sources import get_source
from keras_iqa.cli import main

CSV_ARGS = ["--option", "csv=scores.csv", "--option", "image_dir=photos", "--option", "image_column=file",
            "--option", "score_column=score", "--option", "score_range=1,10", "--option", "split_column=split"]


def _prepare(name, root, out, *extra):
    return main(["prepare", name, "--root", str(root), "--out", str(out), "--num-splits", "3", "--quiet", *extra])


def _records(data_dir, kind):
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, "records-*.tfrecord")))
    spec = schema.feature_spec(kind)
    return [tf.io.parse_single_example(x, spec) for x in tf.data.TFRecordDataset(files)]


def test_prepare_every_dataset_and_read_back(tmp_path):
    out = tmp_path / "out"
    for name, make in fixtures.LAYOUTS.items():
        root = tmp_path / name
        info = make(str(root))
        assert _prepare(name, root, out, *(CSV_ARGS if name == "csv" else [])) == 0, name
        src = get_source(name)(str(root), **({} if name != "csv" else {
            "csv": "scores.csv", "image_dir": "photos", "image_column": "file", "score_column": "score",
            "score_range": "1,10", "split_column": "split"}))
        d = out / src.name
        m = json.loads((d / "manifest.json").read_text())
        assert m["count"] == len(info["ids"]) and not m["rejects"], name
        assert m["kind"] == src.kind and m["schema_version"] == schema.SCHEMA_VERSION
        assert m["score_range"] == list(src.score_range) and m["higher_better"] == src.higher_better
        assert sum(s["count"] for s in m["shards"]) == m["count"]
        for s in m["shards"]:
            assert writer.sha256_file(str(d / s["file"])) == s["sha256"]
        # records hold the adapter's ids and scores
        rows = {r["id"]: r for r in src.rows()[0]}
        recs = _records(str(d), m["kind"])
        assert sorted(r["image/id"].numpy().decode() for r in recs) == sorted(info["ids"])
        for r in recs:
            row = rows[r["image/id"].numpy().decode()]
            mos = float(r["score/mos"])
            if name == "kadis700k":
                assert math.isnan(mos)
                continue
            assert mos == pytest.approx(row["mos"], rel=1e-5)
            norm = schema.normalize_score(row["mos"], src.score_range, src.higher_better)
            assert float(r["score/normalized"]) == pytest.approx(norm, abs=1e-6)
        # splits
        table = np.genfromtxt(d / "splits.csv", delimiter=",", dtype=str)
        header, body = list(table[0]), table[1:]
        assert header[:4] == ["image_id", "split_00", "split_01", "split_02"]
        assert sorted(body[:, 0]) == sorted(info["ids"])
        if m["kind"] == "synthetic":
            ref = {i: rows[i]["reference"] for i in rows}
            for k in (1, 2, 3):
                train = {ref[i] for i, s in zip(body[:, 0], body[:, k]) if s == "train"}
                test = {ref[i] for i, s in zip(body[:, 0], body[:, k]) if s == "test"}
                assert train and test and not train & test, name
        if name in ("koniq10k", "csv"):
            assert header[-1] == "official" and set(body[:, -1]) <= {"train", "validation", "test"}
    # one of them trains straight away through the reader
    r = RecordReader(str(out / "koniq10k"), split="official", subset="train", target="normalized100")
    x, y = next(iter(r.train_dataset(2, crop_size=16, seed=0)))
    assert x.shape == (2, 16, 16, 3) and r.count == 4


def test_original_bytes_kept_and_other_formats_converted_losslessly(tmp_path):
    fixtures.make_csv_folder(str(tmp_path))
    img = fixtures.content_image(5, (20, 28))
    Image.fromarray(img).save(tmp_path / "photos" / "scan.tif")
    with open(tmp_path / "scores.csv", "a") as f:
        f.write("scan.tif,5.0,train\n")
    assert _prepare("csv", tmp_path, tmp_path / "out", *CSV_ARGS) == 0
    recs = {r["image/id"].numpy().decode(): r for r in _records(str(tmp_path / "out" / "custom"), "authentic")}
    png = recs["photo_1.png"]
    assert png["image/encoded"].numpy() == (tmp_path / "photos" / "photo_1.png").read_bytes()
    tif = recs["scan.tif"]
    assert tif["image/format"].numpy() == b"png"
    np.testing.assert_array_equal(tf.io.decode_png(tif["image/encoded"]).numpy(), img)


def test_spaq_short_side_resize(tmp_path):
    fixtures.make_spaq(str(tmp_path), size=(48, 64))
    assert _prepare("spaq", tmp_path, tmp_path / "out", "--option", "short_side=24") == 0
    recs = _records(str(tmp_path / "out" / "spaq"), "authentic")
    assert {(int(r["image/height"]), int(r["image/width"])) for r in recs} == {(24, 32)}
    assert {r["image/format"].numpy() for r in recs} == {b"png"}


def test_rejects_bad_files_and_rows(tmp_path, capsys):
    info = fixtures.make_koniq10k(str(tmp_path))
    img_dir = tmp_path / "1024x768"
    data = (img_dir / info["ids"][0]).read_bytes()
    (img_dir / info["ids"][0]).write_bytes(data[: len(data) // 3])  # truncated JPEG
    (img_dir / info["ids"][1]).write_bytes(b"<html>not an image</html>")  # non-image file
    os.remove(img_dir / info["ids"][2])  # missing file
    csv = tmp_path / "koniq10k_scores_and_distributions.csv"
    lines = csv.read_text().splitlines()
    cells = lines[4].split(",")
    cells[-1] = "nan"  # NaN MOS_zscore in file row 5 (image 4)
    lines[4] = ",".join(cells)
    lines.append(lines[5])  # duplicate of image 5
    csv.write_text("\n".join(lines) + "\n")
    assert main(["prepare", "koniq10k", "--root", str(tmp_path), "--out", str(tmp_path / "out"), "--num-splits", "2"]) == 0
    m = json.loads((tmp_path / "out" / "koniq10k" / "manifest.json").read_text())
    assert m["count"] == 8 - 4
    reasons = {os.path.basename(r["path"]): r["reason"] for r in m["rejects"]}
    assert len(m["rejects"]) == 5
    assert "cannot decode" in reasons[info["ids"][0]] or "truncated" in reasons[info["ids"][0]].lower()
    assert "cannot decode" in reasons[info["ids"][1]]
    assert "image file not found" in reasons[info["ids"][2]] and "row 4" in reasons[info["ids"][2]]
    assert "score is nan" in reasons[info["ids"][3]] and "row 5" in reasons[info["ids"][3]]
    assert any("duplicate image id" in r["reason"] for r in m["rejects"])
    err = capsys.readouterr().err
    assert "rejected" in err and info["ids"][1] in err
    ids = [r["image/id"].numpy().decode() for r in _records(str(tmp_path / "out" / "koniq10k"), "authentic")]
    assert sorted(ids) == sorted(info["ids"][4:])


def test_nothing_usable_exits_nonzero(tmp_path, capsys):
    fixtures.make_bid(str(tmp_path), n=2)
    for f in tmp_path.glob("*.JPG"):
        f.unlink()
    assert main(["prepare", "bid", "--root", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no usable image" in capsys.readouterr().err
    assert main(["prepare", "nosuchset", "--root", str(tmp_path), "--out", str(tmp_path / "out")]) == 2


class _Crash(BaseException):
    """Stands for the process being killed (not an Exception, so the writer does not turn it into a reject)."""


class _Flaky:
    def __init__(self, fail_at):
        self.fail_at, self.calls = fail_at, 0

    def __call__(self, row):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise _Crash()
        yield from fixtures._tiny_examples(row, kind="authentic", size=(16, 16), dataset="t")


def _on_disk(out):
    """Shard files and sidecars in `out` (anything named records-*)."""
    return sorted(f for f in os.listdir(out) if f.startswith("records-"))


def test_resume_after_interrupted_run_every_image_exactly_once(tmp_path):
    rows = fixtures._tiny_rows("authentic", 20, 1, 1, 0)
    out = str(tmp_path)
    with pytest.raises(_Crash):  # dies in the 3rd of 4 shards (5 rows each)
        writer.write_records(rows, _Flaky(13), out, "authentic", "t", (0, 100), True, num_shards=4, runner=None)
    sidecars = [f for f in _on_disk(out) if f.endswith(writer.SIDECAR)]
    shards = [f for f in _on_disk(out) if f.endswith(".tfrecord")]
    # two complete shards with their sidecars; the third object was left mid-write, without one; no manifest
    assert [writer.parse_shard_name(f[: -len(writer.SIDECAR)])[0] for f in sidecars] == [0, 1]
    assert [writer.parse_shard_name(f)[0] for f in shards] == [0, 1, 2] and "manifest.json" not in os.listdir(out)
    # corrupt one completed shard (its size no longer matches the sidecar): it must be rewritten, the other one reused
    with open(os.path.join(out, shards[0]), "ab") as f:
        f.write(b"garbage")
    flaky = _Flaky(None)
    m = writer.write_records(rows, flaky, out, "authentic", "t", (0, 100), True, num_shards=4, runner="DirectRunner")
    assert m["writer"]["shards_reused"] == 1 and m["writer"]["shards_written"] == 3 and m["count"] == 20
    assert m["shards"][1]["file"] == shards[1] and shards[0] not in {s["file"] for s in m["shards"]}
    ids = [r["image/id"].numpy().decode() for r in _records(out, "authentic")]
    assert sorted(ids) == sorted(r["id"] for r in rows)  # exactly once
    # only what the manifest lists is left: the corrupt shard and the one killed mid-write were deleted
    listed = sorted(s["file"] for s in m["shards"])
    assert _on_disk(out) == sorted(listed + [f + writer.SIDECAR for f in listed])
    assert not any(".tmp-" in f for f in os.listdir(out))
    for s in m["shards"]:  # the workers' checksums and sizes, never re-read by the driver, match the files
        assert writer.sha256_file(os.path.join(out, s["file"])) == s["sha256"]
        assert os.path.getsize(os.path.join(out, s["file"])) == s["bytes"]
    # a third run finds it complete and writes nothing; a changed shard count rewrites and removes the stale shards
    m = writer.write_records(rows, flaky, out, "authentic", "t", (0, 100), True, num_shards=4, runner=None)
    assert m["already_complete"] and sorted(s["file"] for s in m["shards"]) == listed
    m = writer.write_records(rows, flaky, out, "authentic", "t", (0, 100), True, num_shards=3, runner=None)
    assert [writer.parse_shard_name(f)[:2] for f in _on_disk(out) if f.endswith(".tfrecord")] == [(i, 3) for i in range(3)]
    assert sorted(r["image/id"].numpy().decode() for r in _records(out, "authentic")) == sorted(r["id"] for r in rows)


def test_prepare_help_teaches():
    with pytest.raises(SystemExit) as e:
        main(["prepare", "--help"])
    assert e.value.code == 0
