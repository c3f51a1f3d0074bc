"""Deployment (issue #9): SavedModel signatures in a fresh process with TF Serving REST-shaped requests, saved_model_cli,
TFLite variants in the ai-edge-litert interpreter with their parity targets, for a tiny test model and each model family."""

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from keras_iqa.layers.preprocessing import ImageNetNormalization
from keras_iqa.models.base import IQAModel

FAMILIES = ("reqa-tiny", "metaiqa-tiny", "hcl-tiny")
VENV_BIN = Path(sys.executable).parent


@keras.saving.register_keras_serializable(package="keras_iqa_test_export")
class TinyIQA(IQAModel):
    """conv + GAP + dense, scores around the middle of 0..100."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.norm = ImageNetNormalization()
        self.conv = keras.layers.Conv2D(8, 3, strides=2, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(1)

    def call(self, x, training=False):
        return self.head(self.pool(self.conv(self.norm(x))))[:, 0] * 10.0 + 50.0


def tiny(policy="random", crops=5, size=32):
    m = TinyIQA(crop_size=size, test_crops=crops, crop_policy=policy)
    m(np.zeros((1, size, size, 3), "float32"))
    return m


def encode(arr, fmt, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def sample_images():
    from keras_iqa.export.samples import synthetic_images

    imgs = synthetic_images(4, size=(48, 70), seed=7)
    imgs.append(np.asarray(Image.fromarray(imgs[0]).resize((20, 24))))  # smaller than the crop: upsampled
    return imgs


def expected_scores(model, images):
    """What the Keras model says per image: mean over the contract's crops of the Pillow-decoded pixels."""
    from data_pipeline.test_time import TestTimeCrops

    fn = TestTimeCrops.from_model(model).crop_function()
    return np.array([float(np.mean(np.asarray(model.score(fn(im))))) for im in images])


def decoded(data):
    from data_pipeline.images import load_image

    return load_image(data)


# ---------------------------------------------------------------------------------------------------------- crops
def test_grid_layout_and_crops_are_deterministic_and_exact():
    import tensorflow as tf

    from data_pipeline.test_time import TestTimeCrops, grid_layout

    def crop_function(c, n, policy):
        return TestTimeCrops(crop_size=c, num_crops=n, policy=policy).crop_function()

    assert grid_layout(25)[:2] == (5, 5)
    rows, cols, cells = grid_layout(10)
    assert (rows, cols) == (3, 4) and len(cells) == 10 and cells[0] == 0 and cells[-1] == 11
    img = np.arange(40 * 50 * 3, dtype=np.int64).reshape(40, 50, 3) % 251
    img = img.astype(np.uint8)
    crops = np.asarray(crop_function(16, 4, "grid")(tf.constant(img)))
    assert crops.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(crops[0], img[:16, :16])  # top-left
    np.testing.assert_array_equal(crops[-1], img[-16:, -16:])  # bottom-right
    rnd = np.asarray(crop_function(16, 4, "random")(tf.constant(img)))  # seeded positions: the same on every call
    np.testing.assert_array_equal(rnd, np.asarray(crop_function(16, 4, "random")(tf.constant(img))))
    assert not np.array_equal(rnd, crops)
    small = np.asarray(crop_function(32, 4, "grid")(tf.constant(img[:20, :30])))
    assert small.shape == (4, 32, 32, 3)  # short side upsampled to the crop
    assert np.asarray(crop_function(16, 9, "resize")(tf.constant(img))).shape == (1, 16, 16, 3)


# ---------------------------------------------------------------------------------------------------- SavedModel
REST_CLIENT = r"""
import base64, json, sys
import numpy as np
import tensorflow as tf
cases = json.load(open(sys.argv[1]))
out = {}
for case in cases:
    loaded = tf.saved_model.load(case["path"])
    sig = loaded.signatures["serving_default"]
    request = json.loads(case["request"])  # TF Serving REST body: {"instances": [{"b64": ...}, ...]}
    images = tf.constant([base64.b64decode(inst["b64"]) for inst in request["instances"]])
    res = sig(images=images)
    entry = {"score": res["score"].numpy().tolist(), "score_normalized": res["score_normalized"].numpy().tolist()}
    try:
        sig(images=tf.constant([base64.b64decode(i["b64"]) for i in json.loads(case["bad_request"])["instances"]]))
        entry["bad_error"] = None
    except tf.errors.InvalidArgumentError as e:
        entry["bad_error"] = e.message
    pix = np.array(case["pixels"], np.uint8)
    entry["image_tensor"] = loaded.signatures["image_tensor"](images=tf.constant(pix[None]))["score"].numpy().tolist()
    out[case["name"]] = entry
print("RESULT" + json.dumps(out))
"""


