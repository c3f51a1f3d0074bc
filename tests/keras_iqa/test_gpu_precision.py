"""`--precision auto` on a GPU (compute capability injected: no GPU here) and the float16 loss scaling of the two-optimizer
step (REQA, HCL), run on CPU."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import iqa_test_case as H  # tests/ is on sys.path through tests/conftest.py
from keras_iqa.optimizers import apply_optimizer_groups
from keras_iqa.training import cpu


@pytest.mark.parametrize("capability, loss_scaling, expected", [
    ((6, 1), True, "fp16"), ((7, 0), True, "fp16"), ((7, 5), True, "fp16"), ((8, 0), True, "bf16"),
    ((8, 9), True, "bf16"), ((9, 0), True, "bf16"), ((7, 5), False, "fp32"), ((9, 0), False, "bf16"), (None, True, "fp32")])
def test_auto_on_gpu_picks_by_compute_capability(capability, loss_scaling, expected):
    got = cpu.resolve_precision("auto", flags={"avx512_bf16"}, gpu=True, capability=capability, loss_scaling=loss_scaling)
    assert got == expected


def test_forced_precision_wins_on_gpu_and_fp16_is_not_a_choice():
    assert cpu.resolve_precision("fp32", gpu=True, capability=(7, 0)) == "fp32"
    assert cpu.resolve_precision("bf16", gpu=True, capability=(7, 0)) == "bf16"
    with pytest.raises(ValueError, match="'fp16'"):
        cpu.resolve_precision("fp16", gpu=True, capability=(7, 0))


def test_gpu_capability_reads_the_device_details(monkeypatch):
    seen = []

    def details(gpu):
        seen.append(gpu)
        return {"device_name": "Tesla V100", "compute_capability": (7, 0)}

    monkeypatch.setattr(tf.config.experimental, "get_device_details", details)
    assert cpu.gpu_capability("GPU:0") == (7, 0) and seen == ["GPU:0"]
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda gpu: {})
    assert cpu.gpu_capability("GPU:0") is None
    assert cpu.gpu_capability() is None  # this machine has no GPU


def _one_step(opt):
    """One update of a float16 Dense kernel from a loss whose float16 gradients underflow (1e-9) unless scaled."""
    layer = keras.layers.Dense(1, use_bias=False, dtype="mixed_float16", kernel_initializer="ones")
    layer.build((None, 4))
    x = tf.ones((8, 4))
    with tf.GradientTape() as tape:
        loss = tf.cast(tf.reduce_mean(layer(x)), tf.float32) * 1e-9
    apply_optimizer_groups(tape, loss, [(opt, layer.trainable_variables)])
    return 1.0 - layer.kernel.numpy()  # SGD: lr * gradient; the true gradient is 1e-9 per element


def test_loss_scaling_protects_the_float16_backward_pass():
    scaled = _one_step(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1e6)))
    np.testing.assert_allclose(scaled, 1e-3, rtol=1e-2)
    assert np.all(_one_step(keras.optimizers.SGD(1e6)) == 0.0)  # without a scale the gradient underflows to zero


@pytest.mark.parametrize("card", ["reqa-tiny", "hcl-tiny"])
def test_two_optimizer_families_scale_both_optimizers_under_mixed_float16(card):
    with H.dtype_policy("mixed_float16"):
        model = H.build_from_card(card)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), backbone_optimizer=keras.optimizers.Adam(1e-4),
                      **({"coarse": "official", "group_size": 2} if card.startswith("reqa") else {"loss": "mse"}))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.backbone_optimizer, keras.optimizers.LossScaleOptimizer)
        before = [v.numpy().copy() for v in model.backbone_variables()]
        x, y = H.images(4, 64), np.linspace(0.2, 0.8, 4).astype("float32")
        model.fit(x, y, batch_size=4, epochs=8, verbose=0)  # steps that overflow are skipped while the scale drops
        changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.backbone_variables())]
        assert any(changed), f"{card}: the backbone optimizer did not update under mixed_float16"
        assert np.isfinite(float(model.backbone_optimizer.dynamic_scale.numpy()))
