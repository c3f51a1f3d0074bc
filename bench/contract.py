"""Test-time contract at full size: one photo scored through every path of each full-size card agrees with evaluation.

For each model (random weights; `--quick`: the tiny cards) and its own contract (test_crops, crop_policy), four photos
(embedded pristine photos with a synthetic degradation, one smaller than the crop) are scored through records
(`predict_reader`: training validation and `keras-iqa evaluate`), files through a `.keras` (`keras-iqa score`), the
SavedModel's `serving_default` and the whole-photo TFLite fp32 model. Rows: the largest difference from the records path
as a fraction of the score range (target <= 1e-4, as the tiny cards' test), the scores' spread across the photos, and the
time of each path. Each model runs in its own process (full-size HCL conversions need ~12 GiB).

    python -m bench.run --only contract
    python -m bench.contract --model reqa --out reqa.json
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import run_model_process, write_results

FULL_MODELS = ("metaiqa", "reqa", "hcl")
QUICK_MODELS = ("metaiqa-tiny", "reqa-tiny", "hcl-tiny")
TARGET = 1e-4


def _photos(root: Path, crop: int) -> tuple[list, str]:
    """Four photos on disk (PNG / JPEG) and a prepared records folder holding the same files."""
    from data_pipeline import fixtures, pristine
    from data_pipeline.beam.prepare import prepare

    photos = [img for _, img in pristine.embedded()[:3]]
    photos.append(fixtures.content_image(9, (crop * 3 // 4, crop + 40)))  # smaller than the crop: upsampled
    (root / "photos").mkdir(parents=True)
    lines = ["file,score,split"]
    for i, img in enumerate(photos):
        name = f"photo{i}.{'jpg' if i % 2 else 'png'}"
        fixtures.save(fixtures.degrade(np.asarray(img, np.uint8), 0.2 * i, i), str(root / "photos" / name), quality=90)
        lines.append(f"{name},{1 + 2 * i},test")
    (root / "scores.csv").write_text("\n".join(lines) + "\n")
    opts = {"csv": "scores.csv", "image_dir": "photos", "image_column": "file", "score_column": "score",
            "score_range": "1,10", "split_column": "split"}
    prepare("csv", str(root), str(root / "records"), options=opts, runner=None, num_splits=1)
    files = sorted(str(p) for p in (root / "photos").iterdir())
    return files, str(next((root / "records").iterdir()))


def bench_model(name: str, workdir: Path) -> list:
    import keras
    import tensorflow as tf

    import keras_iqa
    from data_pipeline.images import load_image
    from data_pipeline.input import RecordReader
    from keras_iqa.evaluation.predict import predict_reader
    from keras_iqa.export.savedmodel import export_savedmodel
    from keras_iqa.export.tflite import TFLiteScorer, convert
    from keras_iqa.scoring import load_scorer, score_paths

    keras.utils.set_random_seed(0)
    model = keras_iqa.create_model(name)
    files, data_dir = _photos(workdir, model.crop_size)
    names = [os.path.basename(f) for f in files]
    lo, hi = model.score_range
    common = {"model": name, "test_crops": model.test_crops, "crop_policy": model.crop_policy}
    timed = {}

    def run(label, fn):
        t0 = time.perf_counter()
        out = fn()
        timed[label] = time.perf_counter() - t0
        return np.asarray(out, np.float64)

    reader = RecordReader(data_dir, subset=None, target="mos")
    df = predict_reader(model, reader).set_index("image_id")
    ref = np.array([df.loc[n, "pred"] for n in names])
    model.save(workdir / "m.keras")
    scores = {"score files (.keras)": run("score", lambda: [r["score"] for r in score_paths(
        load_scorer(workdir / "m.keras"), files, progress=False)[0]])}
    served = tf.saved_model.load(str(export_savedmodel(model, workdir / "sm"))).signatures["serving_default"]
    scores["SavedModel serving_default"] = run("savedmodel", lambda: served(
        images=tf.constant([open(f, "rb").read() for f in files]))["score"].numpy())
    first = load_image(files[0])
    lite = TFLiteScorer(convert(model, "none", photo_size=first.shape[:2]))
    scores["TFLite fp32 whole photo"] = run("tflite", lambda: lite.score_photos([first]))
    rows = []
    for label, got in scores.items():
        err = float(np.max(np.abs(got - ref[:len(got)])) / (hi - lo))
        rows.append({"name": f"contract {label} vs evaluate", "max_abs_diff_rel": err, "target": f"<= {TARGET}",
                     "pass": err <= TARGET, "score_spread_rel": float(np.ptp(ref) / (hi - lo)),
                     "seconds": timed.get(label.split()[0].lower(), None), **common})
    return rows


def main(quick: bool = False) -> dict:
    rows = []
    for name in (QUICK_MODELS if quick else FULL_MODELS):
        rows += run_model_process("bench.contract", name, quick)
    return write_results("contract", rows, quick=quick)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="Test-time contract across paths (all models, or one with --model).")
    p.add_argument("--model", help="one model name; with --out, the child mode main() uses")
    p.add_argument("--out", help="where --model writes its rows (JSON)")
    p.add_argument("--quick", action="store_true", help="tiny cards")
    a = p.parse_args()
    if a.model:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                rows = bench_model(a.model, Path(tmp))
            except Exception as e:
                rows = [{"name": "error", "model": a.model, "error": f"{type(e).__name__}: {e}"}]
        Path(a.out or f"contract_{a.model}.json").write_text(json.dumps(rows, default=str))
    else:
        print(json.dumps(main(quick=a.quick), indent=2, default=str))
