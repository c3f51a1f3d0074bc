"""keras_iqa.metrics against scipy and hand-computed values, logistic fits on planted parameters, Keras epoch metrics."""

import warnings

import numpy as np
import pytest
from scipy import stats

from keras_iqa import metrics as M

TIES_P = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 4.0, 4.0, 9.0])
TIES_M = np.array([2.0, 1.0, 3.0, 3.0, 6.0, 5.0, 4.0, 8.0])


def test_hand_computed_small_case():
    # perfectly reversed ranks: SROCC = KROCC = -1; PLCC of (1,2,3) vs (3,2,1) = -1
    assert M.srocc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert M.krocc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert M.plcc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # one swap among 4: concordant 5, discordant 1 -> tau = 4/6; rho = 1 - 6*2/(4*15) = 0.8
    assert M.krocc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert M.srocc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # hand PLCC: x=(0,1,2), y=(0,1,5): cov = 5, var_x = 2, var_y = 14 (centred sums) -> 5/sqrt(28)
    assert M.plcc([0, 1, 2], [0, 1, 5]) == pytest.approx(5 / np.sqrt(28))
    assert M.rmse([1, 2, 3], [1, 2, 5], params=None) == pytest.approx(np.sqrt(4 / 3))
    assert M.mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3)


def test_ties_match_scipy():
    assert M.srocc(TIES_P, TIES_M) == pytest.approx(stats.spearmanr(TIES_P, TIES_M)[0])
    assert M.krocc(TIES_P, TIES_M) == pytest.approx(stats.kendalltau(TIES_P, TIES_M)[0])  # tau-b
    assert M.plcc(TIES_P, TIES_M) == pytest.approx(stats.pearsonr(TIES_P, TIES_M)[0])
    # tau-b differs from tau-a when there are ties: make sure we are not computing tau-a
    n = len(TIES_P)
    i, j = np.triu_indices(n, 1)
    tau_a = np.sum(np.sign(TIES_P[i] - TIES_P[j]) * np.sign(TIES_M[i] - TIES_M[j])) / (n * (n - 1) / 2)
    assert abs(M.krocc(TIES_P, TIES_M) - tau_a) > 1e-3


@pytest.mark.parametrize("seed", [0, 1])
def test_random_against_scipy(seed):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=200)
    m = np.round(p + rng.normal(size=200), 1)  # rounding creates ties in the MOS
    assert M.srocc(p, m) == pytest.approx(stats.spearmanr(p, m)[0], abs=1e-12)
    assert M.krocc(p, m) == pytest.approx(stats.kendalltau(p, m)[0], abs=1e-12)
    assert M.plcc(p, m) == pytest.approx(stats.pearsonr(p, m)[0], abs=1e-12)


@pytest.mark.parametrize("bad, msg", [
    (([1, 2, np.nan, 4], [1, 2, 3, 4]), "non-finite.*index 2"),
    (([1, 2, 3], [1, 2, 3, 4]), "3 values but mos has 4"),
    (([1, 2], [1, 2]), "at least 3"),
    (([5, 5, 5, 5], [1, 2, 3, 4]), "pred is constant"),
    (([1, 2, 3, 4], [7, 7, 7, 7]), "mos is constant"),
])
def test_invalid_inputs_raise_clear_errors(bad, msg):
    for fn in (M.srocc, M.krocc, M.plcc, M.plcc_logistic, lambda p, m: M.evaluate_predictions(p, m, constant_pred="raise")):
        with pytest.raises(M.MetricInputError, match=msg):
            fn(*bad)


def test_evaluate_predictions_collapsed_model_and_few_images():
    with pytest.warns(RuntimeWarning, match="pred is constant"):
        r = M.evaluate_predictions([5, 5, 5, 5], [1, 2, 3, 4])
    assert np.isnan(r["srocc"]) and np.isnan(r["plcc_logistic5"]) and r["mae"] == pytest.approx(2.5) and "error" in r
    r = M.evaluate_predictions([1, 2, 4, 3], [1, 2, 3, 4])  # 4 images: too few for either logistic fit
    assert r["srocc"] == pytest.approx(0.8) and np.isnan(r["plcc_logistic4"]) and not r["logistic5"]["ok"]
    assert np.isnan(r["rmse"])
    with pytest.raises(M.MetricInputError, match="mos is constant"):
        M.evaluate_predictions([1, 2, 3], [7, 7, 7])


