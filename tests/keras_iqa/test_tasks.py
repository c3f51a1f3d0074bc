"""The task layer (issue 23): the task registry behind `keras-iqa train`, the shared backbone-weights rule and test-time
contract (tasks/base.py), the one `evaluate` with its one error rule (tasks/evaluate.py), the REQA / HCL tasks' config
checks and dispatch, and the old import paths."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import warnings

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras_iqa
from keras_iqa.tasks import TASKS, get_task, task_names
from keras_iqa.tasks.base import resolve_backbone_weights, set_test_contract
from keras_iqa.tasks.evaluate import evaluate, metrics_of


def _linear():
    """score = x[:, 0] (a one-weight Dense): predictions we know exactly."""
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="ones", use_bias=False)])


X = np.stack([np.arange(8, dtype="float32"), np.zeros(8, "float32")], axis=1)


def test_registry_drives_the_train_command():
    from keras_iqa.cli import build_parser
    from keras_iqa.commands import train

    assert task_names() == tuple(TASKS) == train.METHODS == ("reqa", "metaiqa", "hcl")
    assert get_task("reqa").name == "reqa" and get_task("hcl").name == "hcl"
    with pytest.raises(KeyError, match="unknown training task 'nope'; known: reqa, metaiqa, hcl"):
        get_task("nope")
    # every registered task has its CLI adapter under `keras-iqa train`
    sub = next(a for a in build_parser()._subparsers._group_actions if "train" in a.choices).choices["train"]
    methods = next(a for a in sub._subparsers._group_actions)
    assert set(methods.choices) == set(TASKS)


def test_old_import_paths_are_the_task_objects():
    import keras_iqa.commands.train_reqa as CR
    import keras_iqa.tasks.hcl as TH
    import keras_iqa.tasks.reqa as TR
    import keras_iqa.training.hcl as OH
    from keras_iqa.training import hcl_callbacks

    assert CR.REQATrainConfig is TR.REQATrainConfig is get_task("reqa").config_cls
    assert CR.build_model is TR.build_model and CR.PRESETS is TR.PRESETS and CR.train_data is TR.build_inputs
    assert OH.HCLTrainConfig is TH.HCLTrainConfig is get_task("hcl").config_cls
    assert OH.run_all is TH.run_all and OH.fit_finetune is TH.fit_finetune and OH.init_synthetic is TH.init_synthetic
    assert OH.GroupLRSchedule is hcl_callbacks.GroupLRSchedule


def test_backbone_weights_rule_is_one_rule():
    from keras_iqa.registry import get_card

    for full, tiny in (("reqa", "reqa-tiny"), ("metaiqa", "metaiqa-tiny")):
        assert resolve_backbone_weights("auto", get_card(full).config()) == "imagenet"
        assert resolve_backbone_weights("auto", get_card(tiny).config()) is None
        assert resolve_backbone_weights(None, get_card(full).config()) is None
        assert resolve_backbone_weights("/my/preset", get_card(tiny).config()) == "/my/preset"
    # the REQA task applies it: a tiny card trains from random init
    from keras_iqa.tasks.reqa import REQATrainConfig, build_model

    m = build_model(REQATrainConfig(model="reqa-tiny", resize=[80, 96], eval_crops=3, eval_mode="grid"))
    assert m.backbone_weights is None
    assert (m.test_resize, m.test_crops, m.crop_policy) == ((80, 96), 3, "grid")


def test_set_test_contract():
    m = keras_iqa.create_model("reqa-tiny")
    card = (m.test_crops, m.crop_policy)
    assert set_test_contract(m) is m and (m.test_crops, m.crop_policy, m.test_resize) == (*card, None)  # None keeps the card's
    set_test_contract(m, resize=96, eval_crops=5, eval_mode="random")
    assert (m.test_resize, m.test_crops, m.crop_policy) == (96, 5, "random")
    set_test_contract(m, resize=[100, 120], eval_crops=25, eval_mode="resize")  # one pass over the whole image
    assert (m.test_resize, m.test_crops, m.crop_policy) == ((100, 120), 1, "resize")


def test_evaluate_batches_datasets_and_predictions_csv(tmp_path):
    model, y = _linear(), 3.0 * X[:, 0] + 1.0
    ds = tf.data.Dataset.from_tensor_slices((X, y)).batch(3)  # 3 batches, the last one short
    out = evaluate(model, ds, predictions_csv=tmp_path / "p.csv")
    m = out["metrics"]
    assert m["n"] == 8 and m["srocc"] == pytest.approx(1.0) and m["plcc"] == pytest.approx(1.0) and "error" not in m
    assert m["rmse_raw"] == pytest.approx(float(np.sqrt(np.mean((X[:, 0] - y) ** 2))))
    df = pd.read_csv(tmp_path / "p.csv")
    np.testing.assert_allclose(df["pred"], X[:, 0])
    np.testing.assert_allclose(df["target"], y)
    # a list of (x, y) batches and one (x, y) tuple give the same numbers
    assert evaluate(model, [(X[:4], y[:4]), (X[4:], y[4:])])["metrics"]["plcc"] == pytest.approx(1.0)
    fine = evaluate(model, (X, y), fine=True, mos_range=(0.0, 30.0))["fine_grained"]
    assert sum(b["n"] for b in fine["bins"]) == 8  # REQA's per-range report over the same predictions


@pytest.mark.parametrize("case", ["two_images", "constant_pred", "constant_mos", "nan_target", "empty"])
def test_evaluate_one_error_rule_nan_and_reason_never_a_crash(case):
    model = _linear()
    x, y = {"two_images": (X[:2], [1.0, 2.0]),
            "constant_pred": (np.zeros_like(X), np.arange(8.0)),
            "constant_mos": (X, np.full(8, 3.0)),
            "nan_target": (X, np.r_[np.arange(7.0), np.nan]),
            "empty": (X[:0], np.zeros(0))}[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # reported in "error", not as a warning
        m = evaluate(model, [(x, np.asarray(y, "float32"))] if len(x) else [])["metrics"]
    assert m["n"] == len(x) and np.isnan(m["srocc"]) and np.isnan(m["plcc"]) and np.isnan(m["krocc"])
    assert isinstance(m["error"], str) and m["error"]
    if case == "constant_pred":
        assert "constant" in m["error"] and m["mae"] == pytest.approx(3.5)  # raw errors still reported
    assert metrics_of(np.arange(5.0), np.arange(5.0))["srocc"] == pytest.approx(1.0)


def test_failed_metrics_gives_nan_correlations_the_reason_and_raw_errors():
    """`failed_metrics`: NaN correlations, `error` = the reason given, raw RMSE / MAE (keras_iqa.metrics) equal to their
    numpy definitions where the pairs allow, NaN where they do not; `evaluate` reports the same values."""
    from keras_iqa.metrics import mae, rmse
    from keras_iqa.tasks.evaluate import failed_metrics

    pred, target = np.array([10.0, 12.5, 40.0]), np.array([20.0, 11.0, 35.0])
    m = failed_metrics(3, "too few images", pred, target)
    assert m["n"] == 3 and m["error"] == "too few images"
    assert all(np.isnan(m[k]) for k in ("srocc", "krocc", "plcc", "rmse"))
    want_rmse, want_mae = float(np.sqrt(np.mean((pred - target) ** 2))), float(np.mean(np.abs(pred - target)))
    assert m["rmse_raw"] == pytest.approx(want_rmse, rel=1e-12) and m["mae"] == pytest.approx(want_mae, rel=1e-12)
    assert m["rmse_raw"] == rmse(pred, target, params=None) and m["mae"] == mae(pred, target)
    for bad in (failed_metrics(0, "no images"), failed_metrics(3, "x", pred, target[:2]),
                failed_metrics(3, "x", pred, np.r_[target[:2], np.nan])):
        assert np.isnan(bad["rmse_raw"]) and np.isnan(bad["mae"]) and np.isnan(bad["srocc"]) and bad["error"]
    # through evaluate: two images (too few for correlations) and constant predictions
    model = _linear()
    two = evaluate(model, (X[:2], np.array([1.0, 5.0], "float32")))["metrics"]
    assert two["n"] == 2 and np.isnan(two["srocc"]) and "3" in two["error"]
    assert two["rmse_raw"] == pytest.approx(np.sqrt(np.mean((X[:2, 0] - [1.0, 5.0]) ** 2)), rel=1e-12)
    assert two["mae"] == pytest.approx(np.mean(np.abs(X[:2, 0] - [1.0, 5.0])), rel=1e-12)
    y = np.arange(8.0) * 2 + 1
    flat = evaluate(model, (np.zeros_like(X), y.astype("float32")))["metrics"]
    assert np.isnan(flat["plcc"]) and "constant" in flat["error"]
    assert flat["rmse_raw"] == pytest.approx(np.sqrt(np.mean(y ** 2)), rel=1e-12)
    assert flat["mae"] == pytest.approx(np.mean(y), rel=1e-12)


def test_evaluate_reader_uses_the_test_time_contract(tmp_path):
    from data_pipeline.fixtures import write_tiny_records
    from data_pipeline.input import RecordReader

    write_tiny_records(str(tmp_path / "data"), kind="authentic", n=12, size=(40, 48))
    reader = RecordReader(str(tmp_path / "data"), split="split_00", subset="test", target="normalized100")
    model = set_test_contract(keras_iqa.create_model("reqa-tiny", crop_size=32, pool_size=1), eval_crops=2)
    out = evaluate(model, reader, fine=True, predictions_csv=tmp_path / "p.csv")
    df = pd.read_csv(tmp_path / "p.csv")
    assert out["metrics"]["n"] == len(df) == reader.count and set(df.columns) >= {"image_id", "target", "pred"}
    assert "fine_grained" in out and (df["target"].between(0, 100)).all()
    # num_crops overrides the contract's count without changing the model
    evaluate(model, reader, num_crops=1)
    assert model.test_crops == 2


def test_reqa_config_checks_name_the_fix():
    from keras_iqa.tasks.reqa import REQATrainConfig, check_replica_batches, validate

    with pytest.raises(ValueError, match=r"sampler='mini' is not one of .* \(set sampler=\.\.\.\)"):
        validate(REQATrainConfig(sampler="mini"))
    with pytest.raises(ValueError, match="batch_size=16 is not a multiple of 5"):
        validate(REQATrainConfig(sampler="batch", batch_size=16))
    assert validate(REQATrainConfig(sampler="batch", batch_size=16, coarse="official")).batch_size == 16
    with pytest.raises(ValueError, match=r"\(use micro_batches=2\)"):
        check_replica_batches(REQATrainConfig(micro_batches=3, distribute="mirrored"), 2)


def test_hcl_train_dispatch_checks_before_any_work(tmp_path):
    from keras_iqa.tasks import hcl

    cfg = hcl.HCLTrainConfig()
    with pytest.raises(ValueError, match="stage='finetune' needs exactly one data='DIR'"):
        hcl.train(cfg, str(tmp_path / "o"), stage="finetune", data=["a", "b"])
    with pytest.raises(ValueError, match="stage='restoration' needs pairs='DIR'"):
        hcl.train(cfg, str(tmp_path / "o"), stage="restoration")
    with pytest.raises(ValueError, match="unknown HCL stage 'warmup'"):
        hcl.train(cfg, str(tmp_path / "o"), stage="warmup")
    with pytest.raises(ValueError, match="stage='all' takes ONE authentic data='DIR'"):
        hcl.train(cfg, str(tmp_path / "o"), stage="all", data=["a", "b"])
    assert not (tmp_path / "o").exists()
    res = {"restoration": {"holdout": {"psnr_gain": 1.0}}, "finetune": {"test": {"srocc": 0.5}}}
    assert hcl.stage_summary("all", res) == {"restoration": {"psnr_gain": 1.0}, "finetune": {"srocc": 0.5}}
