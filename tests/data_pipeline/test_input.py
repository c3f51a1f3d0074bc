"""Readers and samplers of data_pipeline.input on tiny prepared datasets (write_tiny_records, no Beam)."""

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import fixtures, schema
from data_pipeline.beam.writer import write_records
from data_pipeline.images import decode_image_tensor
from data_pipeline.input import (RecordReader, _offsets, acr_bins, multi_dataset,
                                 nearest_nonempty, quantile_bins)

C = 24  # crop size for tests


@pytest.fixture(scope="module")
def auth(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("auth"))
    fixtures.write_tiny_records(d, kind="authentic", n=20, size=(40, 56), seed=1)
    return d


@pytest.fixture(scope="module")
def auth_bad(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("auth_bad"))
    fixtures.write_tiny_records(d, kind="authentic", n=12, size=(32, 40), n_bad=2, seed=2)
    return d


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("syn"))
    fixtures.write_tiny_records(d, kind="synthetic", n=40, size=(32, 40), n_types=2, n_refs=4, seed=3)
    return d


def _ids(reader, **kw):
    return [i.decode() for _, _, i in reader.eval_dataset(num_crops=1, crop_size=C, **kw).as_numpy_iterator()]


def test_train_dataset_shapes_range_and_determinism(auth):
    r = RecordReader(auth, subset="train")
    ds = r.train_dataset(4, crop_size=C, seed=7)
    a = [(x, y) for x, y in ds.as_numpy_iterator()]
    b = [(x, y) for x, y in ds.as_numpy_iterator()]  # second epoch: reshuffled, recropped
    assert len(a) == r.count // 4 and r.count == 16
    x, y = a[0]
    assert x.shape == (4, C, C, 3) and x.dtype == np.float32 and y.shape == (4,)
    assert x.min() >= 0 and x.max() <= 255 and x.max() > 1  # [0, 255], not [0, 1]
    again = [(x, y) for x, y in r.train_dataset(4, crop_size=C, seed=7).as_numpy_iterator()]
    for (x1, y1), (x2, y2) in zip(a, again):  # same seed, fresh dataset: identical
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert any(not np.array_equal(p[0], q[0]) for p, q in zip(a, b))  # epochs differ
    # every train image once per epoch
    ys = np.sort(np.concatenate([y for _, y in r.train_dataset(1, crop_size=C, seed=1).as_numpy_iterator()]))
    idx = r.index()
    np.testing.assert_allclose(ys, np.sort(idx["mos"]), rtol=1e-6)


def test_split_filter_train_test_disjoint(auth):
    tr = set(_ids(RecordReader(auth, subset="train", split="split_01")))
    te = set(_ids(RecordReader(auth, subset="test", split="split_01")))
    assert len(tr) == 16 and len(te) == 4 and not tr & te
    assert tr | te == set(_ids(RecordReader(auth)))
    with pytest.raises(ValueError, match="split_99"):
        RecordReader(auth, split="split_99", subset="train")


def test_targets(auth):
    r_mos = RecordReader(auth, target="mos")
    r_n = RecordReader(auth, target="normalized")
    r_100 = RecordReader(auth, target="normalized100")
    m = np.array([y for _, y, _ in r_mos.eval_dataset(num_crops=1, crop_size=C).as_numpy_iterator()])
    n = np.array([y for _, y, _ in r_n.eval_dataset(num_crops=1, crop_size=C).as_numpy_iterator()])
    h = np.array([y for _, y, _ in r_100.eval_dataset(num_crops=1, crop_size=C).as_numpy_iterator()])
    np.testing.assert_allclose(n, m / 100.0, rtol=1e-5)  # tiny authentic scale is 0-100
    np.testing.assert_allclose(h, n * 100, rtol=1e-5)
    with pytest.raises(ValueError, match="pseudo"):
        RecordReader(auth, target="pseudo")
    with pytest.raises(ValueError, match="target"):
        RecordReader(auth, target="bogus")


def test_jpeg_crop_window_decode_matches_full_decode(auth):
    r = RecordReader(auth)
    raw = next(iter(tf.data.TFRecordDataset(r.files)))
    p = tf.io.parse_single_example(raw, schema.feature_spec("authentic"))
    assert p["image/format"].numpy() == b"jpeg"
    full = tf.cast(decode_image_tensor(p["image/encoded"]), tf.float32)
    for s in range(5):
        seed = tf.constant([s, 11], tf.int64)
        fast, ok = r.parser.random_crop(p["image/encoded"], p["image/height"], p["image/width"], seed, C, None, False)
        oy, ox = _offsets(seed, p["image/height"] - C, p["image/width"] - C)
        np.testing.assert_array_equal(fast.numpy(), full[oy:oy + C, ox:ox + C].numpy())
        assert bool(ok)
    # resize-first path still gives valid crops
    img, ok = r.parser.random_crop(p["image/encoded"], p["image/height"], p["image/width"], tf.constant([1, 2], tf.int64),
                                    C, 30, True)
    assert img.shape == (C, C, 3) and bool(ok)


