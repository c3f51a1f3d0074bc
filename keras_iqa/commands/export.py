"""`keras-iqa export`: SavedModel (TF Serving layout) and TFLite (builtin ops only, fp32/fp16/dynamic/int8) export."""

import argparse
import json
from pathlib import Path
import sys

from keras_iqa import registry
from keras_iqa.commands import formatter

EPILOG = """\
RUN_OR_MODEL is a run directory (runs/NAME with model.keras), a .keras file, or a registered model name (random weights,
e.g. reqa-tiny: for trying the pipeline).

SavedModel (TF Serving): writes OUT/<version>/ (saved_model.pb, variables/, assets.extra/keras_iqa.json) plus
OUT/models.config and OUT/batching_parameters.txt. Signatures: serving_default (encoded image bytes -> score,
score_normalized), image_tensor (uint8 [B,H,W,3]), predict_crops (float32 [B,c,c,3] -> per-crop scores).
  keras-iqa export runs/reqa-koniq --format savedmodel --out saved_models/reqa
  keras-iqa export runs/reqa-koniq --format savedmodel --out saved_models/reqa --version 2
  docker run -p 8501:8501 -v $PWD/saved_models/reqa:/models/reqa -e MODEL_NAME=reqa tensorflow/serving

TFLite (phones): OUT is a folder (one <name>_<variant>.tflite + sidecar .json per variant, parity.json) or a .tflite
path for a single variant. Every file is run with the ai-edge-litert interpreter and compared with the Keras model.
  keras-iqa export runs/reqa-koniq --format tflite --out exports/reqa --quantize none,fp16,int8 --data records/koniq10k
  keras-iqa export model.keras --format tflite --out reqa_fp16.tflite --quantize fp16
  # whole-photo model for a camera app: uint8 1024x768 photo in, score out (crops and mean inside the model)
  keras-iqa export runs/reqa-koniq --format tflite --out exports/reqa --photo-size 768x1024 --quantize none,int8

Exit status 1 when a parity target is missed (the files are still written; see parity.json), 2 on errors.
"""


