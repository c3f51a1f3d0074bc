"""`keras-iqa train metaiqa`: meta-train MetaIQA on distortion-specific tasks, fine-tune on a target set, evaluate.

Protocols: `meta` (synthetic -> authentic, Table 3: meta-train on every --meta-data set, fine-tune on --data's training split,
test on its test split), `lodo` (leave-one-distortion-out, Table 2: meta-train on the other N-1 types, test on every image
of the held-out type; `lodo_finetune=true` adds a reference-disjoint fine-tuning on it, not in the paper) and `baseline` (Table 4: plain Adam on all synthetic
images, then the same fine-tuning). A thin adapter (arguments -> config -> task) over `keras_iqa.tasks.metaiqa`,
which is also the Python API.
"""

from __future__ import annotations

from keras_iqa.commands import add_config_args, add_distribute_arg, add_precision_arg, formatter
from keras_iqa.commands.train import add_overwrite_arg, claim, inputs
from keras_iqa.tasks.metaiqa import PRESETS, TASK, MetaIQATrainConfig, set_test_contract  # noqa: F401 (re-exported)


def register(sub):
    p = sub.add_parser(
        "metaiqa",
        help="MetaIQA (bi-level meta-learning on distortion tasks, then fine-tuning)",
        description="Meta-train MetaIQA (Zhu et al., CVPR 2020) on distortion-specific tasks of synthetic datasets, fine-tune\n"
        "the prior on a target dataset and evaluate it. Algorithm 1: k tasks per meta-batch, S Adam steps on each task's\n"
        "support set then S on its query set (fresh Adam state per phase), theta <- theta - beta * mean(theta - theta_i).\n"
        "Writes a run directory: config.json, meta/ (history.csv, checkpoints, meta_state/ for resume, meta.weights.h5),\n"
        "finetune/ (history.csv, checkpoints), model.keras and results.json. Re-running with the same --out resumes.",
        epilog="Examples:\n"
        "  # Table 3, synthetic -> authentic: TID2013 + KADID-10k tasks, fine-tune and test on CLIVE split_00\n"
        "  keras-iqa train metaiqa --meta-data records/tid2013 --meta-data records/kadid10k \\\n"
        "      --data records/clive --out runs/meta\n"
        "  # Table 2, leave-one-distortion-out on TID2013 (one held-out type)\n"
        "  keras-iqa train metaiqa --protocol lodo --meta-data records/tid2013 --held-out 'gaussian blur' --out runs/lodo\n"
        "  # Table 4 baseline: plain Adam on all synthetic images, then the same fine-tuning\n"
        "  keras-iqa train metaiqa --protocol baseline --meta-data records/kadid10k --data records/koniq10k --out runs/base\n"
        "  # the released code's settings; generated data labelled by a full-reference metric\n"
        "  keras-iqa train metaiqa --preset official --meta-data records/kadis --meta-target pseudo --out runs/off\n"
        "  # smoke run\n"
        "  keras-iqa train metaiqa --model metaiqa-tiny --crop-size 32 --meta-data tiny/syn --data tiny/auth --out /tmp/r \\\n"
        "      --set meta_epochs=1 --set finetune_epochs=1\n",
        formatter_class=formatter(),
    )
    p.add_argument("--meta-data", action="append", default=[], metavar="DIR",
                   help="prepared synthetic dataset(s) with distortion types: one task per type (repeatable)")
    p.add_argument("--data", metavar="DIR", help="prepared target dataset: fine-tune on --split train, test on --split test")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (re-run to resume)")
    add_overwrite_arg(p)
    p.add_argument("--model", help="registry card (metaiqa | metaiqa-official | metaiqa-tiny)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="paper defaults or the released code's")
    p.add_argument("--protocol", choices=("meta", "lodo", "baseline"), help="meta (default) | lodo | baseline")
    p.add_argument("--meta-target", choices=("normalized", "pseudo", "mos"), help="meta-training target (default normalized)")
    p.add_argument("--split", metavar="COL", help="split column of the target's splits.csv (default split_00)")
    p.add_argument("--held-out", action="append", metavar="TYPE", help="lodo: held-out distortion name or type (repeatable)")
    p.add_argument("--crop-size", type=int, metavar="PX", help="training crop size (default: the card's, 224)"
                   "; refused before training when one step cannot fit in this machine's memory (about images per "
                   "step x PX² x 4 KB x the card's width, docs/security.md)")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per fine-tuning / baseline step")
    p.add_argument("--meta-epochs", type=int, metavar="N", help="meta-training epochs")
    p.add_argument("--finetune-epochs", type=int, metavar="N", help="fine-tuning epochs on --data")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default 0)")
    add_precision_arg(p, note=" (default fp32 here)")
    add_distribute_arg(p, note=": each meta-batch's tasks are spread over the replicas (adam_state=fresh), the "
                       "fine-tuning's batches as in Keras fit")
    add_config_args(p)
    p.set_defaults(func=run)


def _config(args) -> MetaIQATrainConfig:
    from keras_iqa.config import load_config

    flags = {"model": args.model, "protocol": args.protocol, "meta_target": args.meta_target, "split": args.split,
             "held_out": args.held_out, "crop_size": args.crop_size, "batch_size": args.batch_size,
             "meta_epochs": args.meta_epochs, "finetune_epochs": args.finetune_epochs, "seed": args.seed,
             "precision": args.precision, "distribute": args.distribute}
    overrides = {**PRESETS[args.preset], **{k: v for k, v in flags.items() if v is not None}}
    return TASK.validate(load_config(MetaIQATrainConfig, files=args.config, sets=args.set, overrides=overrides))


def run(args) -> int:
    from keras_iqa.config import to_dict

    cfg = _config(args)
    doc = {**to_dict(cfg), "meta_data": inputs(*args.meta_data), "data": inputs(args.data)[0]}
    with claim(args, "train metaiqa", doc):
        TASK.train(cfg, meta_data=args.meta_data, data=args.data, out=args.out, verbose=0 if args.quiet else 1)
    return 0
