"""The generated references: `docs/cli.md` (every subcommand, flag and training config key, from the parsers and the tasks'
config dataclasses) and `keras_iqa/reference_data.py` (the built-in cards' summaries and the training config keys, so
`keras-iqa models NAME` and `keras-iqa train METHOD --help` need no TensorFlow).

    python -m keras_iqa.cli_reference > docs/cli.md
    python -m keras_iqa.cli_reference --data > keras_iqa/reference_data.py

tests/keras_iqa/test_cli_reference.py fails, with these commands, when either file differs from what this module generates.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import pprint
import re
import sys

from keras_iqa.caller import cli_value

DOCS_COMMAND = "python -m keras_iqa.cli_reference > docs/cli.md"
DATA_COMMAND = "python -m keras_iqa.cli_reference --data > keras_iqa/reference_data.py"

INTRO = """\
# Command-line reference

Every `keras-iqa` subcommand, flag and training config key, with its default. This page is generated from the command's
own parsers and the training config dataclasses (`{docs}`), so it matches `keras-iqa COMMAND --help` of this version.

Conventions, in every subcommand:

- `-q/--quiet` hides progress bars and per-step lines; `-v/--verbose` also shows what TensorFlow, Keras, TFLite, absl and
  Beam print themselves (start-up lines, their own warnings such as Keras's "`shuffle=True` was passed, but will be ignored"
  or TFLite's converter lines). Without `-v` those are hidden; keras-iqa's own warnings are always shown, once each, as
  `warning: ...` lines on stderr.
- Errors are one line, `keras-iqa COMMAND: error: ...`, exit status 2, and name the fix in the command line's spelling
  (`--set backbone_weights=null`, `--meta-target pseudo`); the same errors raised through the Python API name the Python
  keyword instead (`backbone_weights=None`, `meta_target='pseudo'`).
- Training settings without a flag of their own are config keys: `--set KEY=VALUE` (repeatable; values are YAML:
  `--set milestones=[10,20]`, `--set backbone_weights=null`; nested sections with dots, `--set finetune.epochs=5`) or
  `--config FILE.yaml` (a mapping of the same keys). The keys of each method are listed under
  [Training config keys](#training-config-keys); `keras-iqa train METHOD --help` lists them too. A flag and a key of the
  same name are the same setting; files are applied first, then flags, then `--set`.
- `keras-iqa models NAME` prints a model card (builder, default config, input contract, score range) without loading
  TensorFlow.
"""


# ---------------------------------------------------------------------------------------------------- config keys


def _field_notes(cls) -> dict:
    """Field name -> the comment at the end of its line in the class source (and the comment-only lines under it)."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    notes, last = _docstring_args(cls), None
    for line in lines:
        m = re.match(r"^\s+(\w+)\s*:[^#]*?(?:#\s*(.*))?$", line)
        if m and m.group(1) in {f.name for f in dataclasses.fields(cls)}:
            last = m.group(1)
            notes[last] = (m.group(2) or "").strip() or notes.get(last, "")
            continue
        m = re.match(r"^\s+#\s*(.*)$", line)
        if m and last is not None and notes.get(last):
            notes[last] += " " + m.group(1).strip()
            continue
        last = None
    return notes


def _docstring_args(cls) -> dict:
    """Field name -> its text in the class docstring's `Args:` section (`a, b: text` gives both the text)."""
    doc = inspect.getdoc(cls) or ""
    if "Args:" not in doc:
        return {}
    notes, names = {}, []
    for line in doc.split("Args:", 1)[1].splitlines():
        m = re.match(r"^    ([\w, ]+):\s+(.*)$", line)
        if m:
            names = [n.strip() for n in m.group(1).split(",")]
            for n in names:
                notes[n] = m.group(2).strip()
        elif line.startswith("      ") and names:
            for n in names:
                notes[n] += " " + line.strip()
        elif line.strip():
            break
    return notes


def config_rows(cfg, prefix: str = "") -> list:
    """[{key, type, default, note}] of a (nested) config dataclass instance; sections become dotted keys."""
    notes = _field_notes(type(cfg))
    rows = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(config_rows(value, prefix + f.name + "."))
            continue
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        rows.append({"key": prefix + f.name, "type": kind.replace("typing.", ""), "default": cli_value(value),
                     "note": notes.get(f.name, "")})
    return rows


def train_configs() -> dict:
    """Method -> {"config": class name, "keys": config_rows(...)} of every training task (imports the tasks: TensorFlow)."""
    from keras_iqa.tasks import get_task, task_names

    out = {}
    for name in task_names():
        cls = get_task(name).config_cls
        out[name] = {"config": cls.__name__, "keys": config_rows(cls())}
    return out


def card_summaries() -> dict:
    """Card name -> `ModelCard.summary()` (JSON types) of every built-in card (imports the model families: TensorFlow)."""
    from keras_iqa import registry

    return {name: json.loads(json.dumps(registry.get_card(name).summary(), default=str)) for name in registry.CARD_INDEX}


def data_module() -> str:
    """The source of `keras_iqa/reference_data.py`."""
    fmt = lambda v: pprint.pformat(v, width=120, sort_dicts=False)  # noqa: E731
    return (f'"""Generated by `{DATA_COMMAND}`: do not edit.\n\n'
            "The built-in cards' summaries (what `keras-iqa models NAME` prints) and every training config key (what\n"
            "`keras-iqa train METHOD --help` lists), readable without importing TensorFlow; tests/keras_iqa/\n"
            'test_cli_reference.py checks them against the registry and the tasks."""\n\n'
            f"CARDS = {fmt(card_summaries())}\n\nTRAIN_CONFIGS = {fmt(train_configs())}\n")


def config_epilog(method: str) -> str:
    """The config-key listing `keras-iqa train METHOD --help` ends with (from keras_iqa.reference_data: no TensorFlow)."""
    from keras_iqa.reference_data import TRAIN_CONFIGS

    if method not in TRAIN_CONFIGS:
        return ""
    rows = TRAIN_CONFIGS[method]["keys"]
    width = max(len(r["key"]) for r in rows) + 2
    lines = [f"Config keys (--set KEY=VALUE or --config FILE; meanings: docs/cli.md), with their defaults:"]
    lines += [f"  {r['key']:{width}s}{r['default']}" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- markdown


def _cell(text) -> str:
    text = " ".join(str(text).split())
    return text.replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")


def _code(text) -> str:
    return f"`{text}`" if text not in ("", None) else ""


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _default(action) -> str:
    if action.required:
        return "required"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "off" if isinstance(action, argparse._StoreTrueAction) else "on"
    if action.default in (None, [], argparse.SUPPRESS) or isinstance(action, argparse._HelpAction):
        return ""
    return _code(action.default)


def _flags_table(parser) -> list:
    """A markdown table of the parser's arguments (none: no table)."""
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._SubParsersAction, argparse._HelpAction, argparse._VersionAction)):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        choices = "{" + ",".join(map(str, action.choices)) + "}" if action.choices else None
        metavar = action.metavar or choices or (action.dest.upper() if action.option_strings else action.dest)
        if isinstance(metavar, tuple):
            metavar = " ".join(metavar)
        takes = action.nargs != 0
        name = ", ".join(action.option_strings) + (f" {metavar}" if takes else "") if action.option_strings else metavar
        text = (action.help or "") % {"default": action.default, "prog": parser.prog} if action.help else ""
        rows.append(f"| {_code(name)} | {_default(action)} | {_cell(text)} |")
    return ["| argument | default | meaning |", "|---|---|---|", *rows, ""] if rows else []


def _text_block(text: str) -> list:
    return ["```text", *text.rstrip().splitlines(), "```"] if text and text.strip() else []


def _command_section(parser, path: tuple, level: int) -> list:
    title = "keras-iqa " + " ".join(path)
    out = [f"{'#' * level} {title}", ""]
    out += ["```text", parser.format_usage().strip(), "```", ""]
    epilog = parser.epilog or ""
    config_part = epilog.find("Config keys (--set KEY=VALUE")
    if config_part >= 0:  # the config keys have their own table below
        epilog = epilog[:config_part]
    block = _text_block("\n\n".join(t.strip("\n") for t in (parser.description or "", epilog) if t.strip()))
    out += block + ([""] if block else [])
    sub = _subparsers(parser)
    if parser.get_default("func") is not None or sub is None:
        out += _flags_table(parser)
    if sub is not None:
        for name, child in sub.choices.items():
            out += _command_section(child, (*path, name), min(level + 1, 4))
    return out


def _config_section(configs: dict) -> list:
    out = ["## Training config keys", "",
           "Set with `--set KEY=VALUE` (repeatable) or `--config FILE` on `keras-iqa train METHOD`; the default is what a "
           "run uses when neither a file, a flag nor `--set` gives the key. `auto` defaults are resolved when the run starts "
           "(the notes say how).", ""]
    for method, doc in configs.items():
        out += [f"### train {method} ({doc['config']})", "", "| key | type | default | note |", "|---|---|---|---|"]
        out += [f"| {_code(r['key'])} | {_cell(r['type'])} | {_code(r['default'])} | {_cell(r['note'])} |"
                for r in doc["keys"]]
        out.append("")
    return out


def markdown() -> str:
    """The text of docs/cli.md."""
    from keras_iqa.cli import build_parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "120"  # argparse wraps usage lines to the terminal: a fixed width, the same text everywhere
    try:
        parser = build_parser()
        return _markdown(parser)
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns


def _markdown(parser) -> str:
    out = [INTRO.format(docs=DOCS_COMMAND), "## keras-iqa", "", "```text", parser.format_usage().strip(), "```", ""]
    out += _text_block("\n\n".join(t for t in (parser.description, parser.epilog) if t)) + [""]
    out += _flags_table(parser)
    sub = _subparsers(parser)
    for name, child in sub.choices.items():
        out += _command_section(child, (name,), 2)
    out += _config_section(train_configs())
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m keras_iqa.cli_reference", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="store_true", help="print keras_iqa/reference_data.py instead of docs/cli.md")
    args = p.parse_args(argv)
    sys.stdout.write(data_module() if args.data else markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
