"""Score heads of the three families: float32 under mixed precision, fresh models start mid-range, and random-init models
learn with the `lr="auto"` defaults (docs/heads.md)."""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_iqa  # noqa: E402
from keras_iqa.models import hcl as H  # noqa: E402
from keras_iqa.training import lr as LR  # noqa: E402

CARDS = ("reqa-tiny", "metaiqa-tiny", "hcl-tiny")


def _images(n=8, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 64, 64, 3)).astype("float32")


def _score_layers(model):
    if model.name.startswith("reqa"):
        return [model.head_layers[-1]]
    if model.name.startswith("metaiqa"):
        return [model.head_layers[-1]]
    return [model.out]


@pytest.fixture
def bf16():
    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(old)


@pytest.mark.parametrize("card", CARDS)
def test_score_layers_are_float32_under_mixed_bfloat16(card, bf16):
    keras.utils.set_random_seed(0)
    m = keras_iqa.create_model(card)
    for layer in _score_layers(m):
        assert layer.dtype_policy.compute_dtype == "float32", layer.name
        assert layer.kernel.dtype == "float32"
    s = m.score(_images())
    assert s.dtype == "float32"
    s = np.asarray(s, np.float64)
    # bf16 keeps 8 significant bits: on 0-100 values near 50 are multiples of 0.25; on 0-1 near 0.5 multiples of 2^-9
    lo, hi = m.score_range
    step = 0.25 if hi > 10 else 2.0 ** -9
    assert not np.allclose(s / step, np.round(s / step), atol=1e-3), s
    assert len(np.unique(s)) == len(s)


def test_hcl_synthetic_heads_are_float32_under_mixed_bfloat16(bf16):
    keras.utils.set_random_seed(0)
    m = H.build_synthetic(H.HCLModelConfig(**H.TINY))
    assert m.cqac.head_w.dtype == "float32" and m.cqac.head_b.dtype == "float32"
    s = m((_images(), np.zeros((8,), "int32")))
    assert s.dtype == "float32" and len(np.unique(np.asarray(s))) == s.shape[0] * s.shape[1]


@pytest.mark.parametrize("card", CARDS + ("metaiqa-official-tiny",))
def test_fresh_model_starts_at_the_midpoint_of_its_score_range(card):
    keras.utils.set_random_seed(0)
    if card == "metaiqa-official-tiny":
        m = keras_iqa.create_model("metaiqa-tiny", head="official")
    else:
        m = keras_iqa.create_model(card)
    lo, hi = m.score_range
    s = np.asarray(m.score(_images(16)))
    tol = 0.02 if card != "metaiqa-official-tiny" else 0.1  # the official head's sigmoid(fc3) with the code's own init
    assert abs(s.mean() - (lo + hi) / 2) < tol * (hi - lo), s
    assert s.std() < tol * (hi - lo), s


def test_hcl_synthetic_heads_start_mid_range_and_dataset_range_is_honoured():
    keras.utils.set_random_seed(0)
    m = H.build_synthetic(H.HCLModelConfig(**H.TINY))
    s = np.asarray(m((_images(), np.zeros((8,), "int32"))))
    assert np.all(np.abs(s - 0.5) < 0.05), s  # normalised [0, 1] targets
    m2 = keras_iqa.create_model("hcl-tiny", score_range=(1.0, 5.0))
    assert np.all(np.abs(np.asarray(m2.score(_images())) - 3.0) < 0.1)


def test_reqa_final_relu_is_alive_and_saved_models_reload(tmp_path):
    keras.utils.set_random_seed(0)
    m = keras_iqa.create_model("reqa-tiny")
    assert m.final_relu
    out = np.asarray(m(_images()))
    assert np.all(out > 40)  # bias 5 x 10 on 0-100: far from the ReLU's dead zone
    path = tmp_path / "reqa.keras"
    m.save(path)
    back = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(back(_images())), out, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------------------------ learning from scratch
