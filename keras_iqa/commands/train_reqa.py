"""`keras-iqa train reqa`: train REQA (coarse-to-fine, range effect) on a prepared dataset and evaluate it.

Python equivalent:
    model = keras_iqa.create_model("reqa", backbone_weights="imagenet")
    model.compile(coarse="paper", weight_decay=5e-4, lr=2e-4, backbone_lr=2e-5)
    train = reader.reqa_microbatches(3).map(lambda x, y: (x, y))     # targets on 0-100 (see `_to_100`)
    model.fit(train, steps_per_epoch=..., epochs=40, callbacks=[CurriculumSchedule.preset("paper")])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from keras_iqa.commands import add_config_args, formatter


@dataclass
class REQATrainConfig:
    """Every knob of `keras-iqa train reqa` (paper defaults; `--preset official` switches to the released code's values)."""

    model: str = "reqa"                     # registry card: reqa | reqa-official | reqa-tiny
    model_overrides: dict = field(default_factory=dict)  # e.g. {steps: 3, feedback: false} (Table V ablations)
    backbone_weights: Optional[str] = "auto"  # auto: "imagenet" for full-size cards, None for tiny ones
    sampler: str = "microbatch"             # microbatch (paper: 5 images from 5 quality bins) | batch (official: plain batches)
    micro_batches: int = 3                  # M (batch = 5M) for the micro-batch sampler
    batch_size: int = 16                    # plain-batch sampler (official code: 16)
    bins: str = "acr"                       # acr | quantile (micro-batch quality bins)
    coarse: str = "paper"                   # paper (Eq. 9-12) | official (RankLoss1 over the whole batch)
    curriculum: str = "paper"               # paper (4 stages) | official (constant 0.25/0.125/0.25/0.375)
    stage_epochs: int = 10
    epochs: int = 40
    steps_per_epoch: Optional[int] = None   # default: training images // batch
    lr: float = 2e-4                        # FN / TE / MLP-III
    backbone_lr: float = 2e-5
    lr_schedule: str = "paper"              # paper (x0.1 at milestones) | official | constant
    milestones: tuple = (10, 20, 30)
    lr_factor: float = 0.1
    weight_decay: float = 5e-4              # coupled L2 (added to gradients)
    crop_size: Optional[int] = None         # default: the card's (224; reqa-tiny 64)
    resize: Optional[list] = None           # [h, w] resize before the crop (official: KonIQ [512, 384], BID [512, 512])
    flip: bool = True
    eval_crops: int = 25
    eval_mode: str = "random"               # random (official) | grid | resize
    eval_every: int = 0                     # evaluate the test split every N epochs (0: only at the end)
    split: str = "split_00"
    precision: str = "auto"                 # auto (bf16 on CPUs with AVX512-BF16/AMX, measured 1.67x faster) | fp32 | bf16
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
        "  # smoke run\n"
        "  keras-iqa train reqa --model reqa-tiny --data tiny/auth --out /tmp/r --set epochs=1 --set steps_per_epoch=2\n",
        formatter_class=formatter(),
    )
    p.add_argument("--data", required=True, metavar="DIR", help="prepared dataset (keras-iqa prepare ...)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (re-run to resume)")
    p.add_argument("--split", help="split column of splits.csv (default split_00)")
    p.add_argument("--model", help="registry card (reqa | reqa-official | reqa-tiny)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="paper protocol (default) or the released code's")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                   help="auto (default: mixed_bfloat16 on CPUs with native bf16, else fp32; fp32 on GPUs), fp32 or bf16")
    p.add_argument("--epochs", type=int)
    p.add_argument("--crop-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_args(p)
    p.set_defaults(func=run)


def _config(args) -> REQATrainConfig:
    from keras_iqa.config import load_config

    flags = {"model": args.model, "split": args.split, "precision": args.precision, "epochs": args.epochs,
             "crop_size": args.crop_size, "seed": args.seed}
    overrides = {**PRESETS[args.preset], **{k: v for k, v in flags.items() if v is not None}}
    cfg = load_config(REQATrainConfig, files=args.config, sets=args.set, overrides=overrides)
    checks = {"sampler": ("microbatch", "batch"), "coarse": ("paper", "official"), "curriculum": ("paper", "official"),
              "lr_schedule": ("paper", "official", "constant"), "eval_mode": ("random", "grid", "resize"),
              "precision": ("auto", "fp32", "bf16"), "bins": ("acr", "quantile")}
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
    return keras_iqa.create_model(cfg.model, **over)


def _to_100(ds):
    """Reader targets (`normalized`, 0-1, higher = better) -> REQA's 0-100 scale."""
    return ds.map(lambda x, y: (x, y * 100.0))


def train_data(cfg: REQATrainConfig, reader, crop_size: int = 224):
    """(dataset, steps_per_epoch) for the configured sampler."""
    resize = tuple(cfg.resize) if cfg.resize else None
    if cfg.sampler == "microbatch":
        ds = reader.reqa_microbatches(cfg.micro_batches, crop_size=crop_size, bins=cfg.bins, seed=cfg.seed,
                                      resize=resize, flip=cfg.flip)
        batch = 5 * cfg.micro_batches
    else:
        ds = reader.train_dataset(cfg.batch_size, crop_size=crop_size, resize=resize, flip=cfg.flip, seed=cfg.seed,
                                  repeat=True)
        batch = cfg.batch_size
    steps = cfg.steps_per_epoch or max(1, reader.steps_per_epoch(batch))
    return _to_100(ds), steps


def evaluate(model, reader, cfg: Optional[REQATrainConfig] = None, fine: bool = True) -> dict:
    """Test metrics with the official protocol (`eval_crops` random crops averaged per image, last-step score)."""
    from keras_iqa.evaluation.predict import predict_reader
    from keras_iqa.metrics import evaluate_predictions

    crops = cfg.eval_crops if cfg else None
    mode = cfg.eval_mode if cfg else None
    df = predict_reader(model, reader, num_crops=crops, mode=mode, seed=cfg.seed if cfg else 0)
    out = {"predictions": df}
    try:
        out["metrics"] = evaluate_predictions(df["pred"].to_numpy(), df["target"].to_numpy())
    except ValueError as e:  # too few / constant predictions (tiny smoke runs)
        out["metrics"] = {"n": len(df), "error": str(e)}
    if fine:
        try:
            from keras_iqa.evaluation.fine_grained import fine_grained_report

            out["fine_grained"] = fine_grained_report(df["pred"].to_numpy(), df["target"].to_numpy(), mos_range=(0.0, 1.0),
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
    import json

    import keras

    from data_pipeline.input import RecordReader
    from keras_iqa.config import to_dict
    from keras_iqa.training import runner
    from keras_iqa.training.curriculum import CurriculumSchedule

    cfg = _config(args)
    from keras_iqa.training.cpu import configure_cpu

    cpu = configure_cpu(cfg.precision)  # the benchmarked CPU defaults (README, Benchmarks)
    run_dir = runner.RunDir.create(args.out, config={**to_dict(cfg), "data": args.data}, seed=cfg.seed)
    train_reader = RecordReader(args.data, split=cfg.split, subset="train", target="normalized")
    test_reader = RecordReader(args.data, split=cfg.split, subset="test", target="normalized")
    model = build_model(cfg)
    model.compile(coarse=cfg.coarse, weight_decay=cfg.weight_decay, lr=cfg.lr, backbone_lr=cfg.backbone_lr)
    ds, steps = train_data(cfg, train_reader, model.crop_size)
    steps_model = model.steps
    schedule = CurriculumSchedule.preset(cfg.curriculum, steps=steps_model, stage_epochs=cfg.stage_epochs, lr=cfg.lr,
                                         backbone_lr=cfg.backbone_lr, lr_schedule=cfg.lr_schedule,
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
               "eval": {"crops": cfg.eval_crops, "mode": cfg.eval_mode, "score": "last step"},
               "history": {k: [float(v) for v in vs] for k, vs in hist.history.items()},
               "curriculum": schedule.history, "precision": cfg.precision, "cpu": cpu,
               "sampler": {"kind": cfg.sampler, "bin_counts": getattr(train_reader, "bin_counts", None),
                           "bin_sources": getattr(train_reader, "bin_sources", None)}}
    if "test_srocc" in hist.history:  # the official code reports the best epoch (test-set model selection)
        results["best_epoch_test"] = {"srocc": max(hist.history["test_srocc"]), "plcc": max(hist.history["test_plcc"])}
    run_dir.save_results(results)
    m = ev["metrics"]
    print("test:", json.dumps({k: m[k] for k in ("n", "srocc", "plcc") if k in m}))
    print(f"run directory: {run_dir.path}")
    return 0
