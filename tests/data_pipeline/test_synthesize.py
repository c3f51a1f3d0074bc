"""`keras-iqa synthesize` end to end: Beam pipeline on two pristine images -> synthetic + pair datasets, splits, resume."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from data_pipeline import distortions as D
from data_pipeline import pristine
from data_pipeline.beam import synthesize as S
from keras_iqa import cli

TYPES = (1, 10, 13)


@pytest.fixture(scope="module")
def pristine_dir(tmp_path_factory):
    """Two small pristine photos (PNG and JPEG) in a folder."""
    d = tmp_path_factory.mktemp("pristine")
    Image.fromarray(np.ascontiguousarray(pristine.load_embedded("astronaut")[60:108, 180:244])).save(d / "astro.png")
    Image.fromarray(np.ascontiguousarray(pristine.load_embedded("coffee")[100:148, 200:264])).save(d / "cup.jpg", quality=95)
    return d


def _read(data_dir, kind):
    import tensorflow as tf

    from data_pipeline.schema import feature_spec

    files = sorted(tf.io.gfile.glob(os.path.join(str(data_dir), "records-*.tfrecord")))
    out = {}
    for raw in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(raw, feature_spec(kind))
        rec = {k: (v.numpy().decode() if v.dtype == tf.string and k not in ("image/encoded", "reference/encoded") else v.numpy())
               for k, v in ex.items()}
        out[rec["image/id"]] = rec
    return out


@pytest.fixture(scope="module")
def cli_run(pristine_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("records")
    argv = ["synthesize", "--pristine", str(pristine_dir), "--out", str(out), "--name", "syn", "--types",
            ",".join(map(str, TYPES)), "--levels", "1-5", "--seed", "3", "--pseudo-label", "ssim", "--num-splits", "3",
            "--train-ratio", "0.5"]
    rc = cli.main(argv)
    return rc, out, argv


def test_cli_end_to_end(cli_run, pristine_dir):
    import io

    rc, out, _ = cli_run
    assert rc == 0
    man = json.loads((out / "syn" / "manifest.json").read_text())
    pman = json.loads((out / "syn_pairs" / "manifest.json").read_text())
    assert man["kind"] == "synthetic" and pman["kind"] == "pair"
    assert man["count"] == pman["count"] == 2 * len(TYPES) * 5 and not man["rejects"]
    assert man["pseudo_label"] == "ssim" and man["generator"]["types"] == list(TYPES) and man["generator"]["seed"] == 3
    assert man["writer"]["runner"] == "DirectRunner"
    recs = _read(out / "syn", "synthetic")
    refs = {"astro": np.asarray(Image.open(pristine_dir / "astro.png")), "cup": np.asarray(Image.open(pristine_dir / "cup.jpg"))}
    assert set(recs) == {S.image_id(r, t, lv) for r in refs for t in TYPES for lv in range(1, 6)}
    for iid, rec in recs.items():
        assert math.isnan(rec["score/mos"]) and math.isnan(rec["score/normalized"])
        assert rec["distortion/name"] == D.NAMES[rec["distortion/type"]] and 1 <= rec["distortion/level"] <= 5
        assert rec["image/format"] == "png" and (rec["image/height"], rec["image/width"]) == (48, 64)
        pix = np.asarray(Image.open(io.BytesIO(rec["image/encoded"])))
        ref = refs[rec["reference/id"]]
        # lossless and deterministic: recomputing the distortion gives the stored pixels
        t, lv = int(rec["distortion/type"]), int(rec["distortion/level"])
        np.testing.assert_array_equal(pix, D.distort(ref, t, lv, S._rng(3, rec["reference/id"], t, lv)))
        assert rec["score/pseudo"] == pytest.approx(D.ssim(pix, ref), abs=1e-6)
    # the pseudo label falls with the level for a monotone type
    s = [recs[S.image_id("cup", 1, lv)]["score/pseudo"] for lv in range(1, 6)]
    assert s[0] > s[4] and all(b <= a + 1e-6 for a, b in zip(s, s[1:]))
    pairs = _read(out / "syn_pairs", "pair")
    assert set(pairs) == set(recs)
    for iid, rec in pairs.items():
        ref_pix = np.asarray(Image.open(io.BytesIO(rec["reference/encoded"])).convert("RGB"))
        np.testing.assert_array_equal(ref_pix, refs[rec["reference/id"]])
        assert rec["image/encoded"] == recs[iid]["image/encoded"]


def test_splits_grouped_by_reference(cli_run):
    import pandas as pd

    _, out, _ = cli_run
    for name in ("syn", "syn_pairs"):
        df = pd.read_csv(out / name / "splits.csv")
        assert list(df.columns) == ["image_id", "split_00", "split_01", "split_02"]
        ref = df.image_id.str.rsplit("_", n=2).str[0]
        for col in ("split_00", "split_01", "split_02"):
            per_ref = df.groupby(ref)[col].nunique()
            assert (per_ref == 1).all(), f"{name} {col}: a reference is on both sides"
            assert set(df[col]) == {"train", "test"}


def test_pairs_reuse_the_synthetic_records(cli_run, pristine_dir):
    """The pair pass streams the synthetic shard instead of distorting again, and gives the same records as distorting."""
    import tensorflow as tf

    from data_pipeline.schema import feature_spec

    _, out, _ = cli_run
    calls = []

    class Counting(S.DistortedExamples):
        def __call__(self, row):
            calls.append(row["id"])
            return super().__call__(row)

    fallback = Counting("pair", "syn_pairs", "ssim", seed=3)
    rows = S.plan(pristine.sources(str(pristine_dir)), list(TYPES), [1, 2, 3, 4, 5], seed=3,
                  settings=S.settings(3, "ssim"))
    shards = json.loads((out / "syn" / "manifest.json").read_text())["shards"]
    assert len(shards) == 1
    rows = [dict(r, shard_file=shards[0]["file"]) for r in rows]  # the shard the manifest committed
    import pickle

    plain = S.DistortedExamples("pair", "syn_pairs", "ssim", seed=3)
    reuse = pickle.loads(pickle.dumps(S.PairsFromSynthetic(str(out / "syn"), "syn_pairs", plain)))  # as Beam ships it
    reuse.fallback = fallback
    got = [ex for r in rows for ex in reuse(r)]
    assert calls == [] and len(got) == 30
    want = [ex for r in rows for ex in fallback(r)]
    spec = feature_spec("pair")
    for (i1, a), (i2, b) in zip(got, want):
        assert i1 == i2
        pa, pb = tf.io.parse_single_example(a, spec), tf.io.parse_single_example(b, spec)
        for k in spec:
            va, vb = pa[k].numpy(), pb[k].numpy()
            assert va == vb or (isinstance(va, np.floating) and np.isnan(va) and np.isnan(vb)), (i1, k)
    calls.clear()
    assert len(list(S.PairsFromSynthetic(str(out / "nope"), "syn_pairs", fallback)(rows[0]))) == 5 and calls == [rows[0]["id"]]


def test_rerun_reuses_shards(cli_run, capsys):
    rc, out, argv = cli_run
    before = json.loads((out / "syn" / "manifest.json").read_text())
    capsys.readouterr()
    assert cli.main(argv + ["--runner", "inline"]) == 0  # the same plan, complete: nothing is written again
    said = capsys.readouterr().out
    assert f"synthetic: already complete: {out / 'syn'}" in said and f"pair: already complete: {out / 'syn_pairs'}" in said
    assert json.loads((out / "syn" / "manifest.json").read_text()) == before
    # more split columns: every shard is reused, the manifest and splits.csv are written again
    assert cli.main(argv + ["--runner", "inline", "--num-splits", "4"]) == 0
    after = json.loads((out / "syn" / "manifest.json").read_text())
    assert after["writer"]["shards_reused"] == len(after["shards"]) >= 1 and after["splits"]["num_splits"] == 4
    assert [s["sha256"] for s in after["shards"]] == [s["sha256"] for s in before["shards"]]
    # another seed changes the records: nothing is reused
    assert cli.main(argv + ["--runner", "inline", "--seed", "4"]) == 0
    again = json.loads((out / "syn" / "manifest.json").read_text())
    assert again["writer"]["shards_reused"] == 0 and again["generator"]["seed"] == 4


def test_per_image_types_and_bad_files(pristine_dir, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(pristine_dir, src)
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    man = S.synthesize(str(src), tmp_path / "out", name="k", types="all", levels="2", per_image_types=2, seed=1,
                       runner=None)
    syn = man["synthetic"]
    # the pair pass skips the rejected rows in the synthetic shard and pairs every other record
    assert man["pair"]["count"] == syn["count"] and len(man["pair"]["rejects"]) == len(syn["rejects"])
    assert set(_read(tmp_path / "out" / "k_pairs", "pair")) == set(_read(tmp_path / "out" / "k", "synthetic"))
    man = S.synthesize(str(src), tmp_path / "out2", name="k", types="1", levels="2", runner=None, pairs=False)
    assert man["pair"] is None and not (tmp_path / "out2" / "k_pairs").exists()
    assert syn["count"] == 2 * 2 and syn["statistics"]["references"] == 2
    assert len(syn["rejects"]) == 2 and all("broken.jpg" in r["path"] for r in syn["rejects"])
    recs = _read(tmp_path / "out" / "k", "synthetic")
    for ref in ("astro", "cup"):
        assert len({r["distortion/type"] for r in recs.values() if r["reference/id"] == ref}) == 2
    assert all(math.isnan(r["score/pseudo"]) for r in recs.values())
    # nothing readable: non-zero exit with the reason
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"\x89PNG broken")
    assert cli.main(["synthesize", "--pristine", str(bad), "--out", str(tmp_path / "o2"), "--types", "1", "--levels", "1",
                     "--runner", "inline"]) == 1


def test_cli_preview_help_and_errors(tmp_path, capsys):
    assert cli.main(["synthesize", "--preview", str(tmp_path / "sheet.png"), "--types", "1,9", "--levels", "1,5",
                     "--preview-size", "24", "--preview-work-size", "32"]) == 0
    assert Image.open(tmp_path / "sheet.png").size[1] == 14 + 2 * 26
    assert cli.main(["synthesize"]) == 2  # neither --out nor --preview
    assert cli.main(["synthesize", "--out", str(tmp_path), "--types", "99"]) == 2
    assert cli.main(["synthesize", "--pristine", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "unknown distortion" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["synthesize", "--help"])
    assert e.value.code == 0
    assert "Examples:" in capsys.readouterr().out


def test_readers_consume_the_generated_data(cli_run):
    """The generated datasets feed the training readers: pseudo-label targets, MetaIQA tasks per type, HCL pairs."""
    from data_pipeline.input import RecordReader

    _, out, _ = cli_run
    reader = RecordReader(str(out / "syn"), split="split_00", subset="train", target="pseudo")
    x, y = next(iter(reader.train_dataset(4, crop_size=32, shuffle=False)))
    assert x.shape == (4, 32, 32, 3) and np.all((y.numpy() > 0) & (y.numpy() <= 1))
    tasks = RecordReader(str(out / "syn"), target="pseudo").metaiqa_tasks(batch_size=4, crop_size=32)
    assert [t["type"] for t in tasks] == list(TYPES) and tasks[1]["name"] == "JPEG"
    d, r = next(iter(RecordReader(str(out / "syn_pairs"), target="pseudo").pair_dataset(2, crop_size=32, seed=0)))
    assert d.shape == r.shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match=r"carries a MOS.*target='pseudo'.*'ssim'"):  # not NaN targets
        RecordReader(str(out / "syn"), target="mos")
