"""MetaIQA: time of one meta-iteration (k tasks x S support + S query Adam steps + the outer update) versus the same number
(2 k S) of plain `train_on_batch` Adam steps on the same model and batches. Target: overhead <= 15 %.

Full run: ResNet-18 MetaIQA (paper head), k = 5, S = 6, batch 32, 224 x 224. `quick=True`: the tiny model at 64 px, k = 2, S = 2,
batch 4 (a smoke pass, not a measurement to quote).
"""

from __future__ import annotations

import os

from bench.common import measure, write_results


def main(quick: bool = False) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import keras

    import keras_iqa
    from keras_iqa.training.meta import MetaLearner

    if quick:
        card, crop, batch, k, S, repeats = "metaiqa-tiny", 64, 4, 2, 2, 2
    else:
        card, crop, batch, k, S, repeats = "metaiqa", 224, 32, 5, 6, 3
    rng = np.random.default_rng(0)

    def batch_xy():
        return rng.uniform(0, 255, (batch, crop, crop, 3)).astype("float32"), rng.uniform(size=batch).astype("float32")

    tasks = []
    for _ in range(k):
        (sx, sy), (qx, qy) = batch_xy(), batch_xy()
        tasks.append({"support_x": sx, "support_y": sy, "query_x": qx, "query_y": qy})

    keras.utils.set_random_seed(0)
    model = keras_iqa.create_model(card, crop_size=crop)
    learner = MetaLearner(model, inner_steps=S, inner_lr=1e-4, outer_lr=1e-2)
    meta = measure(lambda: learner.meta_step(tasks), repeats=repeats, warmup=1, items=2 * k * S,
                   name=f"meta-iteration k={k} S={S} batch={batch} {crop}px", kind="meta_step")

    keras.utils.set_random_seed(0)
    plain_model = keras_iqa.create_model(card, crop_size=crop)
    plain_model.compile(optimizer=keras.optimizers.Adam(1e-4, beta_2=0.99), loss="mse")
    order = [(t[f"{p}_x"], t[f"{p}_y"]) for t in tasks for p in ("support", "query") for _ in range(S)]

    def plain():
        for x, y in order:
            plain_model.train_on_batch(x, y)

    base = measure(plain, repeats=repeats, warmup=1, items=2 * k * S,
                   name=f"{2 * k * S} x train_on_batch batch={batch} {crop}px", kind="train_on_batch")
    overhead = meta["median_s"] / base["median_s"] - 1.0
    summary = {"name": "meta-iteration overhead vs plain steps", "overhead": overhead, "target": 0.15,
               "within_target": bool(overhead <= 0.15), "quick": quick, "model": card, "k": k, "S": S, "batch": batch,
               "crop": crop, "traces": dict(learner.trace_counts)}
    return write_results("metaiqa", [meta, base, summary], quick=quick)


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(main(quick="--quick" in sys.argv), indent=2, default=str))
