"""REQA micro-batch samplers (`RecordReader.reqa_microbatches`): "balanced" (each ACR bin 1/5 of every batch, rare bins
resampled) vs "pass" (one pass over the training images per epoch, each image once)."""

import numpy as np
import pytest

from data_pipeline import fixtures
from data_pipeline.input import RecordReader, acr_bins

C = 16


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    # 20 images, qualities in [0, 0.59]: no Good / Excellent images, so the balanced sampler must resample
    d = str(tmp_path_factory.mktemp("skewed"))
    fixtures.write_tiny_records(d, kind="authentic", n=20, size=(24, 28), quality_range=(0.0, 0.59), seed=4)
    return d


def _epochs(ds, steps, epochs):
    it = ds.as_numpy_iterator()
    return [[next(it)[1] for _ in range(steps)] for _ in range(epochs)]


def test_pass_sampler_sees_each_image_once_per_epoch(skewed):
    r = RecordReader(skewed, target="normalized100")
    every = np.sort(r.index()["normalized"] * 100.0)
    assert len(np.unique(every)) == 20  # targets identify images
    steps = 20 // 10  # M = 2: batches of 10
    epochs = _epochs(r.reqa_microbatches(2, crop_size=C, seed=0, epoch="pass"), steps, 3)
    orders = []
    for ep in epochs:
        ys = np.concatenate(ep)
        np.testing.assert_allclose(np.sort(ys), every, rtol=1e-5)  # each image exactly once in the epoch
        orders.append(ys)
        for batch in ep:  # each micro-batch: one image of each fifth of its batch, low to high
            groups = batch.reshape(2, 5)
            assert np.all(np.diff(groups, axis=1) > 0)
            ranks = np.argsort(np.argsort(batch)).reshape(2, 5)
            np.testing.assert_array_equal(np.sort(ranks // 2, axis=0), np.tile(np.arange(5), (2, 1)))
    assert not np.allclose(orders[0], orders[1])  # reshuffled every pass
    assert r.bin_counts[3:] == [0, 0]


def test_balanced_sampler_resamples_rare_bins(skewed):
    r = RecordReader(skewed, target="normalized100")
    counts = np.bincount(acr_bins(r.index()["normalized"] * 100.0), minlength=5)
    ys = np.concatenate(_epochs(r.reqa_microbatches(2, crop_size=C, seed=0), 2, 1)[0])
    got = np.bincount(acr_bins(ys), minlength=5)
    # every batch is 1/5 per (source) bin: bin 2 stands in for the empty bins 3 and 4, whatever the bin sizes are
    assert got[0] == got[1] == 4 and got[2] == 12 and counts[2] < 12 + 1
    assert len(np.unique(ys)) < len(ys)  # so one "epoch" of n // 5M steps repeats images of the small bins


def test_sampler_epoch_is_checked(skewed):
    with pytest.raises(ValueError, match="balanced"):
        RecordReader(skewed, target="normalized100").reqa_microbatches(2, crop_size=C, epoch="once")
