"""REQA: shapes (every T and Table V ablation), curriculum boundaries, two learning rates, training reduces the loss,
`.keras` round trip, the CLI on a tiny prepared dataset, and one full-size (224, ResNet-50) forward shape check."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_iqa
from keras_iqa.layers.feedback import FeedbackBlock
from keras_iqa.layers.transformer import QualityTransformer
from keras_iqa.models.reqa import REQA
from keras_iqa.training.curriculum import PAPER_STAGES, CurriculumSchedule, lr_at, official_head_lr, stage_weights
from run_checks import check_metrics, check_test_metrics

X = np.random.default_rng(0).uniform(0, 255, (10, 64, 64, 3)).astype("float32")
Y = np.tile(np.array([10.0, 30.0, 50.0, 70.0, 90.0], "float32"), 2)


def _ds(steps):
    return tf.data.Dataset.from_tensors((X, Y)).repeat(steps)


@pytest.mark.parametrize("over", [dict(steps=2), dict(steps=3), dict(steps=5), dict(feedback=False), dict(transformer=False),
                                  dict(feedback=False, transformer=False)])
def test_shapes_every_T_and_ablation(over):
    m = keras_iqa.create_model("reqa-tiny", **over)
    out = np.asarray(m(X[:2]))
    t = over.get("steps", 4)
    assert out.shape == (2, t)
    assert np.all(out >= 0)  # final ReLU x 10
    assert np.asarray(m.score(X[:2])).shape == (2,)
    assert np.allclose(np.asarray(m.score(X[:2])), np.asarray(m(X[:2], training=False))[:, -1])
    if not over.get("feedback", True):
        assert np.allclose(out[:, 0], out[:, -1])  # without FN every step is the same prediction
    assert int(m.curriculum_weights.shape[0]) == t


def test_layers_standalone_and_config():
    fb = FeedbackBlock(hidden=4, steps=3, pool_size=2, proj_dim=5)
    assert tuple(fb(tf.zeros((2, 8, 8, 6))).shape) == (2, 3, 5)
    assert FeedbackBlock.from_config(fb.get_config()).get_config() == fb.get_config()
    with pytest.raises(ValueError, match="pool_size"):
        FeedbackBlock(hidden=4, pool_size=7)(tf.zeros((1, 4, 4, 3)))
    te = QualityTransformer(dim=16, heads=2, mlp_dim=8, out_dim=6)
    assert tuple(te(tf.zeros((2, 3, 3, 10))).shape) == (2, 6)
    assert te.positions.shape == (1, 10, 16)
    assert QualityTransformer.from_config(te.get_config()).get_config() == te.get_config()
    post = QualityTransformer(dim=16, heads=2, mlp_dim=8, out_dim=6, norm_first=False)
    assert tuple(post(tf.zeros((1, 3, 3, 10))).shape) == (1, 6)


def test_curriculum_presets_and_lrs():
    assert len(stage_weights("paper")) == 4 and np.allclose(stage_weights("paper")[0], PAPER_STAGES[0])
    assert np.allclose(stage_weights("official")[0], [0.25, 0.125, 0.25, 0.375])
    assert np.allclose(stage_weights("paper", steps=3)[0], [0.25, 0.375, 0.375])
    assert [lr_at(e, 2e-4) for e in (0, 9, 10, 19, 20, 30, 39)] == pytest.approx([2e-4, 2e-4, 2e-5, 2e-5, 2e-6, 2e-7, 2e-7])
    # the code re-creates its optimiser AFTER epoch t with the LR of t: epoch 10 still runs at 2e-4, 11 at 2e-5
    assert [official_head_lr(e) for e in (0, 9, 10, 11, 12, 20, 21, 29)] == pytest.approx(
        [2e-4, 2e-4, 2e-4, 2e-5, 2e-6, 2e-6, 2e-7, 2e-7])
    cb = CurriculumSchedule.preset("paper")
    assert [cb.weights_at(e).tolist() for e in (0, 9, 10, 29, 30, 45)] == [list(np.float32(PAPER_STAGES[k])) for k in
                                                                        (0, 0, 1, 2, 3, 3)]


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        m = self.model
        self.seen.append((m.curriculum_weights.numpy().tolist(), float(m.optimizer.learning_rate.numpy()),
                          float(m.backbone_optimizer.learning_rate.numpy())))


def test_curriculum_switches_at_stage_boundaries_and_two_learning_rates():
    """2 steps per epoch, stage_epochs=1, milestones at epochs 1 and 3; the backbone LR is 0 so only the rest may move."""
    m = keras_iqa.create_model("reqa-tiny")
    m.compile(lr=1e-3, backbone_lr=0.0, weight_decay=0.0)
    bb0 = [v.numpy().copy() for v in m.backbone.trainable_variables]
    head0 = [v.numpy().copy() for v in m.head_layers[0].trainable_variables]
    rec = _Record()
    cb = CurriculumSchedule.preset("paper", stage_epochs=1, lr=1e-3, backbone_lr=0.0, milestones=(1, 3))
    hist = m.fit(_ds(2), epochs=4, verbose=0, callbacks=[cb, rec])
    weights = [s[0] for s in rec.seen]
    expected = [list(np.float32(PAPER_STAGES[k])) for k in (0, 0, 1, 1, 2, 2, 3, 3)]
    assert np.allclose(weights, expected)  # switched exactly at each epoch (= stage) boundary, constant inside
    assert [s[1] for s in rec.seen] == pytest.approx([1e-3] * 2 + [1e-4] * 4 + [1e-5] * 2)
    assert all(s[2] == 0.0 for s in rec.seen)
    assert np.allclose(hist.history["w_3"], [0.25 / 3, 0.25, 0.5, 0.25])  # logged weights in use
    for k in ("loss", "coarse", "fine_2", "fine_3", "fine_4", "lr", "lr_backbone"):
        assert k in hist.history
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(bb0, m.backbone.trainable_variables))  # backbone LR 0
    assert any(not np.allclose(a, v.numpy()) for a, v in zip(head0, m.head_layers[0].trainable_variables))


def test_training_reduces_loss_and_round_trip(tmp_path):
    keras.utils.set_random_seed(1)
    m = keras_iqa.create_model("reqa-tiny", dropout=0.0)
    m.compile(lr=2e-3, backbone_lr=2e-3, weight_decay=5e-4)
    before = float(m.compute_loss_terms(Y, m(X, training=False))[0])
    m.fit(_ds(30), epochs=1, verbose=0)  # 30 steps on one batch of 2 micro-batches
    after = float(m.compute_loss_terms(Y, m(X, training=False))[0])
    assert after < before
    path = tmp_path / "reqa.keras"
    m.save(path)
    m2 = keras.models.load_model(path)
    assert isinstance(m2, REQA) and m2.get_config() == m.get_config()
    np.testing.assert_allclose(np.asarray(m2.score(X)), np.asarray(m.score(X)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(m2.curriculum_weights.numpy(), m.curriculum_weights.numpy())
    # both optimizers come back with their state (compile_from_config rebuilds them before loading)
    assert int(m2.optimizer.iterations) == int(m.optimizer.iterations) == 30
    assert int(m2.backbone_optimizer.iterations) == 30 and m2._weight_decay == pytest.approx(5e-4)


def test_cli_trains_tiny_run(tmp_path):
    from data_pipeline.fixtures import write_tiny_records
    from keras_iqa.cli import main

    write_tiny_records(str(tmp_path / "data"), kind="authentic", n=30, size=(72, 80))
    out = tmp_path / "run"
    rc = main(["train", "reqa", "--model", "reqa-tiny", "--data", str(tmp_path / "data"), "--out", str(out), "--quiet",
               "--set", "epochs=2", "--set", "steps_per_epoch=2", "--set", "stage_epochs=1", "--set", "eval_crops=2",
               "--set", "eval_every=2"])
    assert rc in (0, None)
    res = json.loads((out / "results.json").read_text())
    assert res["test"]["n"] > 0 and "srocc" in res["test"]
    assert len(res["history"]["loss"]) == 2 and res["history"]["w_2"] == pytest.approx([0.5, 0.5])
    assert res["history"]["w_3"] == pytest.approx([0.25 / 3, 0.25], rel=1e-5)
    assert len(res["history"]["test_srocc"]) == 1 and "srocc" in res["best_epoch_test"]  # evaluated at epoch 2 only
    assert [c[0] for c in res["curriculum"]] == [0, 1]
    assert (out / "model.keras").exists() and (out / "history.csv").exists()
    check_test_metrics(out, tmp_path / "data")  # SROCC / PLCC = scipy's over predictions.csv, one row per test image


def test_full_size_forward_shape():
    m = keras_iqa.create_model("reqa")
    assert tuple(m(np.zeros((1, 224, 224, 3), "float32")).shape) == (1, 4)
    fb = m.feedback_blocks
    assert [b.hidden for b in fb] == [16, 32, 64] and [b._pooled for b in fb] == [(8, 8), (4, 4), (2, 2)]
    assert [b.proj.kernel.shape[0] for b in fb] == [1024, 512, 256]
    assert m.quality_transformer.positions.shape == (1, 50, 224)


def _official_code_head_lrs(epochs, lr=2e-5, ratio=10.0):
    """The released training loop, transcribed: train epoch t with the current optimiser, then re-create it."""
    cur, out = lr * ratio, []
    for t in range(epochs):
        out.append(cur)  # LR used while training epoch t
        cur = lr / 10 ** (t // 10) * (ratio if t <= 10 else 1)
    return out


def test_official_lr_schedule_matches_the_code_loop():
    cb = CurriculumSchedule.preset("official")
    assert [cb.lrs_at(e)[0] for e in range(30)] == pytest.approx(_official_code_head_lrs(30))
    assert all(cb.lrs_at(e)[1] == pytest.approx(2e-5) for e in range(30))  # backbone never decayed


def test_cli_sets_test_contract_and_one_target_scale(tmp_path):
    """The training config sets the test-time contract before training; predictions.csv targets and predictions share
    REQA's 0-100 scale; --split all runs the repetitions."""
    import pandas as pd

    from data_pipeline.fixtures import write_tiny_records
    from keras_iqa.cli import main
    from keras_iqa.commands.train_reqa import REQATrainConfig

    assert REQATrainConfig().repetitions == 20  # the paper's 20 train-test iterations
    write_tiny_records(str(tmp_path / "data"), kind="authentic", n=30, size=(72, 80), num_splits=2)
    out = tmp_path / "run"
    rc = main(["train", "reqa", "--model", "reqa-tiny", "--data", str(tmp_path / "data"), "--out", str(out), "--quiet",
               "--split", "all", "--set", "repetitions=2", "--set", "epochs=1", "--set", "steps_per_epoch=1",
               "--set", "eval_crops=3", "--set", "eval_mode=grid", "--set", "resize=[70,70]",
               "--set", "sampler_epoch=pass"])
    assert rc in (0, None)
    summary = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in summary["rows"]] == ["split_00", "split_01"] and "srocc" in summary["summary"]
    one = out / "split_01"
    res = json.loads((one / "results.json").read_text())
    assert res["split"] == "split_01" and res["sampler"]["epoch"] == "pass"
    assert res["eval"]["crops"] == 3 and res["eval"]["mode"] == "grid" and res["eval"]["resize"] == [70, 70]
    m = keras.models.load_model(one / "model.keras")
    assert (m.test_crops, m.crop_policy, tuple(m.test_resize)) == (3, "grid", (70, 70))
    df = check_test_metrics(one, tmp_path / "data")  # split_01's test images, metrics = scipy's over predictions.csv
    assert df["target"].max() > 1.5  # 0-100 targets (the fixture's MOS spans most of its range), not 0-1
    for row in summary["rows"]:  # each summary row = scipy's metrics over that split's own predictions.csv
        preds = check_test_metrics(out / row["row"], tmp_path / "data", split=row["row"])
        check_metrics(row, preds["pred"], preds["target"])
