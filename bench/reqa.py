"""REQA benchmark: training images/s (batch 15 = 3 micro-batches of 5, 224 px) and inference ms/image (25 crops averaged),
fp32 and mixed_bfloat16.

    python -c "import bench.reqa as b; print(b.main(quick=True))"    # smoke (tiny model, 64 px)
    python -m bench.reqa                                              # full (ResNet-50, 224 px)
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import measure, write_results


def _bench_precision(precision: str, quick: bool) -> list:
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_iqa

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        card, crop, crops = ("reqa-tiny", 64, 4) if quick else ("reqa", 224, 25)
        model = keras_iqa.create_model(card)
        model.compile()
        rng = np.random.default_rng(0)
        batch = 15
        x = tf.constant(rng.uniform(0, 255, (batch, crop, crop, 3)).astype("float32"))
        y = tf.constant(np.tile(np.linspace(10, 90, 5, dtype="float32"), 3))
        train = tf.function(lambda: model.train_step((x, y)))
        xc = tf.constant(rng.uniform(0, 255, (crops, crop, crop, 3)).astype("float32"))
        infer = tf.function(lambda: tf.reduce_mean(model.score(xc)))
        rep = 1 if quick else 5
        out = [
            measure(lambda: train()["loss"].numpy(), repeats=rep, warmup=1, items=batch, name=f"reqa train step ({precision})",
                    precision=precision, crop=crop, batch=batch, model=card),
            measure(lambda: infer().numpy(), repeats=rep, warmup=1, items=1, name=f"reqa inference {crops} crops/image "
                    f"({precision})", precision=precision, crop=crop, crops_per_image=crops, model=card),
        ]
        return out
    finally:
        keras.mixed_precision.set_global_policy("float32")


def main(quick: bool = False) -> dict:
    entries = []
    for precision in ("fp32", "bf16"):
        entries.extend(_bench_precision(precision, quick))
    by = {(e["precision"], "train" if "train" in e["name"] else "infer"): e for e in entries}
    faster = {k: min(("fp32", "bf16"), key=lambda p: by[(p, k)]["median_s"]) for k in ("train", "infer")}
    return write_results("reqa", entries, quick=quick, faster=faster,
                         note="train = one train_step (forward, 4 loss terms, two Adam updates) on 15 images; "
                              "infer = last-step score of 25 crops averaged = one image")


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(main(quick="--quick" in sys.argv), indent=1, default=str))
