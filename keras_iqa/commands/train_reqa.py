"""`keras-iqa train reqa`: train REQA (coarse-to-fine, range effect) on a prepared dataset and evaluate it.

Python equivalent:
    model = keras_iqa.create_model("reqa", backbone_weights="imagenet")
    model.compile(coarse="paper", weight_decay=5e-4, lr=2e-4, backbone_lr=2e-5)
    model.test_crops, model.crop_policy, model.test_resize = 25, "random", None  # the test-time contract, before training
    train = reader.reqa_microbatches(3)                              # reader target "normalized100": scores on 0-100
    model.fit(train, steps_per_epoch=..., epochs=40, callbacks=[CurriculumSchedule.preset("paper")])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from keras_iqa.commands import add_config_args, add_distribute_arg, add_precision_arg, formatter


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
    resize: Optional[list] = None           # [h, w] or short side: resize before the crop, in training AND at test
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


def register(sub):
    p = sub.add_parser(
        "reqa",
        help="REQA (coarse-to-fine, range effect)",
        description="Train REQA (Li & Huo): ResNet-50 + ConvLSTM feedback blocks (T=4 steps) + quality transformer, with the\n"
        "coarse rank+gradient loss on step 1 (micro-batches of 5 images from 5 quality bins), the fine tolerance losses\n"
        "(5 / 2.5 / 0 on 0-100) on steps 2-4, curriculum weights in 4 stages of 10 epochs, Adam with backbone LR 2e-5 and\n"
        "2e-4 elsewhere (x0.1 at epochs 10/20/30), coupled L2 5e-4. Targets are the dataset's scores mapped to 0-100.\n"
        "Test: 25 random crops per image averaged. Writes a run directory: config.json, history.csv, checkpoints/,\n"
        "model.keras, predictions.csv and results.json (SROCC, PLCC, per-ACR-range metrics). Re-run with the same --out\n"
        "to resume an interrupted run.",
        epilog="Examples:\n"
        "  # paper protocol on KonIQ-10k split_03\n"
        "  keras-iqa train reqa --data records/koniq10k --split split_03 --out runs/reqa_koniq\n"
        "  # the released code's settings (plain batches of 16, RankLoss1, constant weights, 30 epochs)\n"
        "  keras-iqa train reqa --preset official --data records/clive --out runs/reqa_off --set resize=[512,512]\n"
        "  # Table V ablations: T=3, without the transformer\n"
        "  keras-iqa train reqa --data records/koniq10k --out runs/t3 --set 'model_overrides={steps: 3}'\n"
        "  keras-iqa train reqa --data records/koniq10k --out runs/noTE --set 'model_overrides={transformer: false}'\n"
        "  # faster on CPUs with AVX512-BF16 / on GPUs\n"
        "  keras-iqa train reqa --data records/clive --precision bf16 --out runs/bf16\n"
        "  # the paper's protocol: 20 train-test iterations (one run per split, median over them)\n"
        "  keras-iqa train reqa --data records/koniq10k --split all --out runs/reqa_koniq20\n"
        "  # smoke run\n"
        "  keras-iqa train reqa --model reqa-tiny --data tiny/auth --out /tmp/r --set epochs=1 --set steps_per_epoch=2\n",
        formatter_class=formatter(),
    )
    p.add_argument("--data", required=True, metavar="DIR", help="prepared dataset (keras-iqa prepare ...)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (re-run to resume)")
    p.add_argument("--split", metavar="COL", help="split column of splits.csv (default split_00), or 'all': the paper's 20 train-test "
                   "iterations (split_00 .. split_19, `--set repetitions=N`), one run directory each, median in results.json")
    p.add_argument("--model", help="registry card (reqa | reqa-official | reqa-tiny)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="paper protocol (default) or the released code's")
    add_precision_arg(p)
    add_distribute_arg(p, note=": the model is built, compiled and fit under it; each replica trains on whole "
                       "micro-batches of the global batch (micro_batches a multiple of the replicas)")
    p.add_argument("--epochs", type=int, metavar="N", help="training epochs (default 40; official preset 30)")
    p.add_argument("--crop-size", type=int, metavar="PX", help="training crop size (default: the card's, 224; reqa-tiny 64)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default 0)")
    add_config_args(p)
    p.set_defaults(func=run)


def _config(args) -> REQATrainConfig:
    from keras_iqa.config import load_config

    flags = {"model": args.model, "split": args.split, "precision": args.precision, "distribute": args.distribute,
             "epochs": args.epochs,
             "crop_size": args.crop_size, "seed": args.seed}
    overrides = {**PRESETS[args.preset], **{k: v for k, v in flags.items() if v is not None}}
    cfg = load_config(REQATrainConfig, files=args.config, sets=args.set, overrides=overrides)
    checks = {"sampler": ("microbatch", "batch"), "coarse": ("paper", "official"), "curriculum": ("paper", "official"),
              "lr_schedule": ("paper", "official", "constant"), "eval_mode": (None, "random", "grid", "resize"),
              "sampler_epoch": ("balanced", "pass"),
              "precision": ("auto", "fp32", "bf16"), "bins": ("acr", "quantile"),
              "distribute": ("auto", "mirrored", "multiworker")}
    for key, allowed in checks.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"config {key}={getattr(cfg, key)!r} is not one of {allowed} (set it with --set {key}=...)")
    if cfg.coarse == "paper" and cfg.sampler == "batch" and cfg.batch_size % 5:
        raise ValueError(f"coarse=paper groups the batch in micro-batches of 5; batch_size={cfg.batch_size} is not a multiple "
                         "of 5 (use --set batch_size=15, sampler=microbatch, or coarse=official)")
    return cfg


def build_model(cfg: REQATrainConfig):
    """The REQA model of a training config (backbone weights resolved; `auto` = ImageNet for full-size cards)."""
    import keras_iqa
    from keras_iqa.registry import get_card

    base = get_card(cfg.model).config(**cfg.model_overrides)
    weights = cfg.backbone_weights
    if weights == "auto":
        weights = "imagenet" if (base.width == 1.0 and base.blocks is None) else None
    over = dict(cfg.model_overrides, backbone_weights=weights)
    if cfg.crop_size and cfg.crop_size != base.crop_size:
        over["crop_size"] = cfg.crop_size
        if "pool_size" not in cfg.model_overrides:  # keep the pooled grid (8x8 / 4x4 / 2x2 at 224)
            over["pool_size"] = max(1, base.pool_size * cfg.crop_size // base.crop_size)
    return set_test_contract(keras_iqa.create_model(cfg.model, **over), cfg)


def set_test_contract(model, cfg: REQATrainConfig):
    """The model's test-time contract from the training config, set BEFORE training so validation, `model.keras`, `score`,
    the SavedModel and TFLite all use it: `test_resize` = the training `resize` (the test image is resized exactly as the
    training images were before their crops), `test_crops` = `eval_crops`, `crop_policy` = `eval_mode` (None: the card's)."""
    from keras_iqa.models.base import _resize_value

    model.test_resize = _resize_value(cfg.resize)
    if cfg.eval_crops is not None:
        model.test_crops = int(cfg.eval_crops)
    if cfg.eval_mode is not None:
        model.crop_policy = cfg.eval_mode
    return model


TARGET = "normalized100"  # the reader's score mapped to 0-100, higher = better: REQA's output scale (targets and predictions
                          # of predictions.csv / results.json are on the same scale)


def train_data(cfg: REQATrainConfig, reader, crop_size: int = 224):
    """(dataset, steps_per_epoch) for the configured sampler."""
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


def evaluate(model, reader, cfg: Optional[REQATrainConfig] = None, fine: bool = True) -> dict:
    """Test metrics under the model's test-time contract (set from the config by `set_test_contract`: `eval_crops` crops
    averaged per image, after the training `resize`; last-step score). Targets and predictions are both on 0-100."""
    from keras_iqa.evaluation.predict import predict_reader
    from keras_iqa.metrics import evaluate_predictions

    if cfg is not None:
        set_test_contract(model, cfg)
    df = predict_reader(model, reader)
    out = {"predictions": df}
    try:
        out["metrics"] = evaluate_predictions(df["pred"].to_numpy(), df["target"].to_numpy())
    except ValueError as e:  # too few / constant predictions (tiny smoke runs)
        out["metrics"] = {"n": len(df), "error": str(e)}
    if fine:
        try:
            from keras_iqa.evaluation.fine_grained import fine_grained_report

            lo_hi = (0.0, 100.0) if getattr(reader, "target", TARGET) == TARGET else (0.0, 1.0)
            out["fine_grained"] = fine_grained_report(df["pred"].to_numpy(), df["target"].to_numpy(), mos_range=lo_hi,
                                                      pred_range=model.score_range, pred_higher_better=True)
        except ValueError as e:
            out["fine_grained"] = {"error": str(e)}
    return out


def _eval_callback(reader, cfg, every):
    import keras

    class TestMetrics(keras.callbacks.Callback):
        """Adds test_srocc / test_plcc to the logs every `every` epochs (the official code tracks them per epoch)."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None and (epoch + 1) % every == 0:
                m = evaluate(self.model, reader, cfg, fine=False)["metrics"]
                logs["test_srocc"] = m.get("srocc", float("nan"))
                logs["test_plcc"] = m.get("plcc", float("nan"))

    return TestMetrics()


def run(args) -> int:
    """One split (`--split split_03`), or `--split all`: the paper's protocol, `repetitions` (20) train-test iterations on
    split_00 .. split_{repetitions-1}, one run directory each under --out, and the median over them in --out/results.json."""
    import dataclasses
    import json
    from pathlib import Path

    cfg = _config(args)
    if cfg.split != "all":
        return _run_one(args, cfg, args.out)
    from keras_iqa.evaluation.protocols import summarize
    from keras_iqa.training.runner import save_json

    rows = []
    for k in range(int(cfg.repetitions)):
        col = f"split_{k:02d}"
        out = Path(args.out) / col
        _run_one(args, dataclasses.replace(cfg, split=col), out)
        with open(out / "results.json", encoding="utf-8") as f:
            rows.append({"row": col, **json.load(f)["test"]})
    summary = summarize(rows, keys=("srocc", "plcc"))
    save_json({"protocol": f"{cfg.repetitions} train-test iterations (REQA Sec. IV-A), median reported", "rows": rows,
               "summary": summary}, Path(args.out) / "results.json")
    print("median over splits:", json.dumps({k: summary.get(k, {}).get("median") for k in ("srocc", "plcc")}))
    return 0


def check_replica_batches(cfg: REQATrainConfig, replicas: int) -> None:
    """Each of `replicas` replicas must get an equal share of the global batch made of whole micro-batches of 5 (the coarse
    loss, Eq. 9-12, ranks within a micro-batch); raises a ValueError naming the setting to change otherwise."""
    if replicas <= 1:
        return
    if cfg.sampler == "microbatch":
        if cfg.micro_batches % replicas:
            raise ValueError(f"--distribute {cfg.distribute}: {replicas} replicas each need whole micro-batches of 5, but "
                             f"micro_batches={cfg.micro_batches} does not divide by {replicas} (use --set micro_batches="
                             f"{replicas * max(1, cfg.micro_batches // replicas)})")
    else:
        unit = 5 * replicas if cfg.coarse == "paper" else replicas
        if cfg.batch_size % unit:
            raise ValueError(f"--distribute {cfg.distribute}: batch_size={cfg.batch_size} must split into {replicas} equal "
                             f"shares{' of whole micro-batches of 5' if cfg.coarse == 'paper' else ''} (a multiple of "
                             f"{unit}; --set batch_size=...)")


def _run_one(args, cfg: REQATrainConfig, out) -> int:
    from data_pipeline.input import RecordReader
    from keras_iqa.config import to_dict
    from keras_iqa.training import runner
    from keras_iqa.training.cpu import configure_cpu

    cpu = configure_cpu(cfg.precision)  # the benchmarked CPU defaults (README, Benchmarks)
    # --distribute: created first (a multi-worker strategy must precede other TensorFlow work); model, optimizers and fit
    # under it (auto: the default one-device strategy); Keras's fit splits each global batch over the replicas, whole
    # micro-batches each (checked here), and runs REQA's train_step per replica
    strategy = runner.get_strategy(cfg.distribute)
    check_replica_batches(cfg, strategy.num_replicas_in_sync)
    run_dir = runner.RunDir.create(out, config={**to_dict(cfg), "data": args.data}, seed=cfg.seed, strategy=strategy)
    train_reader = RecordReader(args.data, split=cfg.split, subset="train", target=TARGET)
    test_reader = RecordReader(args.data, split=cfg.split, subset="test", target=TARGET)
    with strategy.scope():
        model = build_model(cfg)  # its test-time contract (test_resize, test_crops, crop_policy) is set from cfg here
        return _train_and_report(args, cfg, run_dir, train_reader, test_reader, model, cpu, runner)


def _train_and_report(args, cfg, run_dir, train_reader, test_reader, model, cpu, runner) -> int:
    import json

    from keras_iqa.training.curriculum import CurriculumSchedule

    from keras_iqa.training.lr import RANDOM_INIT, is_pretrained, resolve_lr

    pre = is_pretrained(model.backbone_weights)  # lr=auto: paper rates need ImageNet weights (docs/heads.md)
    lr = resolve_lr(cfg.lr, 2e-4, RANDOM_INIT["reqa"]["lr"], pre, "reqa")
    backbone_lr = resolve_lr(cfg.backbone_lr, 2e-5, RANDOM_INIT["reqa"]["backbone_lr"], pre, "reqa")
    model.compile(coarse=cfg.coarse, weight_decay=cfg.weight_decay, lr=lr, backbone_lr=backbone_lr)
    ds, steps = train_data(cfg, train_reader, model.crop_size)
    ds = runner.shard_by_data(ds)  # multi-worker: each worker takes its whole micro-batches of the same global batch
    steps_model = model.steps
    schedule = CurriculumSchedule.preset(cfg.curriculum, steps=steps_model, stage_epochs=cfg.stage_epochs, lr=lr,
                                         backbone_lr=backbone_lr, lr_schedule=cfg.lr_schedule,
                                         milestones=cfg.milestones, lr_factor=cfg.lr_factor, verbose=0 if args.quiet else 1)
    cbs = [schedule]
    if cfg.eval_every:
        cbs.append(_eval_callback(test_reader, cfg, cfg.eval_every))
    hist = runner.fit(model, ds, epochs=cfg.epochs, run=run_dir, steps_per_epoch=steps, callbacks=cbs,
                      verbose=0 if args.quiet else "auto",
                      tensorboard=False)
    run_dir.save_final(model)
    ev = evaluate(model, test_reader, cfg)
    ev["predictions"].to_csv(run_dir.path / "predictions.csv", index=False)
    results = {"model": cfg.model, "data": args.data, "split": cfg.split, "protocol": args.preset,
               "test": ev["metrics"], "fine_grained": ev.get("fine_grained"),
               "eval": {"crops": model.test_crops, "mode": model.crop_policy, "resize": model.test_resize,
                        "score": "last step", "target_scale": "0-100 (normalized100)"},
               "history": {k: [float(v) for v in vs] for k, vs in hist.history.items()},
               "curriculum": schedule.history, "precision": cfg.precision, "cpu": cpu,
               "sampler": {"kind": cfg.sampler, "epoch": cfg.sampler_epoch, "bin_counts": getattr(train_reader, "bin_counts", None),
                           "bin_sources": getattr(train_reader, "bin_sources", None)}}
    if "test_srocc" in hist.history:  # the official code reports the best epoch (test-set model selection)
        results["best_epoch_test"] = {"srocc": max(hist.history["test_srocc"]), "plcc": max(hist.history["test_plcc"])}
    run_dir.save_results(results)
    m = ev["metrics"]
    print("test:", json.dumps({k: m[k] for k in ("n", "srocc", "plcc") if k in m}))
    print(f"run directory: {run_dir.path}")
    return 0
