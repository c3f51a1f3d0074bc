"""Loss functions against hand-computed values (REQA Eq. 9-14, official RankLoss1, batch PLCC)."""

import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from keras_iqa import losses as L


def _f(x):
    return float(np.asarray(x))


def test_batch_plcc_matches_numpy_and_is_differentiable():
    rng = np.random.default_rng(0)
    t, p = rng.normal(size=12).astype("float32"), rng.normal(size=12).astype("float32")
    assert _f(L.batch_plcc(t, p)) == pytest.approx(np.corrcoef(t, p)[0, 1], abs=1e-5)
    assert _f(L.batch_plcc(t, 3 * t + 2)) == pytest.approx(1.0, abs=1e-5)
    assert _f(L.plcc_loss(t, -t)) == pytest.approx(2.0, abs=1e-5)
    assert _f(L.batch_plcc(t, np.ones_like(t))) == 0.0  # constant prediction: 0, not NaN
    v = tf.Variable(p)
    with tf.GradientTape() as tape:
        loss = L.plcc_loss(tf.constant(t), v)
    g = tape.gradient(loss, v).numpy()
    assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0


def test_coarse_loss_hand_computed_micro_batch():
    s = np.array([10.0, 30.0, 50.0, 70.0, 90.0], "float32")
    p = np.array([20.0, 10.0, 50.0, 60.0, 95.0], "float32")
    # hand computation of Eq. 10-12 over the 10 pairs i<j
    total = 0.0
    for i, j in itertools.combinations(range(5), 2):
        ds, dp = s[i] - s[j], p[i] - p[j]
        rank = max(0.0, -ds * dp / (abs(ds) + 1e-4)) * (abs(ds) + 1)
        total += rank + abs(abs(ds) - abs(dp))
    # pair (0,1): discordant: ds=-20, dp=10 -> rank = 200/20.0001*21 ~ 210; grad |20-10| = 10
    assert _f(L.reqa_coarse_loss(s, p)) == pytest.approx(total, rel=1e-5)
    # two micro-batches: mean of the per-micro-batch sums; pairs never cross micro-batches
    s2 = np.concatenate([s, s[::-1]])
    p2 = np.concatenate([p, s[::-1]])  # second micro-batch perfect -> 0
    assert _f(L.reqa_coarse_loss(s2, p2)) == pytest.approx(total / 2, rel=1e-5)
    assert _f(L.reqa_coarse_loss(s, s)) == pytest.approx(0.0, abs=1e-4)


def test_coarse_loss_perfectly_reversed_value():
    s = np.arange(5, dtype="float32")
    # pairs at distance d: rank = d^2/d * (d+1) = d(d+1), counts 4,3,2,1 -> 8 + 18 + 24 + 20 = 70; gradient terms 0
    assert _f(L.reqa_coarse_loss(s, s[::-1].copy())) == pytest.approx(70.0, rel=1e-4)


def test_official_rank_loss_all_pairs():
    s = np.array([1.0, 2.0, 4.0], "float32")
    p = np.array([3.0, 1.0, 5.0], "float32")
    b = len(s)
    total = 0.0
    for i in range(b):
        for j in range(b):
            ds, dp = s[i] - s[j], p[i] - p[j]
            m = -dp * ds
            total += max(0.0, m / (abs(dp) + 1e-4)) + max(0.0, m / (abs(ds) + 1e-4))
    val = _f(L.reqa_rank_loss_official(s, p))
    assert val == pytest.approx(total / b ** 2, rel=1e-5)
    # only pair (0,1) is discordant (ds=-1, dp=2): counted twice, each ~ |ds| + |dp| = 3
    assert val == pytest.approx(2 * 3.0 / 9, rel=1e-3)


def test_fine_loss_thresholds():
    s = np.array([50.0, 50.0, 50.0, 50.0], "float32")
    p = np.array([50.0, 53.0, 44.0, 60.0], "float32")  # |err| = 0, 3, 6, 10
    assert _f(L.reqa_fine_loss(s, p, 5.0)) == pytest.approx((0 + 0 + 1 + 5) / 4)
    assert _f(L.reqa_fine_loss(s, p, 2.5)) == pytest.approx((0 + 0.5 + 3.5 + 7.5) / 4)
    assert _f(L.reqa_fine_loss(s, p, 0.0)) == pytest.approx((0 + 3 + 6 + 10) / 4)


def test_loss_terms_and_total():
    s = np.array([10.0, 30.0, 50.0, 70.0, 90.0], "float32")
    preds = [s + 1.0, s + 6.0, s - 3.0, s + 2.0]
    terms = [_f(t) for t in L.reqa_loss_terms(s, preds)]
    assert terms[0] == pytest.approx(0.0, abs=1e-3)  # shifted predictions keep every pairwise difference
    assert terms[1:] == pytest.approx([1.0, 0.5, 2.0])  # thresholds 5, 2.5, 0
    w = [0.25, 0.125, 0.25, 0.375]
    assert _f(L.reqa_total_loss(L.reqa_loss_terms(s, preds), w)) == pytest.approx(sum(a * b for a, b in zip(w, terms)), rel=1e-5)
    off = L.reqa_loss_terms(s, np.stack(preds), coarse="official")
    assert len(off) == 4
    assert L.fine_thresholds(2) == [0.0] and L.fine_thresholds(5) == [5.0, 2.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="coarse"):
        L.reqa_loss_terms(s, preds, coarse="bogus")
