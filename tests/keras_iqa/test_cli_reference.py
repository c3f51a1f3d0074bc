"""The generated references stay in step with the code: docs/cli.md (every subcommand, flag and config key),
keras_iqa/reference_data.py (card summaries, config keys), `train METHOD --help`'s key listing, and `keras-iqa models NAME`
printing a card without TensorFlow."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from keras_iqa import cli, cli_reference

ROOT = Path(__file__).resolve().parents[2]


def test_docs_cli_md_is_the_generated_reference():
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    generated = cli_reference.markdown()
    assert committed == generated, f"docs/cli.md is stale: regenerate it with `{cli_reference.DOCS_COMMAND}`"


def test_reference_data_matches_the_registry_and_the_tasks():
    from keras_iqa import reference_data

    assert reference_data.CARDS == cli_reference.card_summaries(), \
        f"keras_iqa/reference_data.py is stale: regenerate it with `{cli_reference.DATA_COMMAND}`"
    assert reference_data.TRAIN_CONFIGS == cli_reference.train_configs(), \
        f"keras_iqa/reference_data.py is stale: regenerate it with `{cli_reference.DATA_COMMAND}`"


def test_cli_md_lists_every_subcommand_flag_and_config_key():
    text = cli_reference.markdown()
    for leaf in cli.leaf_parsers(cli.build_parser()):
        assert f"## {leaf.prog}\n" in text, leaf.prog
        for action in leaf._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in text or f", {flag}" in text, (leaf.prog, flag)
    for method, doc in cli_reference.train_configs().items():
        for row in doc["keys"]:
            assert f"| `{row['key']}` | " in text and f"| `{row['default']}` |" in text, (method, row)


@pytest.mark.parametrize("method", ["reqa", "metaiqa", "hcl"])
def test_train_help_lists_every_config_key_with_its_default(method, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", method, "--help"])
    out = capsys.readouterr().out
    lines = out.split("Config keys (--set KEY=VALUE")[1].splitlines()[1:]
    listed = dict(line.split(None, 1) if len(line.split(None, 1)) == 2 else (line.strip(), "") for line in lines)
    expected = {r["key"]: r["default"] for r in cli_reference.train_configs()[method]["keys"]}
    assert listed == expected


_PROBE = ("import runpy, sys; sys.argv = ['keras-iqa'] + sys.argv[1:]\n"
          "try:\n    runpy.run_module('keras_iqa.cli', run_name='__main__')\n"
          "except SystemExit:\n    pass\n"
          "print('HEAVY=' + ','.join(m for m in ('tensorflow', 'keras') if m in sys.modules), file=sys.stderr)\n")


def test_models_name_prints_the_card_with_its_builder_without_tensorflow():
    out = subprocess.run([sys.executable, "-c", _PROBE, "models", "reqa-tiny"], capture_output=True, text=True, timeout=120)
    assert [line for line in out.stderr.splitlines() if line.startswith("HEAVY=")] == ["HEAVY="], out.stderr[-2000:]
    card = json.loads(out.stdout)
    from keras_iqa import registry

    assert card["builder"] == "keras_iqa.models.reqa.reqa_model.build_reqa"
    assert card == json.loads(json.dumps(registry.get_card("reqa-tiny").summary()))  # what Python's card says


def test_models_name_unknown_suggests_close_names(capsys):
    assert cli.main(["models", "reqa-tny"]) == 2
    assert "did you mean 'reqa-tiny'" in capsys.readouterr().err