def test_logistic5_recovers_planted_parameters():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 400)
    true = [60.0, 8.0, 0.4, 5.0, 20.0]
    y = M.logistic5(x, *true) + rng.normal(0, 0.2, x.size)
    fit = M.fit_logistic(x, y, 5)
    assert fit.ok
    np.testing.assert_allclose(fit.params, true, rtol=0.05)
    assert M.plcc_logistic(x, y, 5) > 0.999 > M.plcc(x, y)


def test_logistic4_recovers_planted_parameters_on_any_scale():
    rng = np.random.default_rng(1)
    x = rng.uniform(-300, 500, 400)  # the model's scale must not matter (standardised internally)
    true = [90.0, 10.0, 120.0, 60.0]
    y = M.logistic4(x, *true) + rng.normal(0, 0.3, x.size)
    fit = M.fit_logistic(x, y, 4)
    assert fit.ok
    np.testing.assert_allclose(fit.params, true, rtol=0.05)
    # decreasing relation (e.g. a distortion score against MOS): the fit follows the sign
    fit_dec = M.fit_logistic(-x, y, 4)
    assert fit_dec.ok and M.plcc(fit_dec(-x), y) > 0.999


def test_logistic_failure_warns_and_falls_back_to_linear(monkeypatch):
    def boom(z, m, params, u, v):  # every candidate's residuals non-finite
        return np.full(np.atleast_1d(u).shape, np.nan), np.zeros((np.atleast_1d(u).size, 3 if params == 5 else 2))

    monkeypatch.setattr(M, "_vp_sse", boom)
    x = np.arange(10.0)
    y = 2 * x + 1
    with pytest.warns(M.LogisticFitWarning, match="linear"):
        fit = M.fit_logistic(x, y, 5)
    assert not fit.ok
    np.testing.assert_allclose(fit(x), y)
    with pytest.warns(M.LogisticFitWarning):
        assert M.plcc_logistic(x, y) == pytest.approx(M.plcc(x, y))


def test_evaluate_predictions_keys_and_values():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 100)
    m = 100 * p ** 2 + rng.normal(0, 2, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", M.LogisticFitWarning)
        r = M.evaluate_predictions(p, m)
    assert r["n"] == 100
    assert r["srocc"] == pytest.approx(stats.spearmanr(p, m)[0])
    assert r["rmse"] == pytest.approx(r["rmse_logistic5"]) and r["rmse"] < r["rmse_raw"]
    assert r["plcc_logistic5"] >= r["plcc"] - 1e-9
    assert r["logistic5"]["ok"] and len(r["logistic4"]["params"]) == 4


def test_keras_metrics_accumulate_over_epoch_in_fit():
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    s, p = M.SROCC(), M.PLCC()
    # eager: two update calls == scipy over the concatenation (not a mean of per-batch values)
    s.update_state(TIES_M[:3], TIES_P[:3])
    s.update_state(TIES_M[3:], TIES_P[3:])
    p.update_state(tf.constant(TIES_M), tf.constant(TIES_P))
    assert float(s.result()) == pytest.approx(stats.spearmanr(TIES_P, TIES_M)[0], abs=1e-6)
    assert float(p.result()) == pytest.approx(stats.pearsonr(TIES_P, TIES_M)[0], abs=1e-6)
    s.reset_state()
    assert np.isnan(float(s.result()))
    # in fit / evaluate (graph mode): equals scipy on model.predict over the whole set
    x = np.random.default_rng(0).uniform(0, 1, (50, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], "float32") + np.round(x[:, 0], 1)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)])
    model.compile("adam", "mse", metrics=[M.SROCC(), M.PLCC()])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    res = model.evaluate(x, y, batch_size=7, return_dict=True, verbose=0)
    pred = model.predict(x, verbose=0).reshape(-1)
    assert res["srocc"] == pytest.approx(stats.spearmanr(pred, y)[0], abs=1e-5)
    assert res["plcc"] == pytest.approx(stats.pearsonr(pred, y)[0], abs=1e-5)
    cfg = M.SROCC(capacity=100, output_index=2).get_config()
    assert M.SROCC.from_config(cfg).capacity == 100


def test_keras_metric_multi_output_column_and_capacity_error():
    import tensorflow as tf

    yp = np.stack([np.zeros(5), np.arange(5.0)[::-1], np.arange(5.0)], 1)
    m = M.SROCC(output_index=-1)
    m.update_state(np.arange(5.0), yp)
    assert float(m.result()) == pytest.approx(1.0)
    m1 = M.SROCC(output_index=1)
    m1.update_state(np.arange(5.0), yp)
    assert float(m1.result()) == pytest.approx(-1.0)
    small = M.PLCC(capacity=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="capacity=4"):
        small.update_state(np.arange(5.0), np.arange(5.0))
