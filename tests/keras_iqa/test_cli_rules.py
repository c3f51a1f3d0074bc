"""The command-line rules of `keras_iqa/commands/__init__.py`, checked on the parser exactly as `keras-iqa` builds it."""

import argparse
import subprocess
import sys

import pytest

from keras_iqa import cli

# flag -> its one meaning: (type, nargs, action kind, metavar family). None = argparse's default (a string / no metavar).
MEANINGS = {
    "--out": (None, None, "store", "DIR"),
    "--data": (None, None, ("store", "append"), "DIR"),
    "--split": (None, None, "store", ("COL", "COL[,COL]")),
    "--num-splits": (int, None, "store", "N"),
    "--levels": (None, None, "store", None),  # distortion levels 1..5 ('1-5', '1,3,5'); synthesize only
    "--gmad-levels": (int, None, "store", "N"),
    "--batch-size": (int, None, "store", ("N",)),
    "--precision": (None, None, "store", "{auto,fp32,bf16}"),
    "--distribute": (None, None, "store", "{auto,mirrored,multiworker}"),
    "--seed": (int, None, "store", ("N", None)),
    "--quiet": (None, 0, "store_true", None),
    "--verbose": (None, 0, "store_true", None),
    "--config": (None, None, "append", "FILE"),
    "--set": (None, None, "append", "KEY=VALUE"),
    "--held-out": (None, None, "append", ("TYPE", "TYPE[,TYPE]")),
    "--compare": (None, None, "append", "SOURCE"),
    "--crop-size": (int, None, "store", "PX"),
    "--model": (None, None, "store", None),
    "--name": (None, None, "store", None),
    "--csv": (None, None, "store", "FILE.csv"),
    "--md": (None, None, "store", "FILE.md"),
    "--scores": (None, None, "store", "FILE"),
    "--num-shards": (int, None, "store", None),
    "--runner": (None, None, "store", None),
    "--beam-arg": (None, None, "append", "ARG"),  # an alias of --pipeline-arg
    "--pipeline-arg": (None, None, "append", "ARG"),
    "--num-workers": (int, None, "store", None),
    "--train-ratio": (float, None, "store", None),
    "--epochs": (int, None, "store", "N"),
    "--overwrite": (None, 0, "store_true", None),  # replace what the command would refuse to write over (train, score, export)
}
# names that must not come back with another meaning
RETIRED = {"--report": "evaluate --out", "--splits": "--num-splits (prepare, synthesize) / --split (evaluate)"}
_KIND = {argparse._StoreAction: "store", argparse._AppendAction: "append", argparse._StoreTrueAction: "store_true",
         argparse._StoreFalseAction: "store_false", argparse._StoreConstAction: "store_const",
         argparse._CountAction: "count", argparse._HelpAction: "help", argparse._VersionAction: "version"}


