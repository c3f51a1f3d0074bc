"""Subcommands of `keras-iqa`; each module defines `register(subparsers)` and keeps heavy imports inside its `run`."""

import argparse


def formatter():
    return argparse.RawDescriptionHelpFormatter


def add_config_args(p) -> None:
    """--config FILE (repeatable YAML/JSON) and --set key=value (repeatable) as every training/eval command takes them."""
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML/JSON override file (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, dotted keys for sections, e.g. --set epochs=40 (repeatable)")