def _brightness_set(n, lo, hi, seed=0):
    """n random textures whose brightness sets the target linearly on [lo, hi] (mean above the score-range midpoint)."""
    rng = np.random.default_rng(seed)
    b = rng.uniform(0, 1, n).astype("float32")
    x = rng.uniform(0.5, 1.0, (n, 64, 64, 3)).astype("float32") * (40 + 200 * b)[:, None, None, None]
    return x.astype("float32"), (lo + (hi - lo) * b).astype("float32")


def _batches(x, y, batch):
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(batch, drop_remainder=True).repeat()


def _assert_learned(model, x, y):
    p = np.asarray(model.score(x), np.float64)
    mae, std = float(np.mean(np.abs(p - y))), float(np.std(y))
    lo, hi = model.score_range
    mid_mae = float(np.mean(np.abs((lo + hi) / 2 - y)))
    assert mid_mae > std  # the set is built so that predicting the midpoint is not enough
    assert mae < std, f"MAE {mae:.4f} not below the targets' std {std:.4f} (preds {p.mean():.3f} +- {p.std():.3f})"


def test_auto_lr_picks_paper_rates_with_imagenet_and_warns_once_without():
    LR._reset_warnings()
    assert LR.resolve_lr("auto", 2e-4, 3e-3, pretrained=True, family="reqa") == 2e-4
    with pytest.warns(UserWarning, match="ImageNet"):
        assert LR.resolve_lr("auto", 2e-4, 3e-3, pretrained=False, family="reqa") == 3e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert LR.resolve_lr("1e-3", 2e-4, 3e-3, pretrained=False, family="reqa") == 1e-3  # warned once already
    assert not LR.is_pretrained(None) and LR.is_pretrained("imagenet")


def test_reqa_learns_from_random_init_with_auto_lr():
    keras.utils.set_random_seed(0)
    x, y = _brightness_set(30, 40.0, 80.0)
    m = keras_iqa.create_model("reqa-tiny")
    m.compile(lr=LR.resolve_lr("auto", 2e-4, LR.RANDOM_INIT["reqa"]["lr"], False, "reqa"),
              backbone_lr=LR.resolve_lr("auto", 2e-5, LR.RANDOM_INIT["reqa"]["backbone_lr"], False, "reqa"))
    m.fit(_batches(x, y, 15), steps_per_epoch=30, epochs=1, verbose=0)
    _assert_learned(m, x, y)


def test_metaiqa_finetune_learns_from_random_init_with_auto_lr():
    from keras_iqa.training.meta import finetune

    keras.utils.set_random_seed(0)
    x, y = _brightness_set(32, 0.4, 0.8)
    m = keras_iqa.create_model("metaiqa-tiny")
    lr = LR.resolve_lr("auto", 1e-5, LR.RANDOM_INIT["metaiqa"]["finetune_lr"], False, "metaiqa")
    finetune(m, _batches(x, y, 16), epochs=1, lr=lr, steps_per_epoch=30, verbose=0)
    _assert_learned(m, x, y)


def test_hcl_finetune_learns_from_random_init_with_auto_lr():
    from keras_iqa.training.hcl import FinetuneStageConfig, compile_finetune

    keras.utils.set_random_seed(0)
    x, y = _brightness_set(32, 40.0, 80.0)
    m = keras_iqa.create_model("hcl-tiny")
    compile_finetune(m, FinetuneStageConfig())  # lr="auto", random backbone -> the random-init rates
    m.fit(_batches(x, y, 16), steps_per_epoch=30, epochs=1, verbose=0)
    _assert_learned(m, x, y)


def test_hcl_finetune_mse_loss_learns_from_random_init():
    from keras_iqa.training.hcl import FinetuneStageConfig, compile_finetune

    keras.utils.set_random_seed(0)
    x, y = _brightness_set(32, 40.0, 80.0)
    m = keras_iqa.create_model("hcl-tiny")
    compile_finetune(m, FinetuneStageConfig(loss="mse"))
    assert m.loss == "mean_squared_error"
    m.fit(_batches(x, y, 16), steps_per_epoch=30, epochs=1, verbose=0)
    _assert_learned(m, x, y)
    with pytest.raises(ValueError, match="finetune.loss"):
        compile_finetune(keras_iqa.create_model("hcl-tiny"), FinetuneStageConfig(loss="huber"))