def _walk(parser, path=("keras-iqa",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, (*path, name))


PARSERS = list(_walk(cli.build_parser()))
LEAVES = [(p, sp) for p, sp in PARSERS if sp.get_default("func") is not None]


def _optionals(parser):
    return [a for a in parser._actions if a.option_strings and not isinstance(a, (argparse._HelpAction,
                                                                                   argparse._VersionAction))]


def _ids(items):
    return [" ".join(p) for p, _ in items]


def test_every_command_is_walked():
    names = {" ".join(p[1:]) for p, _ in LEAVES}
    assert {"prepare", "synthesize", "evaluate", "report", "export", "score", "convert", "models", "demo",
            "train reqa", "train metaiqa", "train hcl"} <= names


@pytest.mark.parametrize("path,parser", PARSERS, ids=_ids(PARSERS))
def test_every_optional_has_help(path, parser):
    missing = [a.option_strings[-1] for a in _optionals(parser) if not a.help or a.help == argparse.SUPPRESS]
    assert not missing, f"{' '.join(path)}: no help text for {missing}"


def _meaning(action):
    kind = _KIND.get(type(action), type(action).__name__)
    nargs = action.nargs
    return action.type, nargs, kind, action.metavar


@pytest.mark.parametrize("path,parser", PARSERS, ids=_ids(PARSERS))
def test_one_meaning_per_flag(path, parser):
    where = " ".join(path)
    for action in _optionals(parser):
        for flag in action.option_strings:
            assert flag not in RETIRED, f"{where}: {flag} is retired, use {RETIRED[flag]}"
            if flag not in MEANINGS:
                continue
            typ, nargs, kind, metavar = MEANINGS[flag]
            got_type, got_nargs, got_kind, got_metavar = _meaning(action)
            assert got_type is typ, f"{where} {flag}: type {got_type} != {typ}"
            assert got_nargs == nargs, f"{where} {flag}: nargs {got_nargs!r} != {nargs!r}"
            kinds = kind if isinstance(kind, tuple) else (kind,)
            assert got_kind in kinds, f"{where} {flag}: action {got_kind} not in {kinds}"
            metavars = metavar if isinstance(metavar, tuple) else (metavar,)
            assert got_metavar in metavars, f"{where} {flag}: metavar {got_metavar!r} not in {metavars}"


@pytest.mark.parametrize("path,parser", LEAVES, ids=_ids(LEAVES))
def test_quiet_and_verbose_everywhere(path, parser):
    flags = {f for a in _optionals(parser) for f in a.option_strings}
    assert {"-q", "--quiet", "-v", "--verbose"} <= flags, " ".join(path)


TRAIN = [(p, sp) for p, sp in LEAVES if p[1] == "train"]


@pytest.mark.parametrize("path,parser", TRAIN, ids=_ids(TRAIN))
def test_training_commands_take_precision_and_distribute(path, parser):
    flags = {f for a in _optionals(parser) for f in a.option_strings}
    assert {"--precision", "--distribute"} <= flags, " ".join(path)
    by_flag = {a.option_strings[-1]: a for a in _optionals(parser)}
    assert tuple(by_flag["--precision"].choices) == ("auto", "fp32", "bf16")
    assert tuple(by_flag["--distribute"].choices) == ("auto", "mirrored", "multiworker")


@pytest.mark.parametrize("path,parser", PARSERS, ids=_ids(PARSERS))
def test_no_greedy_optional_before_positionals(path, parser):
    positionals = [a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
    greedy = [a.option_strings[-1] for a in _optionals(parser) if a.nargs in ("+", "*", argparse.REMAINDER)
              or (isinstance(a.nargs, int) and a.nargs > 1)]
    # without positionals a greedy optional can swallow nothing; with them it must not exist at all
    assert not (positionals and greedy), f"{' '.join(path)}: {greedy} can swallow the positionals"
    assert not greedy, f"{' '.join(path)}: use one value per flag (action='append'), not nargs: {greedy}"


def test_evaluate_data_then_source():
    args = cli.build_parser().parse_args(["evaluate", "--data", "records/x", "runs/y"])
    assert args.sources == ["runs/y"] and args.data == ["records/x"]
    args = cli.build_parser().parse_args(["evaluate", "--data", "a", "--data", "b", "--compare", "c", "r1", "r2",
                                          "--protocol", "cross", "--split", "split_00,split_01", "--batch-size", "2"])
    assert args.sources == ["r1", "r2"] and args.data == ["a", "b"] and args.compare == ["c"]
    assert args.split == "split_00,split_01" and args.batch_size == 2


def test_export_quantize_does_not_swallow_the_model():
    from keras_iqa.commands.export import _quantize_kinds

    args = cli.build_parser().parse_args(["export", "--format", "tflite", "--out", "o", "--quantize", "fp16,int8",
                                          "--quantize", "none", "runs/x"])
    assert args.model == "runs/x"
    assert _quantize_kinds(args.quantize) == ["fp16", "int8", "none"]
    assert _quantize_kinds(None) == ["none"] and _quantize_kinds(["all"]) == ["none", "fp16", "dynamic", "int8"]
    with pytest.raises(ValueError, match="choose from"):
        _quantize_kinds(["fp8"])


_PROBE = ("import runpy, sys; sys.argv = ['keras-iqa'] + sys.argv[1:]\n"
          "try:\n    runpy.run_module('keras_iqa.cli', run_name='__main__')\n"
          "except SystemExit:\n    pass\n"
          "heavy = sorted(m for m in ('tensorflow', 'keras', 'apache_beam', 'torch') if m in sys.modules)\n"
          "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n")


@pytest.mark.parametrize("argv", [["--help"], ["models"], ["train", "--help"], ["evaluate", "--help"]])
def test_help_and_models_do_not_import_tensorflow(argv):
    out = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120)
    heavy = [line for line in out.stderr.splitlines() if line.startswith("HEAVY=")]
    assert heavy == ["HEAVY="], out.stderr[-2000:]
    if argv == ["models"]:
        assert "reqa-tiny" in out.stdout and "score 0..1" in out.stdout


def test_card_index_matches_the_registry():
    from keras_iqa import registry

    index = {e.name: e for e in registry.card_index()}
    names = registry.list_models()  # imports the model families: the real cards
    assert sorted(index) == names
    built_in = [n for n in names if registry.card_family(registry.get_card(n)) in registry._FAMILY_MODULES]
    assert sorted(registry.CARD_INDEX) == built_in  # every built-in card listed, none stale
    for name in built_in:
        card, entry = registry.get_card(name), registry.CARD_INDEX[name]
        assert entry.description == card.description, name
        assert tuple(entry.score_range) == tuple(card.score_range), name
        assert entry.higher_better == card.higher_better, name
        assert entry.family == registry.card_family(card), name


def test_startup_lines_hidden_unless_verbose():
    code = ("import sys; from keras_iqa import cli; cli.quiet_startup(verbose='-v' in sys.argv)\n"
            "import tensorflow as tf\nprint('ours', file=sys.stderr)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stderr.strip() == "ours", quiet.stderr[-2000:]
    loud = subprocess.run([sys.executable, "-c", code, "-v"], capture_output=True, text=True, timeout=300, env=env)
    assert loud.returncode == 0 and "ours" in loud.stderr
