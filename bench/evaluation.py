"""Evaluation costs: metrics on N images (SROCC/KROCC/PLCC + both logistic fits), the Keras epoch metrics' overhead per
update, and `predict_dataset` throughput (crops averaged per image) with a tiny model, so the evaluation code's own overhead
can be told apart from the model's.
"""

from __future__ import annotations

import numpy as np

from bench.common import measure, write_results


def main(quick: bool = False) -> dict:
    from keras_iqa import metrics as M

    entries = []
    sizes = (1000,) if quick else (1000, 10000)
    rng = np.random.default_rng(0)
    for n in sizes:
        mos = rng.uniform(0, 100, n)
        pred = 100 / (1 + np.exp(-(mos - 50) / 15)) + rng.normal(0, 5, n)
        entries.append(measure(lambda: M.evaluate_predictions(pred, mos), repeats=1 if quick else 3, warmup=0 if quick else 1,
                               items=n, name=f"evaluate_predictions n={n} (srocc, krocc, plcc, logistic 4 + 5)"))
        entries.append(measure(lambda: M.fit_logistic(pred, mos, 5), repeats=1 if quick else 5, warmup=0, items=n,
                               name=f"fit_logistic(5) n={n}"))

    import keras
    import tensorflow as tf

    from keras_iqa.evaluation.predict import predict_dataset
    from keras_iqa.models.base import IQAModel

    srocc = M.SROCC()
    yt, yp = tf.constant(rng.uniform(0, 100, 256)), tf.constant(rng.uniform(0, 100, 256))
    upd = tf.function(lambda a, b: srocc.update_state(a, b))

    def updates():
        srocc.reset_state()
        for _ in range(20):
            upd(yt, yp)
        return float(srocc.result())

    entries.append(measure(updates, repeats=1 if quick else 5, warmup=1, items=20 * 256,
                           name="SROCC metric: 20 updates of 256 + result()"))

    class Tiny(IQAModel):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.d = keras.layers.Dense(1)

        def call(self, x):
            return self.d(self.pool(x))

    n_img, crops, c = (16, 5, 32) if quick else (200, 25, 64)
    model = Tiny(crop_size=c, test_crops=crops)
    x = rng.uniform(0, 255, (n_img, crops, c, c, 3)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(n_img, dtype="float32"), [f"{i}" for i in range(n_img)]))
    entries.append(measure(lambda: predict_dataset(model, ds, batch_size=64), repeats=1 if quick else 3, warmup=1,
                           items=n_img, name=f"predict_dataset tiny model {crops} crops of {c}px per image (images/s)"))
    return write_results("evaluation", entries, quick=quick)


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(main(quick="--quick" in sys.argv), indent=2))
