"""TFLite conversion with builtin ops only (no Flex / Select TF ops, which phone runtimes lack).

Input contract of every variant: `crops` float32 [1, c, c, 3], RGB pixels in [0, 255] (ImageNet normalisation is inside the
graph); output `score` float32 [1] on the model's `score_range`. Quantized variants keep float32 input and output (the
quantize/dequantize happens inside), so app code is the same for all variants. The app averages the scores of the image's
crops as described in the sidecar JSON (`<file>.json`, see `keras_iqa.export.contract`).

Variants (`quantize`):
- "none"    float32 weights and activations;
- "fp16"    float16 weights, float32 compute on CPU (GPU delegates run fp16);
- "dynamic" int8 weights, activations quantized on the fly (dynamic range quantization);
- "int8"    int8 weights and activations of the convolutions (and the pads/pools between them), calibrated on a
            representative dataset (`samples.calibration_crops`); every other op type stays float32 (`INT8_OPS`), with
            QUANTIZE/DEQUANTIZE at the boundaries (`TFLITE_BUILTINS_INT8` + `TFLITE_BUILTINS`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from keras_iqa.export.contract import model_contract, write_json

QUANTIZE = ("none", "fp16", "dynamic", "int8")
FILE_TAG = {"none": "fp32", "fp16": "fp16", "dynamic": "dynamic", "int8": "int8"}


def concrete_score_function(model, batch: int = 1):
    """The concrete function `crops [batch, c, c, 3] -> {"score": [batch]}` that is converted."""
    import tensorflow as tf

    c = int(model.crop_size)

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
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.allow_custom_ops = False
    return conv


def _selective_int8(conv, gen, float_ops) -> bytes:
    import tensorflow as tf

    opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops))
    dbg = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=gen, debug_options=opts)
    return dbg.get_nondebug_quantized_model()


def convert(model, quantize: str = "none", representative: Optional[np.ndarray] = None,
            float_ops: Optional[Sequence[str]] = None) -> bytes:
    """Converts `model` to a .tflite flatbuffer with builtin ops only.

    `float_ops` (int8 only): op types left float32; None = every op type of the model but `INT8_OPS`; () = TFLite's
    default full-integer quantization of every op that has an int8 kernel.

    Raises:
        ValueError: unknown `quantize`, int8 without `representative` crops, or ops that need Flex (named in the message).
    """
    import tensorflow as tf

    if quantize not in QUANTIZE:
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # weights frozen into constants: no resource-variable ops in the flatbuffer (calibration cannot run those)
    fn = convert_variables_to_constants_v2(concrete_score_function(model))
    conv = _builtin_converter(fn)
    if quantize == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        if representative is None or len(representative) == 0:
            raise ValueError("int8 quantization needs representative crops (samples.calibration_crops)")
        rep = np.asarray(representative, np.float32)

        def gen():
            for x in rep:
                yield [x[None]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
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


def op_names(flat: bytes) -> list:
    """Operator names in a flatbuffer (via the LiteRT interpreter)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # without the default XNNPACK delegate, so the listing shows the model's own ops, not "DELEGATE"
    interp = Interpreter(model_content=bytes(flat),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return sorted({d["op_name"] for d in interp._get_ops_details()})


def flex_ops(flat: bytes) -> list:
    return [n for n in op_names(flat) if n.startswith("Flex") or n == "CUSTOM"]


def interpreter(model, num_threads: int = 2):
    """An allocated `ai_edge_litert` Interpreter for a path or flatbuffer bytes.

    The default XNNPACK delegate is used when it accepts the graph; when it fails to prepare (seen with some int8
    quantization scales) the builtin reference kernels run instead and `interp.xnnpack` is False.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    src = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    try:
        interp = Interpreter(**src, num_threads=num_threads)
        interp.allocate_tensors()
        interp.xnnpack = True
    except RuntimeError as e:
        if "XNNPACK" not in str(e) and "Delegate" not in str(e):
            raise
        interp = Interpreter(**src, num_threads=num_threads,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
        interp.xnnpack = False
    return interp


class TFLiteScorer:
    """Runs a keras-iqa .tflite on crops one at a time (its input contract is batch 1)."""

    def __init__(self, model, num_threads: int = 2):
        self.interp = interpreter(model, num_threads)
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.crop_size = int(self.inp["shape"][1])

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops, np.float32)
        if crops.ndim != 4 or crops.shape[1:] != (self.crop_size, self.crop_size, 3):
            raise ValueError(f"crops must be [N, {self.crop_size}, {self.crop_size}, 3], got {crops.shape}")
        out = np.empty(len(crops), np.float32)
        for i in range(len(crops)):  # batch-1 contract: one invoke per crop
            self.interp.set_tensor(self.inp["index"], crops[i:i + 1])
            self.interp.invoke()
            out[i] = self.interp.get_tensor(self.out["index"]).reshape(-1)[0]
        return out


def export_tflite(model, out: os.PathLike, quantize: Sequence[str] = ("none",), data_dir: Optional[str] = None,
                  name: Optional[str] = None, parity: bool = True, parity_images: Optional[list] = None,
                  calibration_samples: int = 128, source: Optional[str] = None, int8_scope: str = "conv") -> dict:
    """Writes `<out>/<name>_<fp32|fp16|dynamic|int8>.tflite` + a sidecar `.json` each, and `<out>/parity.json`.

    `out` ending in ".tflite" (with one variant) names the file directly. `int8_scope`: "conv" quantizes `INT8_OPS` only,
    "all" every op with an int8 kernel. Returns {"files": {variant: path}, "parity": report}.
    """
    if int8_scope not in INT8_SCOPES:
        raise ValueError(f"int8_scope must be one of {', '.join(INT8_SCOPES)}, got {int8_scope!r}")
    quantize = list(dict.fromkeys(quantize))
    out = Path(out)
    if out.suffix == ".tflite":
        if len(quantize) != 1:
            raise ValueError(f"--out {out} names one file but {len(quantize)} variants were asked; give a directory")
        out_dir, paths = out.parent, {quantize[0]: out}
    else:
        out_dir = out
        stem = name or getattr(model, "name", "model")
        paths = {q: out / f"{stem}_{FILE_TAG[q]}.tflite" for q in quantize}
    out_dir.mkdir(parents=True, exist_ok=True)
    rep, rep_source = (None, None)
    if "int8" in quantize:
        from keras_iqa.export.samples import calibration_crops

        rep, rep_source = calibration_crops(model, data_dir, n=calibration_samples)
    files, fp32_flat = {}, None
    # fp32 first: its op list gives the int8 float ops without a second conversion (unknown names fail in `convert`)
    for q in sorted(quantize, key=lambda v: QUANTIZE.index(v) if v in QUANTIZE else len(QUANTIZE)):
        float_ops = INT8_SCOPES[int8_scope]
        if q == "int8" and float_ops is None and fp32_flat is not None:
            float_ops = default_float_ops(fp32_flat)
        flat = convert(model, q, rep if q == "int8" else None, float_ops=float_ops)
        if q == "none":
            fp32_flat = flat
        path = paths[q]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(flat)
        os.replace(tmp, path)
        contract = model_contract(
            model, format="tflite", quantize=q, source=source, file=path.name, size_bytes=len(flat),
            tflite_input={"name": "crops", "dtype": "float32", "shape": [1, int(model.crop_size), int(model.crop_size), 3],
                          "range": [0.0, 255.0], "layout": "NHWC RGB"},
            tflite_output={"name": "score", "dtype": "float32", "shape": [1], "scale": list(model.score_range)},
            calibration=rep_source if q == "int8" else None, int8_scope=int8_scope if q == "int8" else None,
            ops=op_names(flat),
        )
        write_json(contract, path.with_suffix(".json"))
        files[q] = str(path)
    report = None
    if parity:
        from keras_iqa.export.parity import parity_report

        report = parity_report(model, files, images=parity_images)
        write_json(report, out_dir / "parity.json")
    return {"files": files, "parity": report}
