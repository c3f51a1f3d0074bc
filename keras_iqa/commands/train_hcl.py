"""`keras-iqa train hcl`: HCL (reconstruction), three curricula, one stage at a time or all in sequence (arguments -> config ->
`keras_iqa.tasks.hcl.train`)."""

import dataclasses
import json

from keras_iqa.commands import add_config_args, add_distribute_arg, add_precision_arg, formatter
from keras_iqa.commands.train import add_overwrite_arg, claim, inputs
from keras_iqa.registry import get_card
from keras_iqa.training.memory import check_step_memory

DESCRIPTION = """\
Train HCL (reconstruction) (Wang et al., IJCV 2023; the paper body is unavailable, so this follows the design in README, HCL).

  restoration  curriculum 1: ResNet-50 + U-Net restores distorted crops (pair records, --pairs); reports PSNR/SSIM of the
               restored vs the distorted input on held-out pairs (results.json: holdout.beats_identity)
  synthetic    curriculum 2: K subnetworks + CQAC on K synthetic IQA datasets (--data, repeatable), --init = stage-1 run;
               writes the K x K head-correlation matrix per epoch (head_correlation.json/.csv)
  finetune     curriculum 3: the deployable HCL model fine-tuned on an authentic dataset (--data), --init = stage-2 run;
               evaluated with 25 random crops per test image (results.json, predictions.csv)
  --stages all the three in sequence in OUT/1-restoration, OUT/2-synthetic, OUT/3-finetune (synthetic sets: --synthetic)

Config keys (--set): model.* (architecture, e.g. model.decoder_block=inception), restoration.*, synthetic.*, finetune.*
(epochs, batch_size, lr, ...), ablation.skip_restoration | skip_synthetic | cqac | single_head, seed, distribute.
A re-run with the same --out resumes from the last finished epoch."""

EPILOG = """\
Examples:
  keras-iqa train hcl --stage restoration --pairs records/kadis-pairs --out runs/hcl/1
  keras-iqa train hcl --stage synthetic --data records/kadid10k --data records/tid2013 --init runs/hcl/1 --out runs/hcl/2
  keras-iqa train hcl --stage finetune --data records/koniq10k --init runs/hcl/2 --out runs/hcl/3
  keras-iqa train hcl --stages all --pairs records/pairs --synthetic records/kadid10k --synthetic records/live \\
      --data records/clive --out runs/hcl
  # ablations: no curriculum 2; CQAC off; K = 1
  keras-iqa train hcl --stages all --pairs P --data D --out runs/no-c2 --set ablation.skip_synthetic=true
  keras-iqa train hcl --stages all --pairs P --synthetic S1 --synthetic S2 --data D --out runs/no-cqac --set ablation.cqac=false
  # curriculum 1 with our options: residual head, full-resolution input skip, per-image PSNR loss (README, HCL)
  keras-iqa train hcl --stage restoration --pairs P --out runs/hcl/1 --set model.restoration_output=residual \\
      --set model.restoration_input_skip=true --set restoration.pixel_loss=psnr
  # a tiny smoke run
  keras-iqa train hcl --model hcl-tiny --stages all --pairs P --synthetic S --data D --out /tmp/hcl \\
      --set restoration.epochs=1 --set synthetic.epochs=1 --set finetune.epochs=1"""


def register(sub):
    p = sub.add_parser("hcl", help="HCL (reconstruction): three curricula", description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=formatter())
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--stage", choices=("restoration", "synthetic", "finetune"), help="run one curriculum")
    g.add_argument("--stages", choices=("all",), help="run the three curricula in sequence (minus ablated ones)")
    p.add_argument("--pairs", metavar="DIR", help="prepared pair records (distorted + reference) for curriculum 1")
    p.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="--stage synthetic: a synthetic IQA dataset (repeatable, one subnetwork each); "
                        "--stage finetune / --stages all: the authentic target dataset")
    p.add_argument("--synthetic", action="append", default=[], metavar="DIR",
                   help="synthetic IQA dataset for curriculum 2 with --stages all (repeatable)")
    p.add_argument("--init", metavar="RUN", help="run directory (or .keras file) of the previous stage")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory to write (resumes if it exists)")
    add_overwrite_arg(p)
    p.add_argument("--model", default="hcl", choices=("hcl", "hcl-tiny"), help="architecture card (default: hcl)")
    p.add_argument("--split", metavar="COL", help="split column of splits.csv for every stage (default split_00)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default 0)")
    add_distribute_arg(p, note=": every curriculum builds, compiles and fits its model under it")
    add_precision_arg(p, default="auto")
    add_config_args(p)
    p.set_defaults(func=run)


def _check_args(args):
    if args.stages == "all":
        if len(args.data) > 1:
            raise SystemExit("--stages all takes ONE authentic --data DIR; give the synthetic datasets with --synthetic")
    elif args.stage == "restoration" and not args.pairs:
        raise SystemExit("--stage restoration needs --pairs DIR (prepared pair records)")
    elif args.stage == "synthetic" and not (args.synthetic or args.data):
        raise SystemExit("--stage synthetic needs at least one --data DIR (a prepared synthetic IQA dataset)")
    elif args.stage == "finetune" and len(args.data) != 1:
        raise SystemExit(f"--stage finetune needs exactly one --data DIR (the authentic dataset), got {len(args.data)}")


def run(args):
    _check_args(args)  # before anything global changes
    from keras_iqa.training.cpu import configure_cpu

    applied = configure_cpu(args.precision)  # first: it sets TF options that only act before TensorFlow starts
    from keras_iqa.config import load_config, to_dict
    from keras_iqa.tasks import hcl as T

    cfg = T.HCLTrainConfig(model=get_card(args.model).config())
    over = {}
    if args.split:
        over.update({"restoration.split": args.split, "synthetic.split": args.split, "finetune.split": args.split})
    if args.seed is not None:
        over["seed"] = args.seed
    if args.distribute:
        over["distribute"] = args.distribute
    cfg = load_config(cfg, files=args.config, sets=args.set, overrides=over)
    images, stage_key = max((getattr(cfg, k).batch_size, k) for k in ("restoration", "synthetic", "finetune"))
    check_step_memory(cfg.model.crop_size, images, getattr(cfg.model, "width", 1.0), key="model.crop_size",
                      batch_key=f"{stage_key}.batch_size")
    stage = args.stages or args.stage
    doc = {**to_dict(cfg), "stage": stage, "pairs": inputs(args.pairs)[0], "data": inputs(*args.data),
           "synthetic": inputs(*args.synthetic), "init": inputs(args.init)[0]}
    with claim(args, "train hcl", doc):
        res = T.train(cfg, args.out, stage=stage, pairs=args.pairs, data=args.data, synthetic=args.synthetic,
                      init=args.init)
    summary = T.stage_summary(stage, res)
    print(json.dumps({"out": args.out, "model": "HCL (reconstruction)", "summary": summary,
                      "ablation": dataclasses.asdict(cfg.ablation), "cpu": applied}, indent=2, default=str))
    return 0
