"""`keras-iqa --help` and every subcommand's --help teach usage; stubs say what is missing."""

import subprocess
import sys

import pytest

from keras_iqa import cli


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
    assert "keras-iqa prepare" in out


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_each_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    assert len(capsys.readouterr().out) > 80


@pytest.mark.parametrize("method", ["reqa", "metaiqa", "hcl"])
def test_train_method_help(method, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", method, "--help"])
    assert e.value.code == 0


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "keras_iqa.cli", "models"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
