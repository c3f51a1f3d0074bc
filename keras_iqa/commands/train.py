"""`keras-iqa train METHOD`: one sub-command per model family of the registry (`keras_iqa.registry.FAMILIES`): the
family's own adapter module when it names one (`keras_iqa.commands.train_<method>`: its flags -> config -> task), else
the generic adapter below, built from the family's task (`--data`, `--out`, `--model`, `--config`, `--set` -> config ->
`TASK.train(cfg, data, out)`)."""

import dataclasses
import importlib
import json
import os

from keras_iqa import registry
from keras_iqa.cli_reference import config_epilog
from keras_iqa.commands import add_config_args, formatter
from keras_iqa.tasks import task_names, get_task
from keras_iqa.training.out_dir import claim_output

METHODS = task_names()  # reqa, metaiqa, hcl: the registry's order


def register(sub):
    p = sub.add_parser(
        "train",
        help=f"train a model ({' | '.join(task_names())})",
        description="Train one of the methods. Each writes a run directory (config.json, history.csv, checkpoints/, "
        "model.keras, results.json) and resumes when re-run with the same --out and config. An --out folder that holds "
        "anything else (files keras-iqa did not write, another method's run, another config) is refused unless "
        "--overwrite; two runs on one --out refuse each other.",
        epilog="Examples:\n  keras-iqa train reqa --data records/koniq10k --split split_00 --out runs/reqa\n"
        "  keras-iqa train metaiqa --meta-data records/kadid10k --meta-data records/tid2013 --data records/clive --out runs/meta\n"
        "  keras-iqa train hcl --stages all --pairs records/pairs --synthetic records/kadid10k --data records/clive --out runs/hcl",
        formatter_class=formatter(),
    )
    methods = p.add_subparsers(dest="method", metavar="METHOD")
    for family in registry.FAMILIES.values():
        if family.command:
            importlib.import_module(family.command).register(methods)
        elif family.task:
            register_generic(methods, family.name)
    for name, method in methods.choices.items():  # --help ends with every config key and its default (no TensorFlow)
        method.epilog = "\n\n".join(t.rstrip("\n") for t in (method.epilog, config_epilog(name)) if t)


def register_generic(methods, name: str):
    """`keras-iqa train NAME` for a task without a command module: --data (repeatable), --out, --model, --config, --set."""
    task = get_task(name)
    text = task.description or f"train {name}"
    p = methods.add_parser(name, help=text.splitlines()[0], description=text, formatter_class=formatter(),
                           epilog=f"Example:\n  keras-iqa train {name} --data records/clive --out runs/{name} --set epochs=10\n")
    p.add_argument("--data", required=True, action="append", metavar="DIR",
                   help="prepared dataset (keras-iqa prepare ...); repeatable where the task takes several")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory")
    p.add_argument("--model", help="registry card (keras-iqa models)")
    add_overwrite_arg(p)
    add_config_args(p)
    p.set_defaults(func=lambda args: run_generic(task, args))
    return p


def add_overwrite_arg(p) -> None:
    """--overwrite: every `train` method."""
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an --out folder that is not a resumable run of this method and config: removes what "
                        "a keras-iqa run writes there (config, history, checkpoints/, backup/, model, results, sub-runs) "
                        "and keeps any other file (docs/security.md)")


def inputs(*paths):
    """Input paths as recorded in the run's claim (absolute for local paths, so a re-run from another folder matches)."""
    def one(p):
        return p if p is None or "://" in str(p) else os.path.abspath(str(p))

    return [one(p) for p in paths]


def claim(args, kind: str, config: dict):
    """`keras_iqa.training.out_dir.claim_output` of the command's --out (checked, locked, marked) for `config`."""
    return claim_output(args.out, kind, config, overwrite=bool(getattr(args, "overwrite", False)))


def run_generic(task, args) -> int:
    """Arguments -> the task's config (`--config` files, then `--model`, then `--set`) -> `task.train(cfg, data, out)`."""
    from keras_iqa.config import load_config, to_dict

    fields = {f.name for f in dataclasses.fields(task.config_cls)}
    overrides = {"model": args.model} if args.model and "model" in fields else {}
    cfg = load_config(task.config_cls, files=args.config, sets=args.set, overrides=overrides)
    data = args.data[0] if len(args.data) == 1 else list(args.data)
    with claim(args, f"train {task.name}", {**to_dict(cfg), "data": inputs(*args.data)}):
        results = task.train(cfg, data, args.out)
    print(json.dumps(results, default=str, indent=1, sort_keys=True))
    return 0
