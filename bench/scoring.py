"""Scoring throughput: images/s and s/image of `keras_iqa.score` on a folder of 1024x768 JPEGs, per family and precision.

For each full-size card (random weights: speed does not depend on them) at fp32 and bf16 (a `mixed_bfloat16` copy with
the backbone's batch norm folded, `load_scorer(..., precision="bf16")`), one process scores a generated folder of
1024x768 JPEGs (quality 90) end to end: decode (decode policy, `workers` threads, one batch ahead), the test-time crops
(25 random 224x224 crops for REQA, MetaIQA and HCL; one whole-image resize for metaiqa-official) and the model, crops of a
batch of images in shared forward passes. Rows also give the parts alone (decode only; model only on ready crops), so
`overlap` = (decode + crops + model) / end-to-end shows how much of the decoding hides behind the model. Targets (2-core
CPU): REQA 25 crops <= 0.5 s/image, MetaIQA >= 20 images/s. The load average (`os.getloadavg`) is recorded before and
after each row: on a shared machine the wall-clock numbers are only as quiet as it was, so each row also gives the best
run (`best_s_per_image`) and the CPU seconds per image of all threads (`cpu_s_per_image`, which other processes' load
changes much less; on an idle machine with every core busy, wall time ~ CPU time / cores).

    python -m bench.run --only scoring
    python -m bench.scoring --model reqa@bf16 --out reqa_bf16.json      # one process (what main() runs per row)
    python -m bench.scoring --quick                                     # tiny cards on small photos, seconds
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from bench.common import measure, run_model_process, write_results

# (card, images in the folder, timed repeats); HCL is ~10x slower than REQA per crop
FULL = {"reqa": (16, 3), "metaiqa": (32, 3), "metaiqa-official": (64, 3), "hcl": (4, 2)}
QUICK = {"reqa-tiny": (6, 1), "metaiqa-tiny": (6, 1)}
PRECISIONS = ("fp32", "bf16")
SIZE = (768, 1024)  # h, w
QUICK_SIZE = (120, 160)
TARGETS = {"reqa": ("s_per_image", 0.5), "metaiqa": ("images_per_s", 20.0)}


def _folder(root: Path, n: int, size) -> Path:
    """n JPEGs (quality 90) of smooth random content at `size` (h, w)."""
    from data_pipeline import fixtures

    folder = root / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        fixtures.save(fixtures.degrade(fixtures.content_image(i, size), 0.3 + 0.6 * (i % 5) / 4, i),
                      str(folder / f"p{i:03d}.jpg"), quality=90)
    return folder


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def _measure(fn, n: int, repeats: int, name: str, **common) -> dict:
    """`bench.common.measure` (no warm-up: the caller warmed up) plus the CPU seconds of all threads per image."""
    c0 = time.process_time()
    row = measure(fn, repeats=repeats, warmup=0, items=n, name=name, **common)
    row["cpu_s_per_image"] = (time.process_time() - c0) / (row["repeats"] * n)
    return row


def bench_one(spec: str, quick: bool, workdir: Path) -> list:
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_iqa
    from data_pipeline.images import load_image
    from keras_iqa.scoring import _image_scores, load_scorer

    card, precision = spec.split("@")
    n, repeats = (QUICK if quick else FULL)[card]
    size = QUICK_SIZE if quick else SIZE
    folder = _folder(workdir, n, size)
    files = sorted(str(p) for p in folder.iterdir())
    keras.utils.set_random_seed(0)
    scorer = load_scorer(keras_iqa.create_model(card), precision=precision)
    batch = max(1, min(n, 128 // max(1, scorer.test_crops)))  # images per batch: ~100 crops in flight
    common = {"model": card, "precision": precision, "images": n, "image_size": f"{size[1]}x{size[0]}",
              "crops_per_image": scorer.test_time.num_crops, "crop_policy": scorer.crop_policy, "batch_images": batch,
              "crops_per_call": scorer.max_crops_per_call, "threads": os.cpu_count()}
    keras_iqa.score(files[:batch], model=scorer, batch_size=batch)  # warm-up: traces the crop and score functions

    rows = []
    load0 = _load()
    t0 = time.perf_counter()
    e2e = _measure(lambda: keras_iqa.score(folder, model=scorer, batch_size=batch, workers=2), n, repeats,
                   f"score {card} {precision}: folder of {n} JPEGs end to end", **common)
    e2e.update(s_per_image=e2e["median_s"] / n, best_s_per_image=e2e["min_s"] / n, images_per_s=e2e["items_per_s"],
               load_before=load0, load_after=_load(), wall_s=time.perf_counter() - t0)
    # the parts alone: decode; crops; the model on ready crops (same batches)
    images = [load_image(f) for f in files]
    decode = _measure(lambda: [load_image(f) for f in files], n, repeats, f"decode {n} JPEGs (one thread)", **common)
    crop = scorer.test_time.crop_function()
    crops = [np.asarray(crop(tf.constant(img))) for img in images]
    crop_t = _measure(lambda: [np.asarray(crop(tf.constant(img))) for img in images], n, repeats, "test-time crops",
                      **common)
    model = _measure(lambda: [_image_scores(scorer, crops[i:i + batch]) for i in range(0, n, batch)], n, repeats,
                     f"model only ({scorer.test_time.num_crops} crops/image)", **common)
    parts = decode["median_s"] + crop_t["median_s"] + model["median_s"]
    e2e.update(decode_s_per_image=decode["median_s"] / n, crops_s_per_image=crop_t["median_s"] / n,
               model_s_per_image=model["median_s"] / n, overlap=parts / e2e["median_s"],
               parts_cpu_s_per_image=decode["cpu_s_per_image"] + crop_t["cpu_s_per_image"] + model["cpu_s_per_image"])
    family = card.split("-")[0]
    if not quick and card in TARGETS:
        key, target = TARGETS[card]
        value = e2e[key]
        e2e.update(target=f"{key} {'<=' if key == 's_per_image' else '>='} {target}",
                   meets_target=bool(value <= target if key == "s_per_image" else value >= target))
    e2e["family"] = family
    rows += [e2e, decode, crop_t, model]
    return rows


def table(rows: list) -> str:
    """The markdown table of the end-to-end rows (docs/benchmarks.md copies it)."""
    lines = ["| model | precision | crops/image | images/s | s/image (best) | CPU s/image (parts) | decode / crops / model "
             "s per image | overlap | target | load before/after |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("name", "").startswith("score "):
            continue
        lines.append(f"| {r['model']} | {r['precision']} | {r['crops_per_image']} | {r['images_per_s']:.2f} | "
                     f"{r['s_per_image']:.3f} ({r['best_s_per_image']:.3f}) | {r['cpu_s_per_image']:.3f} "
                     f"({r['parts_cpu_s_per_image']:.3f}) | "
                     f"{r['decode_s_per_image']:.3f} / {r['crops_s_per_image']:.3f} / "
                     f"{r['model_s_per_image']:.3f} | {r['overlap']:.2f} | "
                     f"{r.get('target', '')}{' (met)' if r.get('meets_target') else ' (missed)' if 'target' in r else ''} | "
                     f"{r['load_before']} / {r['load_after']} |")
    return "\n".join(lines)


def main(quick: bool = False) -> dict:
    rows = []
    for card in (QUICK if quick else FULL):
        for precision in PRECISIONS:
            rows += run_model_process("bench.scoring", f"{card}@{precision}", quick)
    return write_results("scoring", rows, quick=quick, table_md=table(rows),
                         note="keras_iqa.score on a folder of JPEGs, random weights; overlap = (decode + crops + model) "
                              "/ end to end; load = 1-minute load average before/after")


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="keras_iqa.score throughput (all models, or one CARD@PRECISION with --model).")
    p.add_argument("--model", help="CARD@fp32 or CARD@bf16; with --out, the child mode main() uses")
    p.add_argument("--out", help="where --model writes its rows (JSON)")
    p.add_argument("--quick", action="store_true", help="tiny cards on small photos")
    a = p.parse_args()
    if a.model:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                rows = bench_one(a.model, a.quick, Path(tmp))
            except Exception as e:
                rows = [{"name": "error", "model": a.model, "error": f"{type(e).__name__}: {e}"}]
        out = a.out or f"scoring_{a.model.replace('@', '_')}.json"
        Path(out).write_text(json.dumps(rows, default=str))
        print(json.dumps(rows, indent=1, default=str))
    else:
        doc = main(quick=a.quick)
        print(doc["table_md"])
