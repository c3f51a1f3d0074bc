"""Deployment benchmark: latency at batch 1 (ms/crop) and throughput at batch 32 (crops/s) for Keras `predict`, the
SavedModel signatures and each TFLite variant (LiteRT interpreter, 2 threads), plus artifact sizes.

A "crop" is one model input [crop_size, crop_size, 3]; an image costs `served_crops` of them (25 for REQA/HCL, 1 for
MetaIQA). `serving_default` rows time the full server path per IMAGE (JPEG decode + crops + model). Weights are random
(speed does not depend on them). Target (issue #9): TFLite int8 latency <= 0.5 x TFLite fp32 (`int8_vs_fp32_latency`).

    python -c "import bench.deploy as b; b.main(quick=True)"     # tiny model, seconds
    python -m bench.run --only deploy                            # full-size models
    python -m bench.deploy --model reqa --out reqa.json          # one model (what main() runs per model)

Each model runs in its own process: the three full-size models with every export format in one process grew to 19.3 GiB RSS
on the 23.5 GiB machine (TF keeps graphs, converters and interpreters alive) before it finished.
"""

from __future__ import annotations

import gc
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from bench.common import measure, run_model_process, write_results

FULL_MODELS = ("metaiqa", "reqa", "hcl")
QUICK_MODELS = ("metaiqa-tiny",)


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def bench_model(name: str, quick: bool, workdir: Path) -> list:
    import keras
    import tensorflow as tf
    from PIL import Image

    import keras_iqa
    from data_pipeline.test_time import TestTimeCrops
    from keras_iqa.export.samples import synthetic_images
    from keras_iqa.export.savedmodel import export_savedmodel
    from keras_iqa.export.tflite import QUANTIZE, TFLiteScorer, export_tflite

    keras.utils.set_random_seed(0)
    model = keras_iqa.create_model(name)
    c = int(model.crop_size)
    model(np.zeros((1, c, c, 3), "float32"))
    repeats = 3 if quick else 10
    big = 8 if quick else 32
    budget = 20.0 if quick else 60.0  # seconds of timed runs per row at most (a full-size HCL batch-32 call takes ~10 s)
    rng = np.random.default_rng(0)
    x1 = rng.uniform(0, 255, (1, c, c, 3)).astype("float32")
    xb = rng.uniform(0, 255, (big, c, c, 3)).astype("float32")
    rows = []
    common = {"model": name, "crop_size": c, "served_crops": TestTimeCrops.from_model(model).num_crops,
              "budget_s": budget}
    # serving_default per image: a batch of `big` images is big x served_crops model inputs (800 for 25-crop models,
    # ~4 min per call for HCL on 2 cores), so multi-crop models are served 4 images per call
    serve_n = big if common["served_crops"] == 1 else max(1, big // 8)

    rows.append(measure(lambda: model.predict(x1, verbose=0), repeats=repeats, items=1, name="keras_predict_b1", **common))
    rows.append(measure(lambda: model.predict(xb, batch_size=big, verbose=0), repeats=repeats, items=big,
                        name=f"keras_predict_b{big}", **common))

    sm = export_savedmodel(model, workdir / "saved_models" / name.replace("-", "_"), overwrite=True, version=1)
    size_sm = _dir_size(sm)
    loaded = tf.saved_model.load(str(sm))
    pc = loaded.signatures["predict_crops"]
    t1, tb = tf.constant(x1), tf.constant(xb)
    rows.append(measure(lambda: pc(crops=t1), repeats=repeats, items=1, name="savedmodel_predict_crops_b1",
                        size_bytes=size_sm, **common))
    rows.append(measure(lambda: pc(crops=tb), repeats=repeats, items=big, name=f"savedmodel_predict_crops_b{big}",
                        size_bytes=size_sm, **common))
    imgs = synthetic_images(serve_n, size=(max(2 * c, 96), max(2 * c + 64, 128)), seed=3)
    jpegs = []
    for im in imgs:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=90)
        jpegs.append(buf.getvalue())
    sd = loaded.signatures["serving_default"]
    j1, jb = tf.constant(jpegs[:1]), tf.constant(jpegs)
    rows.append(measure(lambda: sd(images=j1), repeats=repeats, items=1, name="savedmodel_serving_default_b1_per_image",
                        size_bytes=size_sm, **common))
    rows.append(measure(lambda: sd(images=jb), repeats=max(1, repeats // 2), items=serve_n,
                        name=f"savedmodel_serving_default_b{serve_n}_per_image", size_bytes=size_sm, **common))

    del loaded, pc, sd  # the SavedModel's graphs are not needed any more: free them before the TFLite conversions
    gc.collect()
    res = export_tflite(model, workdir / "tflite" / name, quantize=QUANTIZE, parity=not quick,
                        calibration_samples=32 if quick else 128)
    lat = {}
    for q, path in res["files"].items():
        scorer = TFLiteScorer(path, num_threads=2)
        size = os.path.getsize(path)
        r1 = measure(lambda: scorer(x1), repeats=repeats * 3, items=1, name=f"tflite_{q}_b1", size_bytes=size, threads=2,
                     **common)
        rb = measure(lambda: scorer(xb), repeats=repeats, items=big, name=f"tflite_{q}_b{big}_sequential", size_bytes=size,
                     threads=2, **common)
        if res["parity"]:
            v = res["parity"]["variants"][q]
            r1.update(parity_max_abs_diff_rel=v["max_abs_diff_rel"], parity_srocc=v["srocc_vs_keras"], parity_pass=v["pass"])
        lat[q] = r1["median_s"]
        rows += [r1, rb]
    rows.append({"name": "int8_vs_fp32_latency", "model": name, "ratio": lat["int8"] / lat["none"],
                 "target": "<= 0.5", "pass": lat["int8"] / lat["none"] <= 0.5})
    return rows


def _run_model_process(name: str, quick: bool, timeout: float = 3600) -> list:
    """`bench_model(name)` in a fresh process (memory returned to the OS after each model); error rows on failure."""
    return run_model_process("bench.deploy", name, quick, timeout)


def _model_main(name: str, quick: bool, out: str) -> None:
    """Child process: one model's rows (plus its peak RSS) as JSON in `out`."""
    import resource

    with tempfile.TemporaryDirectory() as tmp:
        try:
            rows = bench_model(name, quick, Path(tmp))
        except Exception as e:  # recorded, not raised: the parent reads the file either way
            rows = [{"name": "error", "model": name, "error": f"{type(e).__name__}: {e}"}]
    rows.append({"name": "peak_rss", "model": name, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    Path(out).write_text(json.dumps(rows, default=str))


def main(quick: bool = False) -> dict:
    rows = []  # float32 models, TF's default threading (mixed precision would change what is exported)
    for name in (QUICK_MODELS if quick else FULL_MODELS):
        rows += _run_model_process(name, quick)  # one model failing must not hide the others' numbers
    return write_results("deploy", rows, quick=quick)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="Deployment benchmark (all models, or one with --model).")
    p.add_argument("--model", help="one model name (e.g. reqa); with --out, the child mode main() uses")
    p.add_argument("--out", help="where --model writes its rows (JSON)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the machinery, numbers mean nothing")
    a = p.parse_args()
    if a.model:
        _model_main(a.model, a.quick, a.out or f"deploy_{a.model}.json")
    else:
        print(json.dumps(main(quick=a.quick), indent=2, default=str))
