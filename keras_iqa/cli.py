"""`keras-iqa`: the command line. One module per subcommand in `keras_iqa/commands/` (each defines `register(subparsers)`).

Heavy imports (TensorFlow, Beam) happen inside the commands, so `keras-iqa --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ("prepare", "synthesize", "train", "evaluate", "report", "export", "score", "convert", "models", "demo")

EPILOG = """\
A typical session:
  keras-iqa prepare koniq10k --root /data/koniq10k --out records/      # official layout -> TFRecords + manifest + splits
  keras-iqa train reqa --data records/koniq10k --split split_00 --out runs/reqa-koniq
  keras-iqa evaluate runs/reqa-koniq --data records/koniq10k --protocol splits --report reports/reqa
  keras-iqa export runs/reqa-koniq --format savedmodel --out saved_models/reqa
  keras-iqa score saved_models/reqa/1 photos/ --recursive --out scores.csv
No data at hand? `keras-iqa demo` runs the whole chain on photos that ship with scikit-image.
Every subcommand has its own --help with examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-iqa",
        description="No-reference image quality assessment on TensorFlow/Keras: HCL (reconstruction), REQA, MetaIQA.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"keras_iqa.commands.{name}").register(sub)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return f"keras-iqa {version('keras-iqa')}"
    except Exception:
        return "keras-iqa (not installed)"


def main(argv=None) -> int:
    # TensorFlow's C++ info lines (oneDNN, CUDA probing) drown the progress output; TF_CPP_MIN_LOG_LEVEL=0 brings them back.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, NotImplementedError) as e:
        print(f"keras-iqa {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
