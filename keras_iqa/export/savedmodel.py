"""SavedModel export in the TF Serving layout, written with `keras.export.ExportArchive`.

Signatures (all return `score` on the model's `score_range` and `score_normalized` in [0, 1], higher = better):
- `serving_default`: `images` tf.string [B] (JPEG, PNG, BMP or GIF bytes) -> per-image scores. Decoding (the decode policy of
  `data_pipeline.images.decode_image_tensor`) and the test-time crops (`data_pipeline.test_time`, the same as every other path) run on CPU
  inside the graph; the model runs wherever TF Serving places it (no other device pins: CPU and GPU servers alike).
  Bytes that are not one of those formats, empty, or a truncated PNG/GIF/BMP fail a graph assertion naming the input index.
- `image_tensor`: `images` uint8 [B, H, W, 3] (any H, W; one size per request) -> per-image scores.
- `predict_crops`: `crops` float32 [B, c, c, 3] RGB in [0, 255] -> per-crop scores (for clients cropping themselves).

Example:
>>> import tempfile
>>> from pathlib import Path
>>> import keras_iqa
>>> from keras_iqa.export.savedmodel import export_savedmodel
>>> root = Path(tempfile.mkdtemp()) / "saved_models" / "metaiqa"
>>> version_dir = export_savedmodel(keras_iqa.create_model("metaiqa-tiny"), root)
>>> version_dir.name, sorted(p.name for p in root.iterdir())
('1', ['1', 'batching_parameters.txt', 'models.config'])
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Optional

import keras
import tensorflow as tf

from data_pipeline.images import DEFAULT_POLICY, decode_image_tensor
from keras_iqa.caller import setting
from keras_iqa.export.contract import model_contract, write_json
from data_pipeline.test_time import TestTimeCrops
from keras_iqa.export.serving import write_serving_configs
from keras_iqa.progress import progress as make_bar

SIGNATURES = ("serving_default", "image_tensor", "predict_crops")
CONTRACT_FILE = "assets.extra/keras_iqa.json"


def next_version(model_root: os.PathLike) -> int:
    """1 + the largest integer-named subdirectory of `model_root` (TF Serving version folders), or 1."""
    root = Path(model_root)
    versions = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()] if root.is_dir() else []
    return max(versions, default=0) + 1


def validate_encoded(images):
    """Graph check of a tf.string [B] batch before decoding; fails with the index of the first bad input.

    Accepts JPEG (FF D8), PNG (89 50 4E 47 ... ending with the IEND chunk), BMP ("BM", declared size <= length) and GIF
    ("GIF", ending with the 0x3B trailer). Truncated JPEGs cannot be told apart cheaply (trailing data after the end marker is
    legal); the JPEG decoder rejects them with "Invalid JPEG data".
    """
    n = tf.strings.length(images)

    def sub(pos, length):  # substr that never fails on short inputs (pos clipped to the length)
        pos = tf.minimum(tf.broadcast_to(tf.cast(pos, tf.int32), tf.shape(n)), n)
        return tf.strings.substr(images, pos, tf.fill(tf.shape(n), length))

    head2 = sub(0, 2)
    is_jpeg = tf.equal(head2, b"\xff\xd8")
    is_png = tf.equal(sub(0, 4), b"\x89PNG")
    is_bmp = tf.equal(head2, b"BM")
    is_gif = tf.equal(sub(0, 3), b"GIF")
    png_ok = tf.equal(sub(tf.maximum(n - 8, 0), 8), b"IEND\xaeB`\x82")
    gif_ok = tf.equal(sub(tf.maximum(n - 1, 0), 1), b";")
    size_bytes = sub(2, 4)
    size_bytes = tf.where(tf.equal(tf.strings.length(size_bytes), 4), size_bytes, b"\x00\x00\x00\x00")
    declared = tf.reshape(tf.io.decode_raw(size_bytes, tf.uint8, fixed_length=4), [-1, 4])
    declared = tf.reduce_sum(tf.cast(declared, tf.int64) * tf.constant([1, 256, 65536, 16777216], tf.int64), axis=1)
    bmp_ok = tf.logical_and(tf.greater(n, 26), tf.less_equal(declared, tf.cast(n, tf.int64)))
    ok = tf.logical_or(is_jpeg, tf.logical_or(tf.logical_and(is_png, png_ok),
                                              tf.logical_or(tf.logical_and(is_bmp, bmp_ok), tf.logical_and(is_gif, gif_ok))))
    bad = tf.where(tf.logical_not(ok))[:, 0]
    first_bad = tf.concat([bad, [-1]], 0)[0]
    return tf.debugging.Assert(
        tf.reduce_all(ok),
        ["keras-iqa serving_default: input index", first_bad, "(of", tf.size(images),
         ") is not a decodable JPEG, PNG, BMP or GIF image (empty, truncated or another format); all bad indices:", bad,
         "; send base64 of the original file bytes ({\"b64\": ...})"],
        summarize=32,
    )


MAX_CROPS_PER_CALL = 32


def score_in_groups(score_fn, crops, group_size: int):
    """`score_fn` on consecutive slices of at most `group_size` crops of `crops` [N, c, c, 3], one after another
    (`tf.while_loop`, no padding: a short request costs only its own crops); per-crop float32 scores [N]."""
    starts = tf.range(0, tf.shape(crops)[0], group_size)

    def body(i, scores):
        chunk = crops[starts[i]:starts[i] + group_size]
        return i + 1, scores.write(i, tf.cast(tf.reshape(score_fn(chunk), [-1]), tf.float32))

    scores = tf.TensorArray(tf.float32, size=tf.size(starts), infer_shape=False, element_shape=[None])
    _, scores = tf.while_loop(lambda i, _: i < tf.size(starts), body, (0, scores), parallel_iterations=1)
    return tf.reshape(scores.concat(), [-1])


def build_archive(model, decode_policy=None, max_crops_per_call: int = MAX_CROPS_PER_CALL):
    """An `ExportArchive` tracking `model` with the three signatures (see the module docstring).

    `serving_default` / `image_tensor` run the model on groups of whole images of at most `max_crops_per_call` crops
    (at least one image), one group after another: a 32-image request to a 25-crop model is then 32 calls of 25 crops,
    not one of 800 (in the session-5 deploy benchmark, 32-image requests took REQA to 14.6 GiB and HCL out of memory).
    Per-image CPU timings did not depend on the request size (README, Deployment > Measured).
    """
    policy = decode_policy or DEFAULT_POLICY
    contract = TestTimeCrops.from_model(model)
    c, n = contract.crop_size, contract.num_crops
    crops_spec = tf.TensorSpec([n, c, c, 3], tf.float32)

    def outputs(per_crop, per_image):
        scores = contract.image_score(tf.reshape(per_crop, [-1, per_image]))
        return {"score": scores, "score_normalized": tf.cast(model.normalized_score(scores), tf.float32)}

    def score_crops(crops):  # [B, n, c, c, 3] -> per-crop [B*n]
        return score_in_groups(model.score, tf.reshape(crops, [-1, c, c, 3]), max(1, int(max_crops_per_call) // n) * n)

    def serving_default(images):
        images = tf.reshape(images, [-1])
        with tf.device("/cpu:0"):
            check = validate_encoded(images)
            with tf.control_dependencies([check]):
                crops = tf.map_fn(lambda s: contract.crops(decode_image_tensor(s, policy)),
                                  tf.identity(images), fn_output_signature=crops_spec)
        return outputs(score_crops(crops), n)

    def image_tensor(images):
        with tf.device("/cpu:0"):
            crops = tf.map_fn(contract.crops, images, fn_output_signature=crops_spec)
        return outputs(score_crops(crops), n)

    def predict_crops(crops):
        return outputs(tf.reshape(model.score(crops), [-1]), 1)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serving_default, input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    archive.add_endpoint("image_tensor", image_tensor, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.add_endpoint("predict_crops", predict_crops, input_signature=[tf.TensorSpec([None, c, c, 3], tf.float32, name="crops")])
    return archive


def export_savedmodel(model, out: os.PathLike, version: Optional[int] = None, name: Optional[str] = None,
                      max_batch_size: int = 32, overwrite: bool = False, source: Optional[str] = None,
                      progress: bool = False) -> Path:
    """Writes `out/<version>/` (a SavedModel) plus `out/models.config` and `out/batching_parameters.txt`.

    Args:
        model: a keras_iqa `IQAModel`.
        out: the model root, `saved_models/NAME` (NAME defaults to its folder name).
        version: TF Serving version number; default: next free integer (1 for a new root).
        max_batch_size: written to `batching_parameters.txt`.
        overwrite: replace an existing version folder (otherwise that is an error).
        progress: a bar over the stages (trace the signatures, write the SavedModel, serving configs) on stderr.
    Returns:
        the version directory.
    """
    root = Path(out)
    name = name or root.name
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ValueError(f"model name {name!r} (from {setting('out', str(out))}) must be letters, digits, '_', '-' or '.' "
                         "for TF Serving")
    version = next_version(root) if version is None else int(version)
    if version < 0:
        raise ValueError(f"{setting('version', version)}: the version must be a non-negative integer")
    target = root / str(version)
    if target.exists():
        if not overwrite:
            raise ValueError(f"{target} already exists; pass {setting('version', next_version(root))} or "
                             f"{setting('overwrite', True)}")
        shutil.rmtree(target)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{version}-{os.getpid()}"  # TF Serving ignores non-numeric folders; rename makes the version appear at once
    if tmp.exists():
        shutil.rmtree(tmp)

    with make_bar(3, "export savedmodel", progress, unit="stage") as stage:
        stage.set_postfix_str("trace signatures")
        archive = build_archive(model)
        stage.update(1)
        stage.set_postfix_str("write SavedModel")
        archive.write_out(str(tmp), verbose=False)
        stage.update(1)
        stage.set_postfix_str("serving configs")
        _finish_version(model, root, tmp, target, name, version, source, max_batch_size)
        stage.update(1)
    return target


def _finish_version(model, root, tmp, target, name, version, source, max_batch_size) -> None:
    contract = model_contract(model, format="savedmodel", name=name, version=version, source=source,
                              signatures={
                                  "serving_default": "images: tf.string [B] encoded JPEG/PNG/BMP/GIF -> score, score_normalized [B]",
                                  "image_tensor": "images: uint8 [B, H, W, 3] -> score, score_normalized [B]",
                                  "predict_crops": f"crops: float32 [B, {model.crop_size}, {model.crop_size}, 3] in [0, 255] -> "
                                                   "score, score_normalized [B] (per crop)",
                              })
    write_json(contract, tmp / CONTRACT_FILE)
    os.replace(tmp, target)
    write_serving_configs(root, name, max_batch_size=max_batch_size)