def _photo_size(text: str) -> tuple:
    """'768x1024' -> (768, 1024) (height x width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--photo-size {text!r}: give HEIGHTxWIDTH in pixels, e.g. 768x1024") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"--photo-size {text!r}: both sides must be >= 1")
    return h, w


QUANTIZE = ("none", "fp16", "dynamic", "int8")


def _quantize_kinds(values) -> list:
    """--quantize values (repeatable, comma-separated) -> the list of variants, in order, without repeats."""
    kinds = [k.strip() for v in (values or ["none"]) for k in str(v).split(",") if k.strip()]
    bad = [k for k in kinds if k not in (*QUANTIZE, "all")]
    if bad:
        raise ValueError(f"--quantize {','.join(bad)}: choose from {', '.join(QUANTIZE)} or all")
    if "all" in kinds:
        return list(QUANTIZE)
    return list(dict.fromkeys(kinds))


def register(sub):
    p = sub.add_parser("export", help="SavedModel (TF Serving) and TFLite export",
                       description="Export a trained model as a TF Serving SavedModel or as TFLite files for phones.",
                       epilog=EPILOG, formatter_class=formatter())
    p.add_argument("model", metavar="RUN_OR_MODEL", help="run directory, .keras file or registered model name")
    p.add_argument("--format", "-f", choices=("savedmodel", "tflite"), required=True, help="what to write")
    p.add_argument("--out", "-o", required=True, metavar="DIR",
                   help="output folder: savedmodel: the model root saved_models/NAME (versions go below it); tflite: the "
                        "folder for the .tflite files and their .json sidecars (a path ending in .tflite is still taken "
                        "as the file name of a single variant)")
    p.add_argument("--version", type=int, metavar="N", help="savedmodel version folder (default: next free, 1 for a new root)")
    p.add_argument("--name", help="model name (default: the --out folder name for savedmodel, the model's name for tflite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing savedmodel version folder")
    p.add_argument("--max-batch-size", type=int, default=32, metavar="N", help="max_batch_size in batching_parameters.txt (default 32)")
    p.add_argument("--quantize", action="append", metavar="KIND[,KIND]",
                   help="tflite variants (none, fp16, dynamic, int8 or all; comma-separated or repeatable; 'all' = none,fp16,dynamic,int8; default none)")
    p.add_argument("--data", metavar="DIR", help="prepared dataset (records) for int8 calibration (default: embedded "
                   "pristine photos, else synthetic images)")
    p.add_argument("--calibration-samples", type=int, default=128, metavar="N", help="int8 calibration crops, at most (default 128): with --data one crop per training "
                   "image, so a smaller dataset calibrates with all its training images; the count used is printed")
    p.add_argument("--int8-scope", choices=("conv", "all"), default="conv",
                   help="which ops int8 quantizes: 'conv' = convolutions, pads and pools (the compute; residual sums, "
                        "normalisation, attention and heads stay float32: keeps the ranking of scores), 'all' = every op "
                        "with an int8 kernel (TFLite's full-integer default; faster on int8-only accelerators, less "
                        "faithful). Default conv")
    p.add_argument("--parity-images", metavar="DIR", help="folder of images for the parity report (default: 24 synthetic images)")
    p.add_argument("--no-parity", action="store_true", help="skip the parity report")
    p.add_argument("--photo-size", metavar="HxW", type=_photo_size,
                   help="tflite: whole-photo models taking a uint8 photo of HEIGHTxWIDTH pixels (e.g. 768x1024); the "
                        "test-time resize, crops and mean run inside the model: one call per photo")
    p.set_defaults(func=run)


def load_model_arg(spec: str):
    """A run directory, .keras file or registry name -> built keras model."""
    from data_pipeline import layout
    from keras_iqa.scoring import load_keras_model

    p = Path(spec)
    if p.is_dir() or p.suffix == ".keras":  # a run directory (an HCL `--stages all` folder: its last stage) or a .keras
        return load_keras_model(layout.find_model_file(p))
    if spec in registry.list_models():
        import numpy as np

        model = registry.create_model(spec)
        model(np.zeros((1, model.crop_size, model.crop_size, 3), "float32"))
        print(f"warning: {spec} built with random weights (no trained weights given)", file=sys.stderr)
        return model
    raise ValueError(f"{spec!r} is neither a run directory, a .keras file nor a registered model "
                     f"({', '.join(registry.list_models()) or 'none registered'})")


def run(args):
    model = load_model_arg(args.model)
    if args.format == "savedmodel":
        from keras_iqa.export.savedmodel import export_savedmodel

        path = export_savedmodel(model, args.out, version=args.version, name=args.name, max_batch_size=args.max_batch_size,
                                 overwrite=args.overwrite, source=args.model, progress=not getattr(args, "quiet", False))
        root = Path(args.out)
        print(f"wrote SavedModel {path} (signatures serving_default, image_tensor, predict_crops)\n"
              f"wrote {root / 'models.config'} and {root / 'batching_parameters.txt'}\n"
              f"serve: tensorflow_model_server --rest_api_port=8501 --model_name={args.name or root.name} "
              f"--model_base_path={root.resolve()} --enable_batching --batching_parameters_file={(root / 'batching_parameters.txt').resolve()}")
        return 0
    from keras_iqa.export.tflite import export_tflite

    quantize = _quantize_kinds(args.quantize)
    images = None
    if args.parity_images:
        from data_pipeline.images import ImageDecodeError, load_image
        from keras_iqa.scoring import iter_image_files

        files, _ = iter_image_files([args.parity_images], recursive=True)
        images = []
        for f in files:
            try:
                images.append(load_image(f))
            except ImageDecodeError as e:
                print(f"parity: skipped {e}", file=sys.stderr)
        if len(images) < 3:
            raise ValueError(f"--parity-images {args.parity_images}: need at least 3 readable images, found {len(images)}")
    result = export_tflite(model, args.out, quantize=quantize, data_dir=args.data, name=args.name,
                           parity=not args.no_parity, parity_images=images, calibration_samples=args.calibration_samples,
                           source=args.model, int8_scope=args.int8_scope, photo_size=args.photo_size,
                           progress=not getattr(args, "quiet", False))
    cal = result.get("calibration")
    if cal:
        print(f"int8 calibration: {cal['count']} {cal['unit']} from {cal['source']}")
    for q, f in result["files"].items():
        print(f"wrote {f} (+ {Path(f).with_suffix('.json').name})")
    rep = result["parity"]
    if rep is None:
        return 0
    print(json.dumps({q: {k: v[k] for k in ("max_abs_diff", "max_abs_diff_rel", "srocc_vs_keras", "pass")}
                      for q, v in rep["variants"].items()}, indent=2))
    if not rep["pass"]:
        print("keras-iqa export: parity target missed (see parity.json)", file=sys.stderr)
        return 1
    return 0
