"""HCL (reconstruction): CQAC maths, the three stage models on tiny configs, the weight hand-off, freezing, serialisation, CLI."""

import dataclasses
import json
import os

import numpy as np
import pytest
import scipy.stats

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_iqa.layers.cqac import CQAC, DatasetSubnetworks, batch_plcc, cqac_loss, head_correlation_matrix  # noqa: E402
from keras_iqa.models import hcl as M  # noqa: E402
from keras_iqa.training import hcl as T  # noqa: E402
from keras_iqa.training.runner import RunDir  # noqa: E402

C = 64  # tiny crop
TINY_CFG = M.HCLModelConfig(**M.TINY)


def _cfg(**ablation):
    cfg = T.HCLTrainConfig(model=TINY_CFG, verbose=0)
    cfg.synthetic = dataclasses.replace(cfg.synthetic, epochs=2, freeze_epochs=1, lr=1e-3)
    cfg.finetune = dataclasses.replace(cfg.finetune, epochs=1, test_crops=2)
    cfg.ablation = dataclasses.replace(cfg.ablation, **ablation)
    return cfg


# ------------------------------------------------------------------------------------------------------------ CQAC maths

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_plcc_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(17, 3)).astype("float32")
    y = (x[:, 0] * rng.normal() + rng.normal(size=17)).astype("float32")
    got = np.asarray(batch_plcc(y[:, None], x, axis=0))
    want = [scipy.stats.pearsonr(x[:, k], y)[0] for k in range(3)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert float(batch_plcc(np.ones(5, "float32"), np.arange(5.0, dtype="float32"))) == 0.0  # constant side: 0, not NaN


def test_batch_plcc_is_differentiable():
    x = tf.Variable(np.random.default_rng(0).normal(size=8).astype("float32"))
    y = tf.constant(np.arange(8, dtype="float32"))
    with tf.GradientTape() as tape:
        r = batch_plcc(x, y)
    g = tape.gradient(r, x).numpy()
    assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0
    eps, i = 1e-3, 3  # finite-difference check of one coordinate
    xp = x.numpy().copy()
    xp[i] += eps
    xm = x.numpy().copy()
    xm[i] -= eps
    fd = (scipy.stats.pearsonr(xp, y.numpy())[0] - scipy.stats.pearsonr(xm, y.numpy())[0]) / (2 * eps)
    assert abs(fd - g[i]) < 1e-2


def test_head_correlation_matrix_matches_numpy():
    s = np.random.default_rng(3).normal(size=(20, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(head_correlation_matrix(s)), np.corrcoef(s.T), atol=1e-5)


def test_cqac_loss_values():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(10, 3)).astype("float32")
    y = rng.uniform(size=10).astype("float32")
    ids = np.full(10, 1, "int32")  # a batch from dataset 1
    mse = np.mean((scores[:, 1] - y) ** 2)
    total0, mse0, _ = cqac_loss(scores, y, ids, lam=0.0)
    assert float(total0) == pytest.approx(mse, rel=1e-5)  # lambda = 0: per-dataset MSE of the batch's own head
    assert float(mse0) == pytest.approx(mse, rel=1e-5)
    corr = np.mean([1 - scipy.stats.pearsonr(scores[:, j], y)[0] for j in (0, 2)])
    total, _, c = cqac_loss(scores, y, ids, lam=0.1)
    assert float(c) == pytest.approx(corr, rel=1e-4)
    assert float(total) == pytest.approx(mse + 0.1 * corr, rel=1e-4)
    t1, m1, c1 = cqac_loss(scores[:, :1], y, np.zeros(10, "int32"), lam=0.1)  # K = 1: MSE only
    assert float(t1) == pytest.approx(np.mean((scores[:, 0] - y) ** 2), rel=1e-5) and float(c1) == 0.0


def test_subnetworks_and_cqac_shapes_and_config():
    q = np.random.default_rng(5).normal(size=(3, 40)).astype("float32")
    sub = DatasetSubnetworks(4, units=(16, 8))
    z = sub(q)
    assert tuple(z.shape) == (3, 4, 8)
    # the batched einsum equals K separate MLPs
    w1, b1, w2, b2 = (v.numpy() for v in (sub.w1, sub.b1, sub.w2, sub.b2))
    k2 = np.maximum(q @ w1[2] + b1[2], 0) @ w2[2] + b2[2]
    np.testing.assert_allclose(np.asarray(z)[:, 2], k2, atol=1e-4)
    cq = CQAC(4, num_heads=2, key_dim=4)
    z2, s = cq(z)
    assert tuple(z2.shape) == (3, 4, 8) and tuple(s.shape) == (3, 4)
    off = CQAC(4, attention=False)
    z3, s3 = off(z)
    np.testing.assert_allclose(np.asarray(z3), np.asarray(z))  # CQAC off: embeddings untouched, independent heads
    np.testing.assert_allclose(np.asarray(s3)[:, 1], np.asarray(z)[:, 1] @ off.head_w.numpy()[1] + off.head_b.numpy()[1],
                               atol=1e-5)
    assert CQAC.from_config(cq.get_config()).get_config() == cq.get_config()
    with pytest.raises(ValueError, match="K=3"):
        CQAC(3)(z)


# ------------------------------------------------------------------------------------------------------------ stage models

@pytest.fixture(scope="module")
def restoration():
    return M.build_restoration(TINY_CFG)


def _pairs(n=4, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0, 255, size=(n, C, C, 3)).astype("float32")
    ref = (ref + np.roll(ref, 1, axis=1) + np.roll(ref, 1, axis=2)) / 3  # some spatial structure
    dist = np.clip(ref + rng.normal(0, 25, size=ref.shape), 0, 255).astype("float32")
    return dist, ref.astype("float32")


def test_restoration_output_range_features_and_l1_drops(restoration, tmp_path):
    dist, ref = _pairs()
    out = np.asarray(restoration(dist))
    assert out.shape == (4, C, C, 3) and out.min() >= 0.0 and out.max() <= 1.0
    q = restoration.quality_features(dist)
    # stage-4 channels + the first three decoder widths (2048 + 1024 + 512 + 256 = 3840 at full size)
    assert tuple(q.shape) == (4, restoration.feature_dim) == (4, 256 + 32 + 16 + 16)
    assert M.HCLModelConfig().decoder_filters[:3] == (1024, 512, 256)
    l1_before = float(np.mean(np.abs(out - ref / 255.0)))
    ds = tf.data.Dataset.from_tensor_slices((dist, ref)).batch(4).repeat()
    run = RunDir.create(tmp_path / "r", config={"test": 1}, seed=0)
    scfg = T.RestorationStageConfig(epochs=2, lr=3e-3, cosine=False)
    res = T.fit_restoration(restoration, ds, run, scfg, steps_per_epoch=4, holdout_pairs=ds.take(1), verbose=0)
    l1_after = float(np.mean(np.abs(np.asarray(restoration(dist, training=False)) - ref / 255.0)))
    assert l1_after < l1_before, (l1_before, l1_after)
    h = res["holdout"]
    assert h["n_pairs"] == 4 and set(h) >= {"psnr_restored", "psnr_identity", "ssim_restored", "ssim_identity",
                                            "beats_identity"}
    ident = tf.image.psnr(dist / 255.0, ref / 255.0, 1.0).numpy().mean()
    assert h["psnr_identity"] == pytest.approx(float(ident), rel=1e-4)  # the identity baseline is computed, not assumed
    assert (tmp_path / "r" / "model.keras").exists() and json.loads((tmp_path / "r" / "results.json").read_text())["holdout"]


def test_restoration_report_leaves_out_unchanged_pairs(restoration):
    dist, ref = _pairs()
    dist = dist.copy()
    dist[0] = ref[0]  # nothing to restore in pair 0: its identity PSNR is infinite
    h = T.restoration_report(restoration, tf.data.Dataset.from_tensor_slices((dist, ref)).batch(4))
    assert h["n_unchanged"] == 1 and h["n_pairs"] == 3
    ident = tf.image.psnr(dist[1:] / 255.0, ref[1:] / 255.0, 1.0).numpy().mean()
    assert h["psnr_identity"] == pytest.approx(float(ident), rel=1e-4)
    with pytest.raises(ValueError, match="nothing to restore"):
        T.restoration_report(restoration, tf.data.Dataset.from_tensor_slices((ref, ref)).batch(4))


def test_restoration_loss_ssim_term():
    a = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    assert float(M.RestorationLoss(0.2)(a, a)) == pytest.approx(0.0, abs=1e-5)
    b = np.clip(a + 0.1, 0, 1)
    l1 = float(M.RestorationLoss(0.0)(a, b))
    assert float(M.RestorationLoss(0.2)(a, b)) > l1 > 0


def test_restoration_loss_psnr_is_minus_psnr_per_image():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(3, 32, 32, 3)).astype("float32")
    b = np.clip(a + rng.normal(0, [[[[0.01]]], [[[0.05]]], [[[0.2]]]], a.shape), 0, 1).astype("float32")
    loss = M.RestorationLoss(0.0, pixel="psnr")
    per_image = np.asarray(loss.call(a, b))
    psnr = tf.image.psnr(a, b, 1.0).numpy()
    mse = ((a.astype("float64") - b) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(per_image, 10 * np.log10(mse + 1e-5), atol=1e-3)
    np.testing.assert_allclose(per_image[1:], -psnr[1:], atol=0.05)  # eps 1e-5 only matters near 50 dB (0.4 dB at 40)
    assert float(loss(a, b)) == pytest.approx(per_image.mean(), abs=1e-4)
    assert float(loss(a, a)) == pytest.approx(-50.0, abs=1e-3)  # bounded: 10 log10(1e-5)
    clone = M.RestorationLoss.from_config(loss.get_config())
    assert clone.pixel == "psnr" and float(clone(a, b)) == pytest.approx(float(loss(a, b)))
    with pytest.raises(ValueError, match="pixel loss"):
        M.RestorationLoss(pixel="l2")


def _synthetic_ds(n=8, k=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, size=(n, C, C, 3)).astype("float32")
    y = rng.uniform(size=n).astype("float32")
    ids = np.repeat(np.arange(k), n // k).astype("int32")  # each batch of n // k holds ONE dataset
    return tf.data.Dataset.from_tensor_slices(((x, ids), y)).batch(n // k).repeat()


def _weights(layer):
    return [w.copy() for w in layer.get_weights()]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_fit_restoration_with_psnr_loss_raises_psnr_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    net = M.build_restoration(TINY_CFG)
    dist, ref = _pairs()
    psnr = lambda: float(tf.image.psnr(net(dist, training=False), ref / 255.0, 1.0).numpy().mean())  # noqa: E731
    before = psnr()
    ds = tf.data.Dataset.from_tensor_slices((dist, ref)).batch(4).repeat()
    run = RunDir.create(tmp_path / "r", config={}, seed=0)
    scfg = T.RestorationStageConfig(epochs=2, lr=3e-3, cosine=False, pixel_loss="psnr")
    res = T.fit_restoration(net, ds, run, scfg, steps_per_epoch=4, verbose=0)
    assert psnr() > before + 0.1, (before, psnr())  # measured +0.4 dB after these 8 steps
    hist = res["history"]["loss"]
    assert hist[-1] < hist[0] < 0  # the loss is minus the PSNR: negative and falling
    loaded = keras.models.load_model(tmp_path / "r" / "model.keras")
    assert loaded.loss.pixel == "psnr"


def test_stage_handoff_freeze_and_round_trip(restoration, tmp_path):
    run1 = RunDir.create(tmp_path / "1", config={}, seed=0)
    run1.save_final(restoration)
    w1 = _weights(restoration)

    # stage 2 starts from stage 1's exact restoration weights
    cfg = _cfg()
    syn, parts = T.init_synthetic(cfg, init=run1.path, num_datasets=2)
    assert parts == ["restoration"] and _same(_weights(syn.restoration), w1)
    enc_kernels = [v.numpy().copy() for v in syn.restoration.trainable_variables]
    head_before = _weights(syn.subnets)

    # one frozen epoch: the restoration network's trainable weights stay exactly as they were, the heads move
    run2 = RunDir.create(tmp_path / "2", config={}, seed=0)
    res = T.fit_synthetic(syn, _synthetic_ds(), run2, dataclasses.replace(cfg.synthetic, epochs=1), steps_per_epoch=2,
                          dataset_names=["a", "b"], verbose=0)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(enc_kernels, syn.restoration.trainable_variables))
    assert not _same(head_before, _weights(syn.subnets))
    assert res["history"]["backbone_lr"] == [0.0]
    hc = json.loads((tmp_path / "2" / "head_correlation.json").read_text())
    m = np.asarray(hc["epochs"][0]["matrix"])
    assert hc["datasets"] == ["a", "b"] and m.shape == (2, 2) and np.allclose(np.diag(m), 1.0, atol=1e-4)
    assert (tmp_path / "2" / "head_correlation.csv").read_text().startswith("epoch,head_i,head_j,plcc")

    # after the freeze the restoration network trains at 1/10 of the head rate
    head_lr, back_lr = T.freeze_then_low_lr(1e-4, 2, 0.1)
    assert [back_lr(e) for e in range(4)] == [0.0, 0.0, pytest.approx(1e-5), pytest.approx(1e-5)] and head_lr(3) == 1e-4

    # stage 3 starts from stage 2's exact restoration, subnetwork and CQAC weights
    w2 = {n: _weights(getattr(syn, n)) for n in ("restoration", "subnets", "cqac")}
    hcl, parts3 = T.init_finetune(cfg, init=run2.path, score_range=(0.0, 100.0))
    assert parts3 == ["restoration", "subnets", "cqac"]
    assert all(_same(_weights(getattr(hcl, n)), w2[n]) for n in w2)

    # fine-tune one epoch with two learning rates, then the .keras round trip of the deployable model
    x = np.random.default_rng(1).uniform(0, 255, size=(4, C, C, 3)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.array([10.0, 40.0, 60.0, 90.0], "float32"))).batch(2).repeat()
    run3 = RunDir.create(tmp_path / "3", config={}, seed=0)
    hist = T.fit_finetune(hcl, ds, run3, cfg.finetune, steps_per_epoch=2, verbose=0)
    assert np.isfinite(hist["loss"][0])
    loaded = keras.models.load_model(tmp_path / "3" / "model.keras")
    assert isinstance(loaded, M.HCL) and loaded.score_range == (0.0, 100.0) and loaded.test_crops == 2
    np.testing.assert_allclose(np.asarray(loaded.score(x)), np.asarray(hcl.score(x)), atol=1e-4)
    assert loaded.get_config() == hcl.get_config()


def test_ablation_switches(restoration, tmp_path):
    run1 = RunDir.create(tmp_path / "1", config={}, seed=0)
    run1.save_final(restoration)
    hcl, parts = T.init_finetune(_cfg(skip_synthetic=True), init=run1.path, score_range=(1.0, 5.0))
    assert parts == ["restoration"] and _same(_weights(hcl.restoration), _weights(restoration))
    assert hcl.num_datasets == TINY_CFG.num_datasets and hcl.score_range == (1.0, 5.0)
    syn, parts = T.init_synthetic(_cfg(skip_restoration=True, cqac=False, single_head=True), init=None, num_datasets=3)
    assert parts == [] and syn.num_datasets == 1 and not syn.use_cqac and syn.lambda_corr == 0.0
    assert not hasattr(syn.cqac, "mha")
    with pytest.raises(FileNotFoundError, match="previous HCL stage"):
        T.load_stage_model(tmp_path / "nothing-here")


def test_registry_cards():
    import keras_iqa

    assert {"hcl", "hcl-tiny"} <= set(keras_iqa.list_models())
    assert keras_iqa.registry.get_card("hcl").config().decoder_filters == (1024, 512, 256, 64, 64)
    with pytest.raises(ValueError, match="divisible by 32"):
        M.HCL(restoration=M.restoration_kwargs(TINY_CFG), crop_size=50)


def test_cli_help_and_errors(capsys, tmp_path):
    from keras_iqa import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["train", "hcl", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--stages all" in out and "ablation.cqac=false" in out and "reconstruction" in out
    policy = keras.config.dtype_policy().name
    with pytest.raises(SystemExit, match="needs --pairs"):
        cli.main(["train", "hcl", "--stage", "restoration", "--out", "/tmp/never-written-hcl"])
    assert keras.config.dtype_policy().name == policy  # a usage error changes no global state
    with pytest.raises(SystemExit, match="exactly one --data"):
        cli.main(["train", "hcl", "--stage", "finetune", "--data", "a", "--data", "b", "--out", "/tmp/never-written-hcl"])
    try:  # a bad config value: exit code 2, the message names the key and a valid value; nothing is written
        rc = cli.main(["train", "hcl", "--stage", "restoration", "--pairs", "/nonexistent", "--out", str(tmp_path / "o"),
                       "--set", "restoration.pixel_loss=l2"])
    finally:
        keras.config.set_dtype_policy(policy)
    assert rc == 2 and "restoration.pixel_loss" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_residual_restoration_starts_near_identity():
    net = M.build_restoration(dataclasses.replace(TINY_CFG, restoration_output="residual", crop_size=32))
    x = np.random.default_rng(2).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    y = np.asarray(net(x))
    assert np.abs(y - x / 255.0).mean() < 0.02 and y.min() >= 0.0 and y.max() <= 1.0
    assert M.RestorationNet.from_config(net.get_config()).output_mode == "residual"
    with pytest.raises(ValueError, match="restoration output"):
        M.RestorationNet(output="sharpen")


def test_input_skip_option_trains_round_trips_and_hands_over(tmp_path):
    """`restoration_input_skip` (our option): the input reaches the full-resolution decoder step, so a residual network
    learns per-pixel noise removal that the TeacherIQA decoder (no full-resolution skip) cannot; the option survives the
    .keras round trip and the hand-over to curriculum 2."""
    from scipy.ndimage import gaussian_filter

    keras.utils.set_random_seed(0)
    cfg = dataclasses.replace(TINY_CFG, restoration_output="residual", restoration_input_skip=True, crop_size=32)
    net = M.build_restoration(cfg)
    rng = np.random.default_rng(3)
    ref = gaussian_filter(rng.uniform(60, 200, (8, 32, 32, 3)), (0, 2, 2, 0)).astype("float32")
    noisy = np.clip(ref + rng.normal(0, 20, ref.shape), 0, 255).astype("float32")
    identity_l1 = float(np.abs(noisy - ref).mean() / 255.0)
    assert abs(float(np.abs(np.asarray(net(noisy)) - ref / 255.0).mean()) - identity_l1) < 0.01  # starts at the identity
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss=M.RestorationLoss(0.0))
    for _ in range(60):
        loss = float(net.train_on_batch(noisy, ref / 255.0))
    assert loss < 0.8 * identity_l1, (loss, identity_l1)  # below the identity on the batch it trains on
    path = tmp_path / "r.keras"
    net.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.input_skip and loaded.output_mode == "residual"
    np.testing.assert_allclose(np.asarray(loaded(noisy)), np.asarray(net(noisy)), atol=1e-5)
    run = RunDir.create(tmp_path / "1", config={}, seed=0)
    run.save_final(net)
    syn, _ = T.init_synthetic(_cfg(), init=run.path, num_datasets=2)
    assert syn.restoration.input_skip and _same(_weights(syn.restoration), _weights(net))
