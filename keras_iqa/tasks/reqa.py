"""REQA's training task (Li & Huo, coarse-to-fine with the range effect): config, model, inputs, training and protocols.

`train(cfg, data, out)` trains one split into a run directory (config.json, history.csv, checkpoints/, model.keras,
predictions.csv, results.json); `train_repetitions(cfg, data, out)` runs the paper's protocol, `repetitions` (20) train-test
iterations on split_00 .. split_19 with the median over them (REQA Sec. IV-A). `keras-iqa train reqa` is the CLI adapter.

Example:
>>> from keras_iqa.config import load_config
>>> from keras_iqa.tasks.reqa import PRESETS, REQATrainConfig, validate
>>> cfg = validate(load_config(REQATrainConfig, overrides={**PRESETS["official"], "model": "reqa-tiny"}))
>>> cfg.sampler, cfg.coarse, cfg.epochs
('batch', 'official', 30)
>>> # needs a prepared dataset (`keras-iqa prepare`) and hours of training:
>>> from keras_iqa.tasks.reqa import train
>>> train(cfg, data="records/koniq10k", out="runs/reqa")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import keras_iqa
from keras_iqa.caller import setting
from keras_iqa.config import apply_overrides, to_dict
from keras_iqa.registry import get_card
from keras_iqa.tasks.base import Task, resolve_backbone_weights
from keras_iqa.tasks.base import set_test_contract as _set_contract
from keras_iqa.training.memory import check_step_memory

__all__ = ["PRESETS", "REQATask", "REQATrainConfig", "TARGET", "TASK", "build_inputs", "build_model",
           "check_replica_batches", "set_test_contract", "summary_line", "train", "train_data", "train_repetitions", "validate"]


@dataclass
class REQATrainConfig:
    """Every knob of `keras-iqa train reqa` (paper defaults; `--preset official` switches to the released code's values)."""

    model: str = "reqa"                     # registry card: reqa | reqa-official | reqa-tiny
    model_overrides: dict = field(default_factory=dict)  # e.g. {steps: 3, feedback: false} (Table V ablations)
    backbone_weights: Optional[str] = "auto"  # auto: "imagenet" for full-size cards, None for tiny ones
    sampler: str = "microbatch"             # microbatch (paper: 5 images from 5 quality bins) | batch (official: plain batches)
    micro_batches: int = 3                  # M (batch = 5M) for the micro-batch sampler
    sampler_epoch: str = "balanced"         # microbatch epochs: balanced (each bin 1/5 of every batch, rare bins resampled)
                                            # | pass (one pass over the training images per epoch, each image once)
    batch_size: int = 16                    # plain-batch sampler (official code: 16)
    bins: str = "acr"                       # acr | quantile (micro-batch quality bins)
    coarse: str = "paper"                   # paper (Eq. 9-12) | official (RankLoss1 over the whole batch)
    curriculum: str = "paper"               # paper (4 stages) | official (constant 0.25/0.125/0.25/0.375)
    stage_epochs: int = 10
    epochs: int = 40
    steps_per_epoch: Optional[int] = None   # default: training images // batch
    lr: Union[str, float] = "auto"          # FN / TE / MLP-III; auto: 2e-4 (paper) with ImageNet weights, 3e-3 from random init
    backbone_lr: Union[str, float] = "auto"  # auto: 2e-5 (paper) with ImageNet weights, 3e-4 from random init (docs/heads.md)
    lr_schedule: str = "paper"              # paper (x0.1 at milestones) | official | constant
    milestones: tuple = (10, 20, 30)
    lr_factor: float = 0.1
    weight_decay: float = 5e-4              # coupled L2 (added to gradients)
    crop_size: Optional[int] = None         # default: the card's (224; reqa-tiny 64)
    resize: Union[int, list, None] = None   # [h, w] or short side: resize before the crop, in training AND at test
                                            # (official: KonIQ [512, 384], BID [512, 512]); saved as model.test_resize
    flip: bool = True
    eval_crops: Optional[int] = None        # test crops per image (default: the card's, 25); saved as model.test_crops
    eval_mode: Optional[str] = None         # random (official) | grid | resize (default: the card's, random)
    eval_every: int = 0                     # evaluate the test split every N epochs (0: only at the end)
    split: str = "split_00"
    repetitions: int = 20                   # paper: "20 train-test iterations" (split_00 .. split_19; --split all runs them)
    precision: str = "auto"                 # auto (bf16 on CPUs with AVX512-BF16/AMX, measured 1.67x faster) | fp32 | bf16
    distribute: str = "auto"                # tf.distribute strategy: auto | mirrored | multiworker (docs/scaling.md)
    seed: int = 0


PRESETS = {
    "paper": {},
    "official": {"model": "reqa-official", "sampler": "batch", "coarse": "official", "curriculum": "official",
                 "lr_schedule": "official", "epochs": 30},
}

CHOICES = {"sampler": ("microbatch", "batch"), "coarse": ("paper", "official"), "curriculum": ("paper", "official"),
           "lr_schedule": ("paper", "official", "constant"), "eval_mode": (None, "random", "grid", "resize"),
           "sampler_epoch": ("balanced", "pass"), "precision": ("auto", "fp32", "bf16"), "bins": ("acr", "quantile"),
           "distribute": ("auto", "mirrored", "multiworker")}

TARGET = "normalized100"  # the reader's score mapped to 0-100, higher = better: REQA's output scale (targets and predictions
                          # of predictions.csv / results.json are on the same scale)


def validate(cfg: REQATrainConfig) -> REQATrainConfig:
    """Checks the choice-valued keys and the micro-batch rule of the paper's coarse loss; errors name the `--set` to fix."""
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"config {key}={getattr(cfg, key)!r} is not one of {allowed} (set {setting(key, ...)})")
    if cfg.coarse == "paper" and cfg.sampler == "batch" and cfg.batch_size % 5:
        raise ValueError(f"coarse=paper groups the batch in micro-batches of 5; batch_size={cfg.batch_size} is not a multiple "
                         f"of 5 (use {setting('batch_size', 15)}, {setting('sampler', 'microbatch')} or "
                         f"{setting('coarse', 'official')})")
    card = apply_overrides(get_card(cfg.model).config(), cfg.model_overrides, prefix="model_overrides.")  # keys, types
    images, batch_key = (5 * cfg.micro_batches, "micro_batches") if cfg.sampler == "microbatch" else (cfg.batch_size, "batch_size")
    check_step_memory(cfg.crop_size or card.crop_size, images, getattr(card, "width", 1.0), batch_key=batch_key)
    return cfg


