"""`keras-iqa train METHOD`: one sub-command per training task (`keras_iqa.tasks.TASKS`), each an adapter module
`keras_iqa.commands.train_<method>` (arguments -> config -> task)."""

import importlib

from keras_iqa.commands import formatter
from keras_iqa.tasks import task_names

METHODS = task_names()  # reqa, metaiqa, hcl: the task registry's order


def register(sub):
    p = sub.add_parser(
        "train",
        help=f"train a model ({' | '.join(METHODS)})",
        description="Train one of the methods. Each writes a run directory (config.json, history.csv, checkpoints/, "
        "model.keras, results.json) and resumes when re-run with the same --out.",
        epilog="Examples:\n  keras-iqa train reqa --data records/koniq10k --split split_00 --out runs/reqa\n"
        "  keras-iqa train metaiqa --meta-data records/kadid10k --meta-data records/tid2013 --data records/clive --out runs/meta\n"
        "  keras-iqa train hcl --stages all --pairs records/pairs --synthetic records/kadid10k --data records/clive --out runs/hcl",
        formatter_class=formatter(),
    )
    methods = p.add_subparsers(dest="method", metavar="METHOD")
    for m in METHODS:
        importlib.import_module(f"keras_iqa.commands.train_{m}").register(methods)
