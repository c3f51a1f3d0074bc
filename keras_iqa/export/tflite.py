"""TFLite conversion with builtin ops only (no Flex / Select TF ops, which phone runtimes lack).

Two kinds of model, each in every quantization variant:
- per crop (default): input `crops` float32 [1, c, c, 3], RGB pixels in [0, 255] (ImageNet normalisation is inside the
  graph); output `score` float32 [1] on the model's `score_range`. The app takes the test-time crops and averages their
  scores as the contract says (`data_pipeline.test_time`; written in the sidecar JSON `<file>.json` and in the model's
  own metadata, entry "keras_iqa_contract").
- whole photo (`photo_size=(H, W)`): input `photo` uint8 [1, H, W, 3] RGB; the test-time resize, crops and mean run inside
  the graph (static ops: constant resize matrices and slices), output `score` float32 [1]: one call per photo gives the
  score `keras-iqa score` gives for that H x W photo. The app only scales its photo to H x W.
Quantized variants keep float32 (or uint8 photo) input and float32 output (the quantize/dequantize happens inside), so app
code is the same for all variants. `read_contract(file)` reads the contract back from a .tflite.

Variants (`quantize`):
- "none"    float32 weights and activations;
- "fp16"    float16 weights, float32 compute on CPU (GPU delegates run fp16);
- "dynamic" int8 weights, activations quantized on the fly (dynamic range quantization);
- "int8"    int8 weights and activations of the convolutions (and the pads/pools between them), calibrated on a
            representative dataset (`samples.calibration_crops`); every other op type stays float32 (`INT8_OPS`), with
            QUANTIZE/DEQUANTIZE at the boundaries (`TFLITE_BUILTINS_INT8` + `TFLITE_BUILTINS`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from data_pipeline.test_time import TestTimeCrops
from keras_iqa.caller import quiet_native, setting
from keras_iqa.export.contract import model_contract, write_json
from keras_iqa.export.parity import parity_report, photo_parity_report
from keras_iqa.export.samples import calibration_crops, calibration_photos
from keras_iqa.export.tflite_scorer import TFLiteScorer, interpreter  # noqa: F401  (their old import path)
from keras_iqa.progress import progress as make_bar

QUANTIZE = ("none", "fp16", "dynamic", "int8")
FILE_TAG = {"none": "fp32", "fp16": "fp16", "dynamic": "dynamic", "int8": "int8"}


METADATA_NAME = "keras_iqa_contract"


def concrete_score_function(model, batch: int = 1, photo_size: Optional[Sequence[int]] = None):
    """The concrete function that is converted: `crops [batch, c, c, 3] -> {"score": [batch]}`, or with `photo_size`
    (H, W) `photo uint8 [1, H, W, 3] -> {"score": [1]}` (the test-time contract inside the graph)."""
    c = int(model.crop_size)
    if photo_size is not None:
        h, w = (int(v) for v in photo_size)
        contract = TestTimeCrops.from_model(model)

        @tf.function(input_signature=[tf.TensorSpec([1, h, w, 3], tf.uint8, name="photo")])
        def photo_score(photo):
            crops = contract.fixed_size_crops(photo[0], h, w)
            per_crop = tf.reshape(tf.cast(model.score(crops), tf.float32), [1, contract.num_crops])
            return {"score": contract.image_score(per_crop)}

        return photo_score.get_concrete_function()

    @tf.function(input_signature=[tf.TensorSpec([batch, c, c, 3], tf.float32, name="crops")])
    def score(crops):
        return {"score": tf.reshape(tf.cast(model.score(crops), tf.float32), [batch])}

    return score.get_concrete_function()


#: op types quantized in the int8 variant; every other op type of the model stays float32. Convolutions are nearly all of
#: the compute of every family (ResNet encoders, U-Net decoder). Measured on the tiny families (12 images, 9 crops each):
#: int8 convolutions alone keep SROCC vs Keras at 0.993 (HCL) and 0.986 (REQA), while also quantizing ADD (residual
#: sums, LayerNorm, attention) drops it to 0.04 and 0.95, and quantizing every supported op (TFLite's default) to 0.72
#: and 0.92; FULLY_CONNECTED (small heads, a negligible share of the compute) cost HCL 0.03.
INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "PAD", "MAX_POOL_2D", "AVERAGE_POOL_2D")


#: `export_tflite(int8_scope=...)` -> `convert(float_ops=...)`
INT8_SCOPES = {"conv": None, "all": ()}


def default_float_ops(float_flat: bytes, int8_ops: Sequence[str] = INT8_OPS) -> list:
    """Op types of a float flatbuffer that the int8 variant keeps float32: all but `int8_ops`."""
    return [o for o in op_names(float_flat) if o not in int8_ops]


def _builtin_converter(fn):
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.allow_custom_ops = False
    return conv


def _selective_int8(conv, gen, float_ops) -> bytes:
    opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops))
    dbg = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=gen, debug_options=opts)
    return dbg.get_nondebug_quantized_model()


def convert(model, quantize: str = "none", representative: Optional[np.ndarray] = None,
            float_ops: Optional[Sequence[str]] = None, photo_size: Optional[Sequence[int]] = None) -> bytes:
    """Converts `model` to a .tflite flatbuffer with builtin ops only (per crop; whole photo with `photo_size` (H, W),
    then `representative` holds uint8 photos of that size).

    `float_ops` (int8 only): op types left float32; None = every op type of the model but `INT8_OPS`; () = TFLite's
    default full-integer quantization of every op that has an int8 kernel.

    Raises:
        ValueError: unknown `quantize`, int8 without `representative` crops, or ops that need Flex (named in the message).
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"{setting('quantize', quantize)}: choose from {', '.join(QUANTIZE)}")

    # weights frozen into constants: no resource-variable ops in the flatbuffer (calibration cannot run those)
    fn = convert_variables_to_constants_v2(concrete_score_function(model, photo_size=photo_size))
    conv = _builtin_converter(fn)
    if quantize == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        if representative is None or len(representative) == 0:
            raise ValueError("int8 quantization needs representative crops (samples.calibration_crops)")
        rep = np.asarray(representative, np.uint8 if photo_size is not None else np.float32)

        def gen():
            for x in rep:
                yield [x[None]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        with quiet_native():  # the converter's own stderr lines ("fully_quantize: 0, ..."): keras-iqa shows them with -v
            if quantize == "int8" and float_ops is None:
                float_ops = default_float_ops(_builtin_converter(fn).convert())
            if quantize == "int8" and float_ops:
                flat = _selective_int8(conv, gen, float_ops)
            else:
                flat = conv.convert()
    except Exception as e:
        raise ValueError(f"TFLite conversion ({quantize}) with builtin ops only failed: {e}. An op that needs Flex/Select TF "
                         "ops must be replaced in the model (e.g. unroll loops statically)") from e
    flex = flex_ops(flat)
    if flex:
        raise ValueError(f"the converted model uses non-builtin ops {flex}; phones lack them")
    return flat


def embed_contract(flat: bytes, contract: dict) -> bytes:
    """The flatbuffer with `contract` (JSON) added as model metadata "keras_iqa_contract" (replacing an earlier one)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flat))
    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps(contract, default=str).encode("utf-8"), np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_contract(model) -> Optional[dict]:
    """The contract embedded in a .tflite (path or bytes), or None when it has none."""
    from tensorflow.lite.tools import flatbuffer_utils

    data = bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    for m in obj.metadata or []:
        name = m.name.decode() if isinstance(m.name, bytes) else m.name
        if name == METADATA_NAME:
            return json.loads(bytes(np.asarray(obj.buffers[m.buffer].data, np.uint8)).decode("utf-8"))
    return None


def op_names(flat: bytes) -> list:
    """Operator names in a flatbuffer (via the LiteRT interpreter)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # without the default XNNPACK delegate, so the listing shows the model's own ops, not "DELEGATE"
    interp = Interpreter(model_content=bytes(flat),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return sorted({d["op_name"] for d in interp._get_ops_details()})


def flex_ops(flat: bytes) -> list:
    return [n for n in op_names(flat) if n.startswith("Flex") or n == "CUSTOM"]


def export_tflite(model, out: os.PathLike, quantize: Sequence[str] = ("none",), data_dir: Optional[str] = None,
                  name: Optional[str] = None, parity: bool = True, parity_images: Optional[list] = None,
                  calibration_samples: int = 128, source: Optional[str] = None, int8_scope: str = "conv",
                  photo_size: Optional[Sequence[int]] = None, progress: bool = False) -> dict:
    """Writes `<out>/<name>_<fp32|fp16|dynamic|int8>.tflite` + a sidecar `.json` each, and `<out>/parity.json`.

    `out` ending in ".tflite" (with one variant) names the file directly. `int8_scope`: "conv" quantizes `INT8_OPS` only,
    "all" every op with an int8 kernel. `photo_size` (H, W): whole-photo models instead (`<name>_<variant>_photo<H>x<W>
    .tflite`, parity in `parity_photo<H>x<W>.json`). Returns {"files": {variant: path}, "parity": report,
    "calibration": {"source", "count", "unit"} of int8 (None without)}; `calibration_samples` is an upper bound.
    `progress`: a bar over the stages (calibration, one conversion per variant, parity) and one per parity image on stderr.
    """
    if int8_scope not in INT8_SCOPES:
        raise ValueError(f"int8_scope must be one of {', '.join(INT8_SCOPES)}, got {int8_scope!r}")
    quantize = list(dict.fromkeys(quantize))
    if photo_size is not None:
        photo_size = tuple(int(v) for v in photo_size)
        if len(photo_size) != 2 or min(photo_size) < 1:
            raise ValueError(f"photo_size must be (height, width) in pixels, got {photo_size}")
    tag = "" if photo_size is None else f"_photo{photo_size[0]}x{photo_size[1]}"
    out = Path(out)
    if out.suffix == ".tflite":
        if len(quantize) != 1:
            raise ValueError(f"{setting('out', str(out))} names one file but {len(quantize)} variants were asked; give a "
                             "directory")
        out_dir, paths = out.parent, {quantize[0]: out}
    else:
        out_dir = out
        stem = name or getattr(model, "name", "model")
        paths = {q: out / f"{stem}_{FILE_TAG[q]}{tag}.tflite" for q in quantize}
    out_dir.mkdir(parents=True, exist_ok=True)
    order = sorted(quantize, key=lambda v: QUANTIZE.index(v) if v in QUANTIZE else len(QUANTIZE))
    steps = (["calibration"] if "int8" in quantize else []) + [f"convert {FILE_TAG.get(q, q)}" for q in order] + (
        ["parity"] if parity else [])
    stage = make_bar(len(steps), "export tflite", progress, unit="stage")
    try:
        return _export_tflite(model, out_dir, paths, order, data_dir, parity, parity_images, calibration_samples, source,
                              int8_scope, photo_size, tag, stage, progress)
    finally:
        stage.close()


def _export_tflite(model, out_dir, paths, quantize, data_dir, parity, parity_images, calibration_samples, source, int8_scope,
                   photo_size, tag, stage, progress) -> dict:
    def step(name):
        stage.set_postfix_str(name)

    rep, rep_source = (None, None)
    if "int8" in quantize:
        step("calibration")

        rep, rep_source = calibration_crops(model, data_dir, n=calibration_samples)
        if photo_size is not None:  # whole photos of the export size: the calibration images, resized

            rep, rep_source = calibration_photos(photo_size, n=max(8, calibration_samples // 8))
        stage.update(1)
    files, fp32_flat = {}, None
    # fp32 first: its op list gives the int8 float ops without a second conversion (unknown names fail in `convert`)
    for q in quantize:  # already in that order
        step(f"convert {FILE_TAG.get(q, q)}")
        float_ops = INT8_SCOPES[int8_scope]
        if q == "int8" and float_ops is None and fp32_flat is not None:
            float_ops = default_float_ops(fp32_flat)
        flat = convert(model, q, rep if q == "int8" else None, float_ops=float_ops, photo_size=photo_size)
        if q == "none":
            fp32_flat = flat
        path = paths[q]
        if photo_size is None:
            tflite_input = {"name": "crops", "dtype": "float32", "shape": [1, int(model.crop_size), int(model.crop_size), 3],
                            "range": [0.0, 255.0], "layout": "NHWC RGB"}
            output = "score of one crop; the image score is the mean over the test_time crops"
        else:
            tflite_input = {"name": "photo", "dtype": "uint8", "shape": [1, photo_size[0], photo_size[1], 3],
                            "range": [0, 255], "layout": "NHWC RGB",
                            "note": "scale the photo to exactly this size; the test-time crops run inside the model"}
            output = "score of the photo (test_time crops and mean inside the model)"
        contract = model_contract(
            model, format="tflite", kind="photo" if photo_size else "crop", quantize=q, source=source, file=path.name,
            tflite_input=tflite_input,
            tflite_output={"name": "score", "dtype": "float32", "shape": [1], "scale": list(model.score_range),
                           "is": output},
            calibration=rep_source if q == "int8" else None, int8_scope=int8_scope if q == "int8" else None,
            ops=op_names(flat),
        )
        flat = embed_contract(flat, contract)
        contract["size_bytes"] = len(flat)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(flat)
        os.replace(tmp, path)
        write_json(contract, path.with_suffix(".json"))
        files[q] = str(path)
        stage.update(1)
    report = None
    if parity:
        step("parity")
        if photo_size is None:
            report = parity_report(model, files, images=parity_images, progress=progress)
        else:
            report = photo_parity_report(model, files, photo_size, images=parity_images, progress=progress)
        write_json(report, out_dir / f"parity{tag}.json")
        stage.update(1)
    calibration = None if rep is None else {"source": rep_source, "count": int(len(rep)),
                                            "unit": "crops" if photo_size is None else "photos"}
    return {"files": files, "parity": report, "calibration": calibration}
