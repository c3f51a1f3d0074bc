"""ResNet-18/50 v1.5 multi-scale taps (keras-hub ResNetBackbone)."""

import numpy as np
import pytest

from keras_iqa.backbones import resnet_features, tap_channels


@pytest.mark.parametrize("depth", [18, 50])
def test_tiny_taps(depth):
    model = resnet_features(depth, width=0.125, blocks=(1, 1, 1, 1))
    out = model(np.zeros((2, 64, 64, 3), "float32"))
    chans = tap_channels(depth, 0.125)
    sizes = {"stem": 32, "stage1": 16, "stage2": 8, "stage3": 4, "stage4": 2}
    assert set(out) == set(sizes)
    for k, s in sizes.items():
        assert tuple(out[k].shape) == (2, s, s, chans[k]), k


@pytest.mark.parametrize("depth,c4", [(18, 512), (50, 2048)])
def test_full_size_taps(depth, c4):
    model = resnet_features(depth)
    out = model(np.zeros((1, 224, 224, 3), "float32"))
    expect = {"stem": (112, 64), "stage1": (56, 64 if depth == 18 else 256), "stage2": (28, 128 if depth == 18 else 512),
              "stage3": (14, 256 if depth == 18 else 1024), "stage4": (7, c4)}
    for k, (s, c) in expect.items():
        assert tuple(out[k].shape) == (1, s, s, c), k
    # v1.5: standard parameter counts of the convolutional trunk (no classifier)
    assert model.count_params() == {18: 11_186_112, 50: 23_561_152}[depth]


def test_bad_depth_and_pretrained_with_width():
    with pytest.raises(ValueError, match="18 or 50"):
        resnet_features(34)
    with pytest.raises(ValueError, match="standard network"):
        resnet_features(18, weights="imagenet", width=0.5)


def test_imagenet_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="resnet_18_imagenet"):
        resnet_features(18, weights="imagenet")


def test_local_preset_dir(tmp_path):
    """weights=<dir> loads a keras-hub preset saved on disk (how offline users place ImageNet weights)."""
    import keras_hub

    from keras_iqa.backbones import _build_backbone

    bb = _build_backbone(18, 1.0, None)
    bb.save_to_preset(str(tmp_path / "preset"))
    model = resnet_features(18, weights=str(tmp_path / "preset"))
    x = np.random.RandomState(0).rand(1, 64, 64, 3).astype("float32")
    ref = keras_hub.models.Backbone.from_preset(str(tmp_path / "preset"))
    np.testing.assert_allclose(model(x)["stage4"], ref(x), atol=1e-5)
