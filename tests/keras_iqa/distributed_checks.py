"""Subprocess side of tests/keras_iqa/test_distributed.py: one step on 2 replicas vs one step on 1 device, per family.

Run as `python distributed_checks.py OUT.json`: splits the CPU into 2 logical devices BEFORE TensorFlow starts (that is
why this runs in its own process: the rest of the test suite keeps one device), then for REQA, HCL (fine-tuning and
synthetic stages) and MetaIQA builds one model, copies its initial weights into a twin built under
`tf.distribute.MirroredStrategy` over the two devices, takes one training step on each with the same global batch
(float32) and writes the largest weight difference and how far the step moved the weights.

BatchNorm: a mirrored BatchNormalization normalises each replica's half-batch with its own statistics, so a training-mode
BN step on 2 replicas is a different function from one on the whole batch (as in any data-parallel training without
synchronized BN). The checks freeze every BN layer (trainable=False: Keras then uses the moving statistics), which keeps
the rest of each family's step (losses, two optimizers, coupled L2, meta update) exactly comparable. Dropout is set to 0.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_iqa  # noqa: E402

DEVICES = ["/cpu:0", "/cpu:1"]


def freeze_bn(model):
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return model


def twin(build, strategy):
    """(one-device model, mirrored model with the same initial weights)."""
    keras.utils.set_random_seed(0)
    a = freeze_bn(build())
    with strategy.scope():
        b = freeze_bn(build())
    b.set_weights(a.get_weights())
    return a, b


def compare(a, b, before):
    wa, wb = a.get_weights(), b.get_weights()
    return {"max_diff": float(max(np.abs(x - y).max() for x, y in zip(wa, wb))),
            "moved": float(max(np.abs(x - y).max() for x, y in zip(wa, before)))}


def fit_one_step(model, ds):
    model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)


def check_reqa(strategy, optimizer):
    from keras_iqa.training.optimizers import FusedAdam

    def build():
        return keras_iqa.create_model("reqa-tiny", dropout=0.0)

    def compile_(m):
        if optimizer == "sgd":
            m.compile(optimizer=keras.optimizers.SGD(0.05), backbone_optimizer=keras.optimizers.SGD(0.02),
                      weight_decay=5e-2)
        else:
            # Adam's first step is lr * g / (|g| + epsilon): with the default epsilon (1e-7) a weight whose gradient is
            # near 0 turns float32 rounding of g (summation order, replicas) into a step change of up to lr; epsilon 1e-3
            # keeps the step Lipschitz in g (|d step| <= lr * |d g| / epsilon), so only a real difference shows.
            m.compile(optimizer=FusedAdam(1e-2, epsilon=1e-3), backbone_optimizer=FusedAdam(1e-3, epsilon=1e-3),
                      weight_decay=5e-4)

    a, b = twin(build, strategy)
    before = a.get_weights()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (10, 64, 64, 3)).astype("float32")  # two micro-batches of 5 (one per replica)
    y = np.tile(np.array([5.0, 25.0, 45.0, 65.0, 85.0], "float32"), 2)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    compile_(a)
    fit_one_step(a, ds)
    with strategy.scope():
        compile_(b)
    fit_one_step(b, ds)
    out = compare(a, b, before)
    out["iterations"] = [int(b.optimizer.iterations.numpy()), int(b.backbone_optimizer.iterations.numpy())]
    return out


def check_hcl_finetune(strategy):
    def build():
        return keras_iqa.create_model("hcl-tiny", subnet_dropout=0.0)

    def compile_(m):
        m.compile(optimizer=keras.optimizers.SGD(0.05), backbone_optimizer=keras.optimizers.SGD(0.01), loss="mse")

    a, b = twin(build, strategy)
    before = a.get_weights()
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    y = rng.uniform(20, 80, (8, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    compile_(a)
    fit_one_step(a, ds)
    with strategy.scope():
        compile_(b)
    fit_one_step(b, ds)
    out = compare(a, b, before)
    out["iterations"] = [int(b.optimizer.iterations.numpy()), int(b.backbone_optimizer.iterations.numpy())]
    return out


def check_hcl_synthetic(strategy):
    """Curriculum 2 with lambda 0 (the correlation term pairs heads within a batch: on N replicas, within each share)."""
    from keras_iqa.models.hcl import HCLModelConfig, TINY, build_synthetic

    cfg = HCLModelConfig(**{**TINY, "subnet_dropout": 0.0})

    def build():
        return build_synthetic(cfg, lambda_corr=0.0)

    def compile_(m):
        m.compile(optimizer=keras.optimizers.SGD(0.05), backbone_optimizer=keras.optimizers.SGD(0.01))

    a, b = twin(build, strategy)
    before = a.get_weights()
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    ids = np.array([0, 1, 0, 1, 0, 1, 0, 1], "int32")
    y = rng.uniform(0, 1, (8,)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices(((x, ids), y)).batch(8)
    compile_(a)
    fit_one_step(a, ds)
    with strategy.scope():
        compile_(b)
    fit_one_step(b, ds)
    return compare(a, b, before)


def check_metaiqa(strategy, n_tasks):
    from keras_iqa.training.meta import MetaLearner

    def build():
        return keras_iqa.create_model("metaiqa-tiny", crop_size=32)

    a, b = twin(build, strategy)
    before = a.get_weights()
    rng = np.random.default_rng(3)

    def batch(n):
        return rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32"), rng.uniform(0, 1, (n, 1)).astype("float32")

    tasks = []
    for i in range(n_tasks):
        (s1, ys1), (s2, ys2), (q1, yq1) = batch(4), batch(3), batch(4)
        tasks.append({"support_x": [s1, s2], "support_y": [ys1, ys2], "query_x": q1, "query_y": yq1})
    kw = dict(inner_steps=3, inner_lr=1e-3, outer_lr=0.5, weight_decay=1e-3)
    la = MetaLearner(a, **kw)
    with strategy.scope():
        lb = MetaLearner(b, **kw)
    loss_a, loss_b = la.meta_step(tasks), lb.meta_step(tasks)
    out = compare(a, b, before)
    out.update(loss_diff=abs(loss_a - loss_b), distributed=bool(lb.distributed), single=not la.distributed,
               traces=dict(lb.trace_counts))
    lb.meta_step(tasks)  # a second step with the same shapes: no retracing
    out["traces_after_second_step"] = dict(lb.trace_counts)
    return out


def main(out_path):
    strategy = tf.distribute.MirroredStrategy(DEVICES)
    results = {"replicas": strategy.num_replicas_in_sync}
    checks = {
        "reqa_sgd": lambda: check_reqa(strategy, "sgd"),
        "reqa_fused_adam": lambda: check_reqa(strategy, "adam"),
        "hcl_finetune": lambda: check_hcl_finetune(strategy),
        "hcl_synthetic": lambda: check_hcl_synthetic(strategy),
        "metaiqa_2_tasks": lambda: check_metaiqa(strategy, 2),
        "metaiqa_3_tasks": lambda: check_metaiqa(strategy, 3),
    }
    only = os.environ.get("CHECKS")
    for name, fn in checks.items():
        if only and name not in only.split(","):
            continue
        try:
            results[name] = fn()
        except Exception as e:  # reported per check, so one failure does not hide the others
            import traceback

            results[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
