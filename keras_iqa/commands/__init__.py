"""Subcommands of `keras-iqa`; each module defines `register(subparsers)` and keeps heavy imports inside its `run`.

One meaning per flag name, in every subcommand (tests/keras_iqa/test_cli_rules.py walks the parser and enforces it):

  --out DIR            the folder the command writes into (a run directory for `train`, the report folder for `evaluate`,
                       the dataset parent for `prepare` / `synthesize`, the model root for `export`). Commands whose whole
                       output is one file name it after its format instead: `score --scores FILE.csv|.jsonl`,
                       `report --md FILE.md --csv FILE.csv`, `synthesize --preview FILE.png`.
  --data DIR           one prepared dataset (TFRecords + manifest + splits.csv) per flag; repeat the flag where several
                       are allowed (`evaluate --protocol cross`, `train hcl --stage synthetic`).
  --split COL[,COL]    split column(s) of splits.csv (`train ... --split split_03`, `evaluate --split split_00,split_01`).
  --num-splits N       how many random split columns to write (`prepare`, `synthesize`).
  --levels SPEC        distortion levels 1..5 (`synthesize`); gMAD's defender levels are `evaluate --gmad-levels N`.
  --batch-size N       IMAGES per step or forward pass everywhere (`evaluate` multiplies by the test crops per image).
  --precision P        auto | fp32 | bf16 (Keras dtype policy; auto = mixed_bfloat16 on CPUs with native bf16), every
                       `train` method.
  --distribute S       auto | mirrored | multiworker (tf.distribute strategy), every `train` method.
  --seed N             the command's random seed.
  --overwrite          replace what the command would otherwise refuse to write over: a `train` --out folder that is not a
                       resumable run of that method and config, a `score --scores` file keras-iqa did not write, an
                       `export` version folder.
  --pipeline-arg=--F=V one Apache Beam pipeline option (repeatable; `--beam-arg` is an alias), `prepare` / `synthesize`.
  --trust-model        load a SavedModel or .tflite that holds ops a keras-iqa scorer does not use (`score`; only for a
                       model you made or verified, docs/security.md).
  -q, --quiet          no progress bars or per-step lines: results, warnings and errors only (every subcommand).
  -v, --verbose        also what TensorFlow / Keras / TFLite / absl / Beam print themselves: start-up and info lines, their
                       own warnings (hidden by default; keras-iqa's warnings always show, once; every subcommand).

Flags that take several values take one per flag (`action="append"`, "repeatable" in the help), never `nargs="+"`, so a
flag can never swallow the positionals after it (`keras-iqa evaluate --data records/x runs/y`).
"""

import argparse
import functools

PRECISIONS = ("auto", "fp32", "bf16")
STRATEGIES = ("auto", "mirrored", "multiworker")


def formatter():
    return argparse.RawDescriptionHelpFormatter


def add_config_args(p) -> None:
    """--config FILE (repeatable YAML/JSON) and --set key=value (repeatable) as every training/eval command takes them."""
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML/JSON override file (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, dotted keys for sections, e.g. --set epochs=40 (repeatable)")


def add_output_args(p) -> None:
    """-q/--quiet and -v/--verbose; `keras_iqa.cli.build_parser` adds them to every subcommand, whose command then runs as
    `keras-iqa` (`keras_iqa.caller.cli_session`: each warning once, library chatter only with -v, hints in flag spelling)."""
    func = p.get_default("func")
    if func is not None and not isinstance(func, functools.partial):
        p.set_defaults(func=functools.partial(_run_as_cli, func, p))
    g = p.add_argument_group("output")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars or per-step lines: results, warnings and errors only")
    g.add_argument("-v", "--verbose", action="store_true",
                   help="also show what TensorFlow, Keras, TFLite, absl and Beam print themselves (start-up and info "
                        "lines, their own warnings; hidden by default)")


def _run_as_cli(func, parser, args):
    """`func(args)` inside `cli_session`: the parser's flags and (`train METHOD`) config keys spell the error hints."""
    from keras_iqa.caller import cli_session
    from keras_iqa.reference_data import TRAIN_CONFIGS

    path = parser.prog.split()[1:]  # "keras-iqa train reqa" -> ["train", "reqa"]
    flags = {a.dest: max(a.option_strings, key=len) for a in parser._actions if a.option_strings and a.dest != "help"}
    switches = {a.dest for a in parser._actions if a.option_strings and a.nargs == 0}
    method = TRAIN_CONFIGS.get(path[1], {}) if len(path) == 2 and path[0] == "train" else {}
    with cli_session(bool(getattr(args, "verbose", False)), flags, [r["key"] for r in method.get("keys", ())], switches):
        return func(args)


def add_precision_arg(p, default=None, note: str = "") -> None:
    p.add_argument("--precision", choices=PRECISIONS, default=default, metavar="{auto,fp32,bf16}",
                   help="dtype policy: auto (mixed_bfloat16 on CPUs with native bf16, else fp32; training on a GPU: "
                        "mixed_bfloat16 from compute capability 8.0, mixed_float16 with loss scaling before), "
                        "fp32, or bf16 (mixed_bfloat16)" + note)


def add_distribute_arg(p, note: str = "") -> None:
    p.add_argument("--distribute", choices=STRATEGIES, default=None, metavar="{auto,mirrored,multiworker}",
                   help="tf.distribute strategy: auto (the default, one device), mirrored (all local GPUs), multiworker "
                        "(the hosts of TF_CONFIG)" + note)
