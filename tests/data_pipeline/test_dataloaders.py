"""The parts of the reader (`data_pipeline.dataloaders`): Decoder and Parser used directly give the reader's tensors;
the Decoder knows every feature key of the schema; a record that is not a tf.Example is skipped, never fatal."""

import os

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import fixtures, schema
from data_pipeline.dataloaders import FIELDS, Decoder, Parser
from data_pipeline.input import RecordReader
from data_pipeline.test_time import TestTimeCrops

C = 24
NOT_AN_EXAMPLE = b"\x07\x07 not a tf.Example"  # wire type 7: no proto parses it


@pytest.fixture(scope="module")
def auth(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("auth"))
    fixtures.write_tiny_records(d, kind="authentic", n=12, size=(36, 44), num_shards=2, seed=1)
    return d


def test_decoder_knows_every_schema_key():
    assert set(FIELDS.values()) == set(schema.keys("pair"))
    for kind in schema.KINDS:
        assert set(Decoder(kind).spec) == set(schema.keys(kind))
    rec = schema.make_example("pair", {"image/id": "d.png", "reference/id": "r.png", "reference/encoded": b"xy",
                                       "score/pseudo": 0.5, "distortion/level": 3}).SerializeToString()
    d = Decoder("pair").decode(rec)
    assert d["id"].numpy() == b"d.png" and d["reference_id"].numpy() == b"r.png" and d["reference_encoded"].numpy() == b"xy"
    assert float(d["pseudo"]) == 0.5 and int(d["distortion_level"]) == 3 and np.isnan(d["mos"].numpy())
    # a field the records lack decodes to its default
    assert int(Decoder("authentic", fields=("distortion_type",)).decode(rec)["distortion_type"]) == -1
    with pytest.raises(ValueError, match="unknown decoder fields"):
        Decoder("authentic", fields=("score",))
    with pytest.raises(ValueError, match="record kind"):
        Decoder("video")
    with pytest.raises(tf.errors.InvalidArgumentError):
        Decoder("authentic").decode(tf.constant(NOT_AN_EXAMPLE))


def test_decoder_and_parser_give_the_readers_tensors(auth):
    r = RecordReader(auth, target="normalized100")
    decoder, parser = Decoder("authentic"), Parser("normalized100")
    # train: the reader's (record, seed) stream through Decoder + Parser by hand == train_dataset, crop for crop
    for resize in (None, 40):
        by_hand = [parser.parse_train_data(decoder.decode(x), rnd, C, resize, True)
                   for x, rnd in r.records(None, shuffle=False, repeat=False, seed=3)]
        got = list(r.train_dataset(1, crop_size=C, resize=resize, shuffle=False, seed=3).as_numpy_iterator())
        assert len(got) == len(by_hand) == 12
        for (img, y, ok), (x1, y1) in zip(by_hand, got):
            assert bool(ok)
            np.testing.assert_array_equal(img.numpy(), x1[0])
            np.testing.assert_array_equal(y.numpy(), y1[0])
    # eval: the contract's crops of each record, by image id
    contract = TestTimeCrops(crop_size=C, num_crops=5, policy="grid")
    by_id = {}
    for x in tf.data.TFRecordDataset(r.files):
        crops, y, image_id, ok = parser.parse_eval_data(decoder.decode(x), contract)
        by_id[image_id.numpy()] = (crops.numpy(), y.numpy())
    got = list(r.eval_dataset(contract=contract).as_numpy_iterator())
    assert len(got) == len(by_id) == 12
    for crops, y, image_id in got:
        np.testing.assert_array_equal(crops, by_id[image_id][0])
        np.testing.assert_array_equal(y, by_id[image_id][1])


def test_parser_targets():
    rec = schema.make_example("authentic", {"score/mos": 3.0, "score/normalized": 0.25, "score/pseudo": 0.75})
    d = Decoder("authentic").decode(rec.SerializeToString())
    got = {t: float(Parser(t).target_of(d)) for t in ("mos", "normalized", "normalized100", "pseudo")}
    assert got == {"mos": 3.0, "normalized": 0.25, "normalized100": 25.0, "pseudo": 0.75}
    with pytest.raises(ValueError, match="target=None"):
        Parser(None, source="data/x").target_of(d)
    with pytest.raises(ValueError, match="target must be one of"):
        Parser("zscore")


def _append_garbage(shard):
    """Rewrites `shard` with a record that is not a tf.Example (valid TFRecord framing and CRC) after its first record."""
    records = [bytes(x) for x in tf.data.TFRecordDataset(shard).as_numpy_iterator()]
    with tf.io.TFRecordWriter(shard) as w:
        for i, x in enumerate(records):
            w.write(x)
            if i == 0:
                w.write(NOT_AN_EXAMPLE)
    return len(records)


def test_a_record_that_is_not_an_example_is_skipped(tmp_path):
    from keras_iqa.evaluation.protocols import read_metadata

    man = fixtures.write_tiny_records(str(tmp_path), kind="synthetic", n=10, size=(24, 24), num_shards=1, seed=2)
    shard = os.path.join(str(tmp_path), man["shards"][0]["file"])
    before = read_metadata(str(tmp_path))
    assert _append_garbage(shard) == 10
    meta = read_metadata(str(tmp_path))  # only the bad record is lost, not its batch
    assert len(meta) == 10 and meta.equals(before)
    assert (meta.distortion_type > 0).all() and (meta.reference_id != "").all()
    cols = Decoder("synthetic").scan([shard], batch_size=4)
    assert len(cols["id"]) == 10 and cols["id"].tolist() == meta.image_id.tolist()
    r = RecordReader(str(tmp_path))
    assert len(list(r.eval_dataset(num_crops=1, crop_size=16).as_numpy_iterator())) == 10 and r.bad_records == 1
    for f in r.files:  # no sidecar: the index scans the records with the Decoder and skips the bad one too
        os.remove(f + ".meta.json")
    assert sorted(RecordReader(str(tmp_path)).index()["id"].tolist()) == sorted(meta.image_id)