def test_small_images_are_upsampled_not_dropped(auth):
    r = RecordReader(auth)
    x, y = next(iter(r.train_dataset(2, crop_size=64, seed=0)))  # images are 40x56 < 64
    assert x.shape == (2, 64, 64, 3)


def test_bad_records_counted_and_skipped(auth_bad):
    r = RecordReader(auth_bad)
    out = list(r.eval_dataset(num_crops=2, crop_size=C).as_numpy_iterator())
    assert len(out) == 10 and r.bad_records == 2
    n = sum(x.shape[0] for x, _ in r.train_dataset(1, crop_size=C, seed=0).as_numpy_iterator())
    assert n == 10 and r.bad_records == 4


def test_eval_modes(auth):
    r = RecordReader(auth)
    grid = list(r.eval_dataset(num_crops=6, crop_size=C, mode="grid").take(2).as_numpy_iterator())
    crops, y, image_id = grid[0]
    assert crops.shape == (6, C, C, 3)
    raw = next(iter(tf.data.TFRecordDataset(r.files)))
    full = decode_image_tensor(tf.io.parse_single_example(raw, schema.feature_spec("authentic"))["image/encoded"]).numpy()
    np.testing.assert_array_equal(crops[0], full[:C, :C])  # grid starts at the top-left corner
    np.testing.assert_array_equal(crops[-1], full[-C:, -C:])  # and ends at the bottom-right one (2 x 3 grid)
    a = [c for c, _, _ in r.eval_dataset(num_crops=4, crop_size=C, mode="random", seed=3).as_numpy_iterator()]
    b = [c for c, _, _ in r.eval_dataset(num_crops=4, crop_size=C, mode="random", seed=3).as_numpy_iterator()]
    c = [c for c, _, _ in r.eval_dataset(num_crops=4, crop_size=C, mode="random", seed=4).as_numpy_iterator()]
    assert all(np.array_equal(p, q) for p, q in zip(a, b)) and not all(np.array_equal(p, q) for p, q in zip(a, c))
    res = next(iter(r.eval_dataset(crop_size=C, mode="resize")))[0]
    assert res.shape == (1, C, C, 3)
    with pytest.raises(ValueError, match="crop policy"):
        r.eval_dataset(mode="center")


def test_crop_helpers():
    from data_pipeline.test_time import TestTimeCrops, extract_crops

    img = tf.reshape(tf.range(10 * 12 * 1), [10, 12, 1])
    offs = TestTimeCrops(crop_size=4, num_crops=4, policy="grid").offsets(10, 12)
    np.testing.assert_array_equal(offs[:, 0], [0, 0, 6, 6])
    np.testing.assert_array_equal(offs[:, 1], [0, 8, 0, 8])
    crops = extract_crops(img, tf.constant(offs[:, 0], tf.int32), tf.constant(offs[:, 1], tf.int32), 4).numpy()
    np.testing.assert_array_equal(crops[3], img.numpy()[6:10, 8:12])


def test_bins_and_fallback():
    np.testing.assert_array_equal(acr_bins([0, 19.9, 20, 59, 80, 100]), [0, 0, 1, 2, 4, 4])
    qb = quantile_bins(np.arange(10.0))
    np.testing.assert_array_equal(np.bincount(qb), [2, 2, 2, 2, 2])
    assert nearest_nonempty([3, 0, 2, 0, 0]) == [0, 0, 2, 2, 2]
    assert nearest_nonempty([0, 1, 0, 1, 0]) == [1, 1, 1, 3, 3]  # ties go to the lower bin
    with pytest.raises(ValueError, match="empty"):
        nearest_nonempty([0] * 5)


def test_reqa_microbatches_one_image_per_bin(auth):
    r = RecordReader(auth, target="normalized100")
    for x, y in r.reqa_microbatches(3, crop_size=C, seed=0).take(2).as_numpy_iterator():
        assert x.shape == (15, C, C, 3) and y.shape == (15,)
        for g in y.reshape(3, 5):
            np.testing.assert_array_equal(acr_bins(g), [0, 1, 2, 3, 4])
    assert r.bin_counts == [4, 4, 4, 4, 4]
    rq = RecordReader(auth, target="mos", subset="train")
    for _, y in rq.reqa_microbatches(2, crop_size=C, bins="quantile", seed=1).take(2).as_numpy_iterator():
        for g in y.reshape(2, 5):
            assert np.all(np.diff(g) > 0)  # equal-count bins, low to high