def export_and_request_cases(models, tmp_path):
    """Exports each model; returns (cases for the fresh process, expected per model name)."""
    from keras_iqa.export.savedmodel import export_savedmodel
    from keras_iqa.scoring.savedmodel_check import check_savedmodel

    images = sample_images()
    jpeg = [encode(im, "JPEG", quality=90) for im in images[:3]]
    png = [encode(im, "PNG") for im in images[3:]]
    blobs = jpeg + png
    pixels = [decoded(b) for b in blobs]
    bad = [png[0], b"this is not an image", png[0][: len(png[0]) // 2]]
    cases, expected = [], {}
    for name, model in models.items():
        path = export_savedmodel(model, tmp_path / "saved_models" / name)
        assert path == tmp_path / "saved_models" / name / "1"
        check_savedmodel(path)  # every family's export passes the op check of untrusted SavedModels (docs/security.md)
        cases.append({
            "name": name, "path": str(path),
            "request": json.dumps({"instances": [{"b64": base64.b64encode(b).decode()} for b in blobs]}),
            "bad_request": json.dumps({"instances": [{"b64": base64.b64encode(b).decode()} for b in bad]}),
            "pixels": pixels[0].tolist(),
        })
        expected[name] = expected_scores(model, pixels)
    return cases, expected


def run_fresh_process(cases, tmp_path):
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps(cases))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", REST_CLIENT, str(spec)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def check_serving(models, results, expected):
    for name, model in models.items():
        got = results[name]
        lo, hi = model.score_range
        tol = 1e-4 * (hi - lo)
        np.testing.assert_allclose(got["score"], expected[name], atol=tol, err_msg=name)
        norm = np.clip((expected[name] - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(got["score_normalized"], norm if model.higher_better else 1 - norm, atol=1e-4)
        np.testing.assert_allclose(got["image_tensor"], expected[name][:1], atol=tol)
        err = got["bad_error"]
        assert err is not None, f"{name}: bad bytes were accepted"
        assert "input index" in err and "[1]" in err and "[1 2]" in err, err  # garbage at 1, truncated PNG at 2


def test_savedmodel_rest_request_in_fresh_process_and_cli_show(tmp_path):
    model = tiny()
    cases, expected = export_and_request_cases({"tiny": model}, tmp_path)
    check_serving({"tiny": model}, run_fresh_process(cases, tmp_path), expected)

    root = tmp_path / "saved_models" / "tiny"
    assert 'name: "tiny"' in (root / "models.config").read_text()
    assert "max_batch_size { value: 32 }" in (root / "batching_parameters.txt").read_text()
    contract = json.loads((root / "1" / "assets.extra" / "keras_iqa.json").read_text())
    tt = contract["test_time"]
    assert contract["crop_policy"] == "random" and (tt["policy"], tt["num_crops"], len(tt["positions"])) == ("random", 5, 5)

    show = subprocess.run([str(VENV_BIN / "saved_model_cli"), "show", "--dir", str(root / "1"), "--all"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert show.returncode == 0, show.stderr[-2000:]
    for sig in ("serving_default", "image_tensor", "predict_crops"):
        assert f"signature_def['{sig}']" in show.stdout
    assert "DT_STRING" in show.stdout and "DT_UINT8" in show.stdout

    # versions: next free number, refusing to overwrite
    from keras_iqa.export.savedmodel import export_savedmodel

    assert export_savedmodel(model, root).name == "2"
    with pytest.raises(ValueError, match="already exists"):
        export_savedmodel(model, root, version=1)


def test_serving_configs_parse_as_tf_serving_protos(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from keras_iqa.export.serving import write_serving_configs

    files = write_serving_configs(tmp_path / 'we"ird', 'we"ird', max_batch_size=8)
    config = text_format.Parse(Path(files["models.config"]).read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ('we"ird', '/models/we"ird', "tensorflow")
    assert model.model_version_policy.latest.num_versions == 1
    assert "max_batch_size { value: 8 }" in Path(files["batching_parameters.txt"]).read_text()


def test_predict_crops_signature_matches_keras(tmp_path):
    import tensorflow as tf

    from keras_iqa.export.savedmodel import export_savedmodel

    model = tiny(policy="grid", crops=4)
    path = export_savedmodel(model, tmp_path / "m", version=3)
    crops = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    got = tf.saved_model.load(str(path)).signatures["predict_crops"](crops=tf.constant(crops))
    np.testing.assert_allclose(got["score"].numpy(), np.asarray(model.score(crops)), atol=1e-4)
    assert got["score"].shape == (6,)


def test_score_in_groups_runs_bounded_unpadded_slices():
    import tensorflow as tf

    from keras_iqa.export.savedmodel import score_in_groups

    sizes = []

    def score_fn(x):  # records the batch of every model call at run time; score = mean pixel
        n = tf.numpy_function(lambda k: sizes.append(int(k)) or k, [tf.shape(x)[0]], tf.int32)
        with tf.control_dependencies([n]):
            return tf.reduce_mean(x, axis=[1, 2, 3])

    run = tf.function(lambda x, g: score_in_groups(score_fn, x, g), reduce_retracing=True)
    crops = tf.random.uniform([10, 4, 4, 3])
    for group, want in ((4, [4, 4, 2]), (25, [10]), (1, [1] * 10)):
        sizes.clear()
        np.testing.assert_allclose(run(crops, group), tf.reduce_mean(crops, axis=[1, 2, 3]), atol=1e-6)
        assert sizes == want, (group, sizes)
    sizes.clear()
    assert run(crops[:0], 4).shape == (0,) and sizes == []


def test_serving_scores_images_in_bounded_groups(tmp_path):
    """serving_default / image_tensor score whole images in groups of <= max_crops_per_call crops."""
    import tensorflow as tf

    from keras_iqa.export.samples import synthetic_images
    from keras_iqa.export.savedmodel import build_archive

    model = tiny(policy="grid", crops=4)
    images = synthetic_images(5, size=(48, 70), seed=11)
    want = expected_scores(model, images)
    for max_crops in (8, 3, 100):  # 4 crops per image: 2 images, 1 image, 25 images per call
        build_archive(model, max_crops_per_call=max_crops).write_out(str(tmp_path / str(max_crops)), verbose=False)
        loaded = tf.saved_model.load(str(tmp_path / str(max_crops)))
        got = loaded.signatures["image_tensor"](images=tf.constant(np.stack(images)))
        np.testing.assert_allclose(got["score"].numpy(), want, atol=1e-3)
        jpegs = tf.constant([encode(im, "PNG") for im in images])
        np.testing.assert_allclose(loaded.signatures["serving_default"](images=jpegs)["score"].numpy(), want, atol=1e-3)


# -------------------------------------------------------------------------------------------------------- TFLite
def check_tflite(model, out, variants=("none", "fp16", "dynamic", "int8")):
    """Exports the variants, checks builtin-only ops, sidecars and the fp32 / fp16 parity targets. The int8 / dynamic
    verdict (SROCC >= 0.98 over 12 images) is not asserted here: on a random-init tiny model two images a rounding step
    apart can swap ranks, and which do depends on the CPU's int8 kernels; `check_quantized_fidelity` bounds the int8 /
    dynamic error by the simulated quantisation noise instead."""
    from keras_iqa.export.tflite import export_tflite, op_names

    res = export_tflite(model, out, quantize=variants, parity_images=parity_images(), calibration_samples=64)
    report = res["parity"]
    assert set(report["variants"]) == set(variants)
    for q, path in res["files"].items():
        ops = op_names(Path(path).read_bytes())
        assert not [o for o in ops if o.startswith("Flex") or o == "CUSTOM"], (q, ops)
        side = json.loads(Path(path).with_suffix(".json").read_text())
        assert side["tflite_input"]["shape"] == [1, model.crop_size, model.crop_size, 3]
        assert side["score_range"] == list(model.score_range) and side["quantize"] == q
        v = report["variants"][q]
        if q in ("none", "fp16"):  # int8 / dynamic: judged by check_quantized_fidelity against simulated rounding noise
            assert v["pass"], (model.name, q, v, "score spread", report["keras_score_spread"])
    return report


def simulated_quantization_scores(model, crops, variant="int8", calib=None, draws=4, seed=0):
    """Per-crop Keras scores [draws, N] with the rounding of a TFLite quantized variant simulated as uniform noise: the
    quantisation steps propagated through the model itself, independently of the .tflite and of the CPU.

    int8 (scope "conv": CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, AVERAGE_POOL_2D in int8): every conv's input and output
    get U(-s/2, s/2) noise with the per-tensor step s = (max - min) / 255 of the tensor's range over the calibration crops
    (the range TFLite's calibrator records, 0 included), every average pool's output likewise; kernels get per-output-
    channel rounding noise of step max|w_c| / 127 (symmetric int8 weights; BN folding scales a channel, not its relative
    step). Input and output noise are both added, also where TFLite shares one int8 tensor between two convs: an
    overestimate by <= sqrt(2).
    dynamic (weights int8, activations quantized at run time): conv and dense kernels of >= 1024 elements (TFLite's
    threshold) get rounding noise (dense: per-tensor step, conservative), their input U(-s/2, s/2) with s = the input's
    own range / 255."""
    import keras
    import tensorflow as tf

    L = keras.layers
    conv_types = (L.Conv2D, L.DepthwiseConv2D, L.Conv2DTranspose)
    layers = [l for l in model._flatten_layers(include_self=False, recursive=True)
              if isinstance(l, conv_types) or (variant == "dynamic" and isinstance(l, L.Dense))
              or (variant == "int8" and isinstance(l, L.AveragePooling2D))]
    if variant == "dynamic":  # TFLite quantizes weights of >= 1024 elements only
        layers = [l for l in layers if not hasattr(l, "kernel") or int(np.prod(l.kernel.shape)) >= 1024]
    ranges = {}
    origs = {id(l): l.call for l in layers}

    def record(l):
        orig = origs[id(l)]
        def call(x, *a, **k):
            y = orig(x, *a, **k)
            r = ranges.setdefault(id(l), [np.inf, -np.inf, np.inf, -np.inf])
            xv, yv = np.asarray(x, np.float32), np.asarray(y, np.float32)
            r[0], r[1] = min(r[0], xv.min(), 0.0), max(r[1], xv.max(), 0.0)
            r[2], r[3] = min(r[2], yv.min(), 0.0), max(r[3], yv.max(), 0.0)
            return y
        return call

    def noisy(l, rng):
        orig = origs[id(l)]
        r = ranges.get(id(l))
        def u(t, step):
            return t + tf.cast(tf.random.stateless_uniform(tf.shape(t), rng.integers(0, 2**31, 2), -0.5, 0.5) * step, t.dtype)
        def call(x, *a, **k):
            if isinstance(l, L.AveragePooling2D):
                y = orig(x, *a, **k)
                return u(y, (r[3] - r[2]) / 255.0)
            if variant == "int8":
                s_in = (r[1] - r[0]) / 255.0
            else:  # dynamic: the tensor's own range at run time
                s_in = (tf.maximum(tf.reduce_max(x), 0.0) - tf.minimum(tf.reduce_min(x), 0.0)) / 255.0
            y = orig(u(x, s_in), *a, **k)
            if variant == "int8":
                y = u(y, (r[3] - r[2]) / 255.0)
            return y
        return call

    kernels = []
    for l in layers:
        if hasattr(l, "kernel"):
            w = np.asarray(l.kernel)
            if isinstance(l, L.Conv2DTranspose):
                axes = (0, 1, 3)
            elif isinstance(l, L.DepthwiseConv2D):
                axes = (0, 1)
            elif isinstance(l, L.Dense):
                axes = None  # per-tensor (conservative)
            else:
                axes = tuple(range(w.ndim - 1))
            step = np.max(np.abs(w), axis=axes, keepdims=True) / 127.0
            kernels.append((l.kernel, w, step))
    try:
        if variant == "int8":
            for l in layers:
                l.call = record(l)
            for i in range(0, len(calib), 16):
                model.score(np.asarray(calib[i:i + 16], np.float32))
        rng = np.random.default_rng(seed)
        out = []
        for d in range(draws):
            for var, w, step in kernels:
                var.assign((w + rng.uniform(-0.5, 0.5, w.shape) * step).astype(w.dtype))
            for l in layers:
                l.call = noisy(l, rng)
            out.append(np.concatenate([np.asarray(model.score(np.asarray(crops[i:i + 16], np.float32))).reshape(-1)
                                       for i in range(0, len(crops), 16)]))
        return np.stack(out)
    finally:
        for var, w, _ in kernels:
            var.assign(w)
        for l in layers:
            l.__dict__.pop("call", None)


def _op_input_dtypes(path, op):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    return [dtypes[d["inputs"][0]] for d in interp._get_ops_details() if d["op_name"] == op]


def test_int8_scope_conv_keeps_other_ops_float(tmp_path):
    from keras_iqa.export.tflite import export_tflite

    model = tiny()
    conv = export_tflite(model, tmp_path / "conv.tflite", quantize=["int8"], parity=False, calibration_samples=16)
    full = export_tflite(model, tmp_path / "all.tflite", quantize=["int8"], parity=False, calibration_samples=16,
                         int8_scope="all")
    assert _op_input_dtypes(conv["files"]["int8"], "CONV_2D") == ["int8"]
    assert _op_input_dtypes(conv["files"]["int8"], "FULLY_CONNECTED") == ["float32"]
    assert _op_input_dtypes(full["files"]["int8"], "FULLY_CONNECTED") == ["int8"]
    assert json.loads((tmp_path / "all.json").read_text())["int8_scope"] == "all"
    with pytest.raises(ValueError, match="int8_scope"):
        export_tflite(model, tmp_path / "x.tflite", quantize=["int8"], parity=False, int8_scope="most")


# fp16 TFLite vs Keras, |score difference| on the 0-100 scale, for `tiny()` at seed 0. fp16 stores each weight and constant
# with an 11-bit significand: relative rounding u = 2**-11; compute stays float32. A score is 50 + 10 * (sum of products of
# at most 3 rounded factors: normalisation scale or offset, conv kernel or bias, dense kernel or bias), so it moves by at
# most ((1 + u)**3 - 1) * M < 3.01 u * M, M = 10 * (the same sum over absolute values), plus float32 rounding of both
# sides (<= 2 * 260 terms * 2**-24 * M). The test checks M for its images: 3.01 u M + 3.1e-5 M <= 0.6 (M <= ~400).
FP16_MAX_ABS_DIFF = 0.6


def _litert_scores(path, crops):
    """Per-crop scores of a .tflite in the LiteRT interpreter, one crop per call (the sidecar's [1, c, c, 3] input)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    got = []
    for crop in crops:
        interp.set_tensor(inp["index"], crop[None].astype(np.float32))
        interp.invoke()
        got.append(float(interp.get_tensor(out["index"]).reshape(-1)[0]))
    return np.array(got)


def _fp16_first_order_magnitude(model, crops):
    """M per crop (see FP16_MAX_ABS_DIFF): the TinyIQA score's terms taken in absolute value."""
    import tensorflow as tf

    a = np.abs(crops) * np.abs(np.asarray(model.norm.scale, np.float32)) + np.abs(np.asarray(model.norm.offset, np.float32))
    conv = tf.nn.conv2d(a, np.abs(np.asarray(model.conv.kernel)), strides=2, padding="VALID").numpy()
    g = (conv + np.abs(np.asarray(model.conv.bias))).mean(axis=(1, 2))
    return 10.0 * (g @ np.abs(np.asarray(model.head.kernel))[:, 0] + abs(float(np.asarray(model.head.bias)[0])))


def test_tflite_fp32_fp16_parity_and_cli_errors(tmp_path, capsys):
    from data_pipeline.test_time import TestTimeCrops
    from keras_iqa.cli import main

    keras.utils.set_random_seed(0)
    model = tiny()
    rep = check_tflite(model, tmp_path / "tfl", variants=("none", "fp16"))
    assert rep["variants"]["none"]["max_abs_diff_rel"] <= 1e-4
    # fp16 parity recomputed here: the same crops through Keras and through the .tflite in the interpreter
    fn = TestTimeCrops.from_model(model).crop_function()
    crops = np.concatenate([np.asarray(fn(np.asarray(im, np.uint8))) for im in parity_images()]).astype(np.float32)
    keras_scores = np.asarray(model.score(crops), np.float64).reshape(-1)
    fp16_scores = _litert_scores(rep["variants"]["fp16"]["file"], crops)
    magnitude = float(_fp16_first_order_magnitude(model, crops).max())
    assert (3.01 * 2.0**-11 + 3.1e-5) * magnitude <= FP16_MAX_ABS_DIFF, magnitude  # the bound's premise
    assert np.ptp(keras_scores) > 4 * FP16_MAX_ABS_DIFF  # the bound is small next to the scores' spread
    assert np.max(np.abs(fp16_scores - keras_scores)) <= FP16_MAX_ABS_DIFF
    # a single-file --out needs a single variant
    from keras_iqa.export.tflite import export_tflite

    with pytest.raises(ValueError, match="names one file"):
        export_tflite(model, tmp_path / "x.tflite", quantize=["none", "fp16"], parity=False)
    assert main(["export", str(tmp_path / "missing.keras"), "--format", "tflite", "--out", str(tmp_path / "o")]) == 2
    assert "no such .keras file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- each model family
def fit_briefly(model, steps=25, batch=16, seed=0, lr=3e-3):
    """A few regression steps on synthetic degraded crops, so that the tiny model's scores vary with image content as a
    trained model's do. Random weights give scores whose spread across images is within int8 rounding noise (e.g. 0.01 on a
    0..100 scale), where an int8 SROCC measures noise, not fidelity. Targets: a local-contrast quality proxy, z-scored and
    placed around the model's current mean output with a spread of 10% of the score range."""
    import tensorflow as tf

    from data_pipeline.test_time import TestTimeCrops
    from keras_iqa.export.samples import synthetic_images

    rng = np.random.default_rng(seed)
    c = model.crop_size
    images = synthetic_images(48, size=(c + 16, c + 32), seed=seed + 100)
    crops = np.stack([np.asarray(TestTimeCrops(crop_size=c, num_crops=1, policy="grid").crops(im))[0] for im in images])
    hp = np.abs(np.diff(crops.mean(-1), axis=1)).mean(axis=(1, 2))
    lo, hi = model.score_range
    start = float(np.mean(np.asarray(model.score(crops[:16]))))
    target = (start + 0.1 * (hi - lo) * (hp - hp.mean()) / (hp.std() + 1e-6)).astype("float32")
    opt = keras.optimizers.Adam(lr)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.reshape(model.score(x), [-1]) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])
        return loss

    for _ in range(steps):
        idx = rng.choice(len(crops), batch, replace=False)
        step(tf.constant(crops[idx]), tf.constant(target[idx]))
    return model


def parity_images():
    from keras_iqa.export.samples import synthetic_images

    return synthetic_images(12, seed=1234)


def spread_scores(model, images, fraction=0.1):
    """Sets the final linear layer (score = affine in its kernel and bias) so that the image scores (mean over the
    test-time crops) of `images` have their mean at the middle of `score_range` and a standard deviation of `fraction` of it: scores spread over a good part of the range,
    as a trained model's do (a fresh head has a small kernel: its scores sit within a fraction of a percent of the middle).
    Scaling the layer scales the score's image-dependent part and its quantisation noise alike: it does not change int8
    fidelity, which `simulated_quantization_scores` checks separately."""
    layer = model.head_layers[-1] if hasattr(model, "head_layers") else model.out
    lo, hi = model.score_range

    from data_pipeline.test_time import TestTimeCrops
    from keras_iqa.export.parity import keras_crop_scores

    contract = TestTimeCrops.from_model(model)
    fn = contract.crop_function()
    crops = np.concatenate([np.asarray(fn(im)) for im in images])

    def scores():
        return keras_crop_scores(model, crops).astype(np.float64).reshape(len(images), -1).mean(1)

    s = scores()
    k = fraction * (hi - lo) / max(float(s.std()), 1e-12)
    w, b = (np.asarray(v) for v in (layer.kernel, layer.bias))
    layer.kernel.assign((w * k).astype(w.dtype))
    layer.bias.assign((b * k).astype(b.dtype))
    m1 = scores().mean()
    layer.bias.assign((b * k + 1).astype(b.dtype))
    alpha = scores().mean() - m1  # d score / d bias
    layer.bias.assign((b * k + ((lo + hi) / 2 - m1) / alpha).astype(b.dtype))
    return model


def family_models():
    import keras_iqa

    available = [n for n in FAMILIES if n in keras_iqa.list_models()]
    models = {}
    for name in available:
        keras.utils.set_random_seed(0)
        # 9 test crops instead of 25 keep the test fast (same crop code path). REQA's final ReLU outputs 0 for every image
        # at random init (dead unit, no gradient to fit), which makes parity trivial: test the head without it.
        overrides = {"test_crops": 9, **({"final_relu": False} if name.startswith("reqa") else {})}
        m = keras_iqa.create_model(name, **overrides)
        m(np.zeros((1, m.crop_size, m.crop_size, 3), "float32"))
        # MetaIQA-tiny's scores follow the images only after ~200 steps (at 25 its image-dependent part is 4x the
        # simulated int8 noise, which check_quantized_fidelity rejects; at 200, ~25x)
        steps = 200 if name.startswith("metaiqa") else 25
        models[name] = spread_scores(fit_briefly(m, steps=steps), parity_images())
    return models


def test_families_savedmodel_and_tflite(tmp_path):
    import keras_iqa

    missing = [n for n in FAMILIES if n not in keras_iqa.list_models()]
    assert not missing, f"model families not registered: {missing}"
    models = family_models()
    cases, expected = export_and_request_cases(models, tmp_path)
    check_serving(models, run_fresh_process(cases, tmp_path), expected)
    for name, model in models.items():
        report = check_tflite(model, tmp_path / "tflite" / name)
        print(name, json.dumps({q: {k: v[k] for k in ("max_abs_diff_rel", "srocc_vs_keras", "pass")}
                                for q, v in report["variants"].items()}), "spread", report["keras_score_spread"])
        check_quantized_fidelity(model, report)


def check_quantized_fidelity(model, report, images=None):
    """int8 and dynamic against the simulated quantisation noise (`simulated_quantization_scores`), per image score
    (mean over the test-time crops), on the parity images of `check_tflite`:
    - the model must spread its scores over >= 5% (std) of the score range and >= 10x the simulated noise std sigma: then
      the Keras and int8 scores correlate >= 1 / sqrt(1 + 0.1^2) = 0.995, so the parity SROCC target (0.98) measures
      fidelity, not noise;
    - every |tflite - keras| <= 6 sigma: 3 sigma (Gaussian tail, over 12 images) times 2 (TFLite's fixed-point
      requantisation rounds within one step, the simulation within half a step)."""
    from data_pipeline.test_time import TestTimeCrops
    from keras_iqa.export.parity import keras_crop_scores
    from keras_iqa.export.samples import calibration_crops
    from keras_iqa.export.tflite import TFLiteScorer

    images = images or parity_images()
    contract = TestTimeCrops.from_model(model)
    n, fn = contract.num_crops, contract.crop_function()
    crops = np.concatenate([np.asarray(fn(im)) for im in images])
    ref = keras_crop_scores(model, crops).reshape(-1, n).mean(1)
    lo, hi = model.score_range
    spread = float(ref.std())
    assert spread >= 0.05 * (hi - lo), (model.name, "score spread", spread)
    calib, _ = calibration_crops(model, None, n=64)
    for q in ("int8", "dynamic"):
        if q not in report["variants"]:
            continue
        sim = simulated_quantization_scores(model, crops, q, calib=calib).reshape(-1, len(images), n).mean(-1)
        sigma = float(np.sqrt(np.mean((sim - ref) ** 2)))
        got = TFLiteScorer(report["variants"][q]["file"])(crops).reshape(-1, n).mean(1)
        err = float(np.abs(got - ref).max())
        print(model.name, q, f"spread {spread:.4g} sigma {sigma:.4g} max err {err:.4g} ({err / sigma:.2f} sigma)")
        assert spread >= 10 * sigma, (model.name, q, "spread", spread, "simulated noise", sigma)
        assert err <= 6 * sigma, (model.name, q, "max |tflite - keras|", err, "simulated noise", sigma)


def test_export_cli_savedmodel_from_run_dir(tmp_path, capsys):
    from keras_iqa.cli import main
    from keras_iqa.training.runner import RunDir

    run = RunDir.create(tmp_path / "run", config={"model": "tiny"})
    run.save_final(tiny())
    rc = main(["export", str(run.path), "--format", "savedmodel", "--out", str(tmp_path / "sm" / "tiny"), "--version", "7"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "sm" / "tiny" / "7" / "saved_model.pb").is_file()
    assert "tensorflow_model_server" in capsys.readouterr().out
