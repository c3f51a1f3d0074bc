"""`keras-iqa train reqa`: train REQA (coarse-to-fine, range effect) on a prepared dataset and evaluate it.

Python equivalent:
    model = keras_iqa.create_model("reqa", backbone_weights="imagenet")
    model.compile(coarse="paper", weight_decay=5e-4, lr=2e-4, backbone_lr=2e-5)
    model.test_crops, model.crop_policy, model.test_resize = 25, "random", None  # the test-time contract, before training
    train = reader.reqa_microbatches(3)                              # reader target "normalized100": scores on 0-100
    model.fit(train, steps_per_epoch=..., epochs=40, callbacks=[CurriculumSchedule.preset("paper")])
or, with the run directory, resume and results.json: `keras_iqa.tasks.reqa.train(REQATrainConfig(...), data, out)`.
"""

from __future__ import annotations

import json

from keras_iqa.commands import add_config_args, add_distribute_arg, add_precision_arg, formatter
from keras_iqa.commands.train import add_overwrite_arg, claim, inputs
from keras_iqa.tasks import reqa
from keras_iqa.tasks.reqa import (
    PRESETS, TARGET, REQATrainConfig, build_model, check_replica_batches, set_test_contract, train_data, validate
)


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
    add_overwrite_arg(p)
    p.add_argument("--split", metavar="COL", help="split column of splits.csv (default split_00), or 'all': the paper's 20 train-test "
                   "iterations (split_00 .. split_19, `--set repetitions=N`), one run directory each, median in results.json")
    p.add_argument("--model", help="registry card (reqa | reqa-official | reqa-tiny)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="paper protocol (default) or the released code's")
    add_precision_arg(p)
    add_distribute_arg(p, note=": the model is built, compiled and fit under it; each replica trains on whole "
                       "micro-batches of the global batch (micro_batches a multiple of the replicas)")
    p.add_argument("--epochs", type=int, metavar="N", help="training epochs (default 40; official preset 30)")
    p.add_argument("--crop-size", type=int, metavar="PX", help="training crop size (default: the card's, 224; reqa-tiny 64)"
                   "; refused before training when one step cannot fit in this machine's memory (about images per "
                   "step x PX² x 4 KB x the card's width, docs/security.md)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default 0)")
    add_config_args(p)
    p.set_defaults(func=run)


def _config(args) -> REQATrainConfig:
    from keras_iqa.config import load_config

    flags = {"model": args.model, "split": args.split, "precision": args.precision, "distribute": args.distribute,
             "epochs": args.epochs, "crop_size": args.crop_size, "seed": args.seed}
    overrides = {**PRESETS[args.preset], **{k: v for k, v in flags.items() if v is not None}}
    return validate(load_config(REQATrainConfig, files=args.config, sets=args.set, overrides=overrides))


def run(args) -> int:
    """One split (`--split split_03`), or `--split all`: the paper's protocol, `repetitions` (20) train-test iterations on
    split_00 .. split_{repetitions-1}, one run directory each under --out, and the median over them in --out/results.json."""
    from keras_iqa.config import to_dict

    cfg = _config(args)
    with claim(args, "train reqa", {**to_dict(cfg), "preset": args.preset, "data": inputs(args.data)[0]}):
        if cfg.split == "all":
            doc = reqa.train_repetitions(cfg, args.data, args.out, protocol=args.preset, quiet=args.quiet)
            print("median over splits:",
                  json.dumps({k: doc["summary"].get(k, {}).get("median") for k in ("srocc", "plcc")}))
            return 0
        results = reqa.train(cfg, args.data, args.out, protocol=args.preset, quiet=args.quiet)
    print(reqa.summary_line(results))
    print(f"run directory: {results['run_dir']}")
    return 0