def test_reqa_empty_bin_falls_back_to_nearest(tmp_path):
    fixtures.write_tiny_records(str(tmp_path), kind="authentic", n=15, size=(32, 32), quality_range=(0.0, 0.59))
    r = RecordReader(str(tmp_path), target="normalized100")
    x, y = next(iter(r.reqa_microbatches(2, crop_size=C, seed=0)))
    assert r.bin_counts[3:] == [0, 0] and r.bin_sources == [0, 1, 2, 2, 2]
    for g in y.numpy().reshape(2, 5):
        np.testing.assert_array_equal(acr_bins(g), [0, 1, 2, 2, 2])


def test_metaiqa_tasks(syn):
    r = RecordReader(syn)
    tasks = r.metaiqa_tasks(batch_size=4, crop_size=C, seed=5)
    assert [t["type"] for t in tasks] == [1, 2] and tasks[0]["name"] == "type01"
    idx = r.index()
    for t in tasks:
        sup, qry = set(t["support_ids"]), set(t["query_ids"])
        assert not sup & qry and sup | qry == set(idx["id"][idx["type"] == t["type"]])
        assert t["support_count"] == 16 and t["query_count"] == 4  # 80/20 of 20 images per type
        xs = [x for x, y in t["support"].as_numpy_iterator()]
        assert sum(len(x) for x in xs) == 16 and xs[0].shape[1:] == (C, C, 3)
        assert sum(len(y) for _, y in t["query"].as_numpy_iterator()) == 4
    again = r.metaiqa_tasks(batch_size=4, crop_size=C, seed=5, query_mode="resize")
    assert again[0]["support_ids"] == tasks[0]["support_ids"]
    assert next(iter(again[0]["query"]))[0].shape == (4, C, C, 3)
    assert r.metaiqa_tasks(batch_size=4, crop_size=C, seed=6)[0]["support_ids"] != tasks[0]["support_ids"]


def _identical_pair(row):
    img = fixtures.content_image(row["seed"], (30, 36))
    enc = fixtures.encode(img, "png")
    fields = {"image/encoded": enc, "image/format": "png", "image/height": 30, "image/width": 36, "image/id": row["id"],
              "distortion/type": 1, "distortion/level": 1, "reference/id": "r", "reference/encoded": enc, "score/pseudo": 1.0}
    yield row["id"], schema.make_example("pair", fields).SerializeToString()


def test_pair_dataset_same_crop(tmp_path):
    rows = [{"id": f"p{i}", "seed": i} for i in range(6)]
    write_records(rows, _identical_pair, str(tmp_path), "pair", "pairs", (0, 1), True, num_shards=1, runner=None,
                  manifest_extra={"pseudo_label": "none"}, splits=None)
    r = RecordReader(str(tmp_path), target="pseudo")
    n = 0
    for d, ref in r.pair_dataset(3, crop_size=C, seed=0).as_numpy_iterator():
        np.testing.assert_array_equal(d, ref)  # identical images + the same crop/flip => identical crops
        assert d.shape == (3, C, C, 3)
        n += len(d)
    assert n == 6
    with pytest.raises(ValueError, match="MOS"):
        RecordReader(str(tmp_path), target="mos")


def test_pair_dataset_needs_pair_records(auth):
    with pytest.raises(ValueError, match="pair"):
        RecordReader(auth).pair_dataset(2)


def test_multi_dataset_batches_from_one_dataset(auth, syn):
    readers = [RecordReader(auth), RecordReader(syn)]
    seen = []
    for (x, ids), y in multi_dataset(readers, 4, crop_size=C, seed=0).take(12).as_numpy_iterator():
        assert x.shape == (4, C, C, 3) and len(set(ids.tolist())) == 1
        lo, hi = (0, 100) if ids[0] == 0 else (1, 5)
        assert np.all((y >= lo) & (y <= hi))
        seen.append(int(ids[0]))
    assert set(seen) == {0, 1}
    with pytest.raises(ValueError, match="sampling"):
        multi_dataset(readers, 4, sampling="weighted")


def test_missing_dataset_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="keras-iqa prepare"):
        RecordReader(str(tmp_path))


def test_crop_window_and_full_decode_pipelines_agree(auth):
    fast = RecordReader(auth, subset="test")
    full = RecordReader(auth, subset="test", jpeg_crop_window=False)
    a = list(fast.train_dataset(2, crop_size=C, seed=9).as_numpy_iterator())
    b = list(full.train_dataset(2, crop_size=C, seed=9).as_numpy_iterator())
    assert len(a) == len(b) == 2
    for (x1, y1), (x2, y2) in zip(a, b):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_corrupt_shard_is_survived_and_detected(tmp_path):
    man = fixtures.write_tiny_records(str(tmp_path), n=10, size=(24, 24), num_shards=2)
    shard = tmp_path / man["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2: len(data) // 2 + 40] = bytes(40)
    shard.write_bytes(bytes(data))
    r = RecordReader(str(tmp_path))
    n = len(list(r.eval_dataset(num_crops=1, crop_size=16).as_numpy_iterator()))
    assert 5 <= n < 10  # the intact shard fully, the corrupt one up to its bad record
    assert r.verify_shards() == [str(shard)]