def set_test_contract(model, cfg: REQATrainConfig):
    """The model's test-time contract from the training config (`keras_iqa.tasks.base.set_test_contract`): `test_resize` =
    `resize`, `test_crops` = `eval_crops`, `crop_policy` = `eval_mode` (None: the card's)."""
    return _set_contract(model, resize=cfg.resize, eval_crops=cfg.eval_crops, eval_mode=cfg.eval_mode)


def build_model(cfg: REQATrainConfig):
    """The REQA model of a training config (backbone weights resolved; `auto` = ImageNet for full-size cards), its test-time
    contract set. A `crop_size` other than the card's scales `pool_size` so the pooled grid stays 8x8 / 4x4 / 2x2 at 224."""
    base = get_card(cfg.model).config(**cfg.model_overrides)
    over = dict(cfg.model_overrides, backbone_weights=resolve_backbone_weights(cfg.backbone_weights, base))
    if cfg.crop_size and cfg.crop_size != base.crop_size:
        over["crop_size"] = cfg.crop_size
        if "pool_size" not in cfg.model_overrides:
            over["pool_size"] = max(1, base.pool_size * cfg.crop_size // base.crop_size)
    return set_test_contract(keras_iqa.create_model(cfg.model, **over), cfg)


def open_readers(cfg: REQATrainConfig, data: str) -> tuple:
    """(train, test) `RecordReader`s of `cfg.split`, targets on 0-100 (`TARGET`)."""
    from data_pipeline.input import RecordReader

    return (RecordReader(data, split=cfg.split, subset="train", target=TARGET),
            RecordReader(data, split=cfg.split, subset="test", target=TARGET))


def build_inputs(cfg: REQATrainConfig, reader, crop_size: int = 224) -> tuple:
    """(dataset, steps_per_epoch) of the configured sampler: micro-batches of 5 images from 5 quality bins (paper) or plain
    batches (official), crops of `crop_size` after the training `resize`."""
    resize = (int(cfg.resize) if isinstance(cfg.resize, (int, float)) else tuple(cfg.resize)) if cfg.resize else None
    if reader.target != TARGET:
        raise ValueError(f"REQA trains on 0-100 targets: open the reader with target={TARGET!r} (got {reader.target!r})")
    if cfg.sampler == "microbatch":
        ds = reader.reqa_microbatches(cfg.micro_batches, crop_size=crop_size, bins=cfg.bins, seed=cfg.seed,
                                      resize=resize, flip=cfg.flip, epoch=cfg.sampler_epoch)
        batch = 5 * cfg.micro_batches
    else:
        ds = reader.train_dataset(cfg.batch_size, crop_size=crop_size, resize=resize, flip=cfg.flip, seed=cfg.seed,
                                  repeat=True)
        batch = cfg.batch_size
    steps = cfg.steps_per_epoch or max(1, reader.steps_per_epoch(batch))
    return ds, steps


train_data = build_inputs  # the name before issue 23


def check_replica_batches(cfg: REQATrainConfig, replicas: int) -> None:
    """Each of `replicas` replicas must get an equal share of the global batch made of whole micro-batches of 5 (the coarse
    loss, Eq. 9-12, ranks within a micro-batch); raises a ValueError naming the setting to change otherwise."""
    if replicas <= 1:
        return
    if cfg.sampler == "microbatch":
        if cfg.micro_batches % replicas:
            raise ValueError(f"{setting('distribute', cfg.distribute)}: {replicas} replicas each need whole micro-batches "
                             f"of 5, but micro_batches={cfg.micro_batches} does not divide by {replicas} (use "
                             f"{setting('micro_batches', replicas * max(1, cfg.micro_batches // replicas))})")
    else:
        unit = 5 * replicas if cfg.coarse == "paper" else replicas
        if cfg.batch_size % unit:
            raise ValueError(f"{setting('distribute', cfg.distribute)}: batch_size={cfg.batch_size} must split into "
                             f"{replicas} equal shares{' of whole micro-batches of 5' if cfg.coarse == 'paper' else ''} (a "
                             f"multiple of {unit}; {setting('batch_size', ...)})")


def _test_metrics_callback(reader, every: int):
    import keras

    from keras_iqa.tasks.evaluate import evaluate

    class TestMetrics(keras.callbacks.Callback):
        """Adds test_srocc / test_plcc to the logs every `every` epochs (the official code tracks them per epoch)."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None and (epoch + 1) % every == 0:
                m = evaluate(self.model, reader)["metrics"]
                logs["test_srocc"], logs["test_plcc"] = m["srocc"], m["plcc"]

    return TestMetrics()


def train(cfg: REQATrainConfig, data: str, out, protocol: str = "paper", quiet: bool = False) -> dict:
    """Trains REQA on `cfg.split` of the prepared dataset `data` into the run directory `out` (resumes when it exists) and
    evaluates it on the test subset under the model's test-time contract; returns the results (results.json) plus "run_dir".
    `protocol`: the preset name recorded in results.json."""
    from keras_iqa.training import runner
    from keras_iqa.training.cpu import configure_cpu

    cpu = configure_cpu(cfg.precision)  # the benchmarked CPU defaults (README, Benchmarks)
    # --distribute: created first (a multi-worker strategy must precede other TensorFlow work); model, optimizers and fit
    # under it (auto: the default one-device strategy); Keras's fit splits each global batch over the replicas, whole
    # micro-batches each (checked here), and runs REQA's train_step per replica
    strategy = runner.get_strategy(cfg.distribute)
    check_replica_batches(cfg, strategy.num_replicas_in_sync)
    run_dir = runner.RunDir.create(out, config={**to_dict(cfg), "data": data}, seed=cfg.seed, strategy=strategy)
    train_reader, test_reader = open_readers(cfg, data)
    with strategy.scope():
        model = build_model(cfg)  # its test-time contract (test_resize, test_crops, crop_policy) is set from cfg here
        return _fit_and_report(cfg, data, run_dir, train_reader, test_reader, model, cpu, protocol, quiet)


def _fit_and_report(cfg, data, run_dir, train_reader, test_reader, model, cpu, protocol, quiet) -> dict:
    from keras_iqa.tasks.evaluate import evaluate
    from keras_iqa.training import runner
    from keras_iqa.training.curriculum import CurriculumSchedule
    from keras_iqa.training.lr import RANDOM_INIT, is_pretrained, resolve_lr

    pre = is_pretrained(model.backbone_weights)  # lr=auto: paper rates need ImageNet weights (docs/heads.md)
    lr = resolve_lr(cfg.lr, 2e-4, RANDOM_INIT["reqa"]["lr"], pre, "reqa")
    backbone_lr = resolve_lr(cfg.backbone_lr, 2e-5, RANDOM_INIT["reqa"]["backbone_lr"], pre, "reqa")
    model.compile(coarse=cfg.coarse, weight_decay=cfg.weight_decay, lr=lr, backbone_lr=backbone_lr)
    ds, steps = build_inputs(cfg, train_reader, model.crop_size)
    ds = runner.shard_by_data(ds)  # multi-worker: each worker takes its whole micro-batches of the same global batch
    schedule = CurriculumSchedule.preset(cfg.curriculum, steps=model.steps, stage_epochs=cfg.stage_epochs, lr=lr,
                                         backbone_lr=backbone_lr, lr_schedule=cfg.lr_schedule,
                                         milestones=cfg.milestones, lr_factor=cfg.lr_factor, verbose=0 if quiet else 1)
    cbs = [schedule] + ([_test_metrics_callback(test_reader, cfg.eval_every)] if cfg.eval_every else [])
    hist = runner.fit(model, ds, epochs=cfg.epochs, run=run_dir, steps_per_epoch=steps, callbacks=cbs,
                      verbose=0 if quiet else "auto", tensorboard=False)
    run_dir.save_final(model)
    ev = evaluate(model, test_reader, fine=True, predictions_csv=run_dir.path / "predictions.csv")
    results = {"model": cfg.model, "data": data, "split": cfg.split, "protocol": protocol,
               "test": ev["metrics"], "fine_grained": ev.get("fine_grained"),
               "eval": {"crops": model.test_crops, "mode": model.crop_policy, "resize": model.test_resize,
                        "score": "last step", "target_scale": "0-100 (normalized100)"},
               "history": {k: [float(v) for v in vs] for k, vs in hist.history.items()},
               "curriculum": schedule.history, "precision": cfg.precision, "cpu": cpu,
               "sampler": {"kind": cfg.sampler, "epoch": cfg.sampler_epoch,
                           "bin_counts": getattr(train_reader, "bin_counts", None),
                           "bin_sources": getattr(train_reader, "bin_sources", None)}}
    if "test_srocc" in hist.history:  # the official code reports the best epoch (test-set model selection)
        results["best_epoch_test"] = {"srocc": max(hist.history["test_srocc"]), "plcc": max(hist.history["test_plcc"])}
    run_dir.save_results(results)
    return {**results, "run_dir": str(run_dir.path)}  # run_dir: this process's folder (a temporary one on non-chief workers)


def train_repetitions(cfg: REQATrainConfig, data: str, out, protocol: str = "paper", quiet: bool = False) -> dict:
    """The paper's protocol: `cfg.repetitions` (20) train-test iterations on split_00 .. split_{repetitions-1}, one run
    directory each under `out`, and the median over them in `out`/results.json (returned)."""
    from keras_iqa.evaluation.protocols import summarize
    from keras_iqa.training.runner import save_json

    rows = []
    for k in range(int(cfg.repetitions)):
        col = f"split_{k:02d}"
        res = train(dataclasses.replace(cfg, split=col), data, Path(out) / col, protocol=protocol, quiet=quiet)
        rows.append({"row": col, **res["test"]})
    summary = summarize(rows, keys=("srocc", "plcc"))
    doc = {"protocol": f"{cfg.repetitions} train-test iterations (REQA Sec. IV-A), median reported", "rows": rows,
           "summary": summary}
    save_json(doc, Path(out) / "results.json")
    return doc


class REQATask(Task):
    name = "reqa"
    config_cls = REQATrainConfig
    description = "REQA (coarse-to-fine, range effect)"

    def build_model(self, cfg):
        return build_model(cfg)

    def build_inputs(self, cfg, reader, crop_size: int = 224):
        return build_inputs(cfg, reader, crop_size)

    def train(self, cfg, data, out, protocol: str = "paper", quiet: bool = False):
        if cfg.split == "all":
            return train_repetitions(cfg, data, out, protocol=protocol, quiet=quiet)
        return train(cfg, data, out, protocol=protocol, quiet=quiet)


TASK = REQATask()


def summary_line(results: dict) -> str:
    """The `test: {...}` line the CLI prints (n, SROCC, PLCC)."""
    m = results["test"]
    return "test: " + json.dumps({k: m[k] for k in ("n", "srocc", "plcc") if k in m})
