"""Who is calling, Python or the `keras-iqa` command line, and what each of them is shown.

From Python (the default) nothing changes: warnings are Python warnings and fix hints name Python keywords
(`backbone_weights=None`). `keras-iqa` runs each command inside `cli_session(...)` (keras_iqa/commands/__init__.py wraps
every subcommand's `run` in it), which

- prints each keras-iqa warning once, as one `warning: ...` line on stderr (no source line; the `keras_iqa` /
  `data_pipeline` loggers' warnings the same way);
- hides what TensorFlow, Keras, TFLite, absl and Beam print themselves (their Python warnings, and native lines written
  around `quiet_native()` blocks, e.g. TFLite's converter) unless `verbose`;
- spells fix hints for the command line: `setting("backbone_weights", None)` reads `--set backbone_weights=null`,
  `setting("meta_target", "pseudo")` reads `--meta-target pseudo` (a flag of the running subcommand with that key's name
  wins over `--set`; a key the command cannot set keeps the Python spelling).

Example:
>>> from keras_iqa.caller import cli_session, setting
>>> setting("backbone_weights", None)
'backbone_weights=None'
>>> with cli_session(flags={"meta_target": "--meta-target"}, config_keys={"backbone_weights", "epochs"}):
...     setting("backbone_weights", None), setting("meta_target", "pseudo"), setting("target", "pseudo")
('--set backbone_weights=null', '--meta-target pseudo', "target='pseudo'")
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

__all__ = ["cli_session", "cli_value", "hint", "in_cli", "quiet_native", "setting", "stderr_fd_silenced"]

#: packages whose own output (Python warnings, native lines) is "library chatter", shown only with `-v`
LIBRARIES = ("tensorflow", "tf_keras", "keras", "keras_hub", "absl", "apache_beam", "ai_edge_litert", "h5py", "jax",
             "kagglehub", "google.protobuf", "tensorflow_serving")
_OWN = ("keras_iqa", "data_pipeline")  # keras-iqa's own packages: their warnings and loggers


@dataclass
class _Session:
    verbose: bool = False
    flags: dict = field(default_factory=dict)  # config key / argument dest -> the running subcommand's flag
    config_keys: frozenset = frozenset()  # what `--set` takes in the running subcommand (dotted keys for sections)
    switches: frozenset = frozenset()  # dests of flags that take no value (`--overwrite`)


_session: Optional[_Session] = None


def in_cli() -> bool:
    """True while `keras-iqa` runs a command."""
    return _session is not None


def hint(python: str, cli: str) -> str:
    """`cli` while `keras-iqa` runs a command, else `python`."""
    return cli if _session is not None else python


def cli_value(value) -> str:
    """A value as `--set KEY=VALUE` takes it (YAML): null, true, [10, 20], {}, 0.0001."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(cli_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {cli_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _shell(text: str) -> str:
    return f"'{text}'" if re.search(r"[\s{}\[\]*?$\"'|;&<>()]", text) else text


def setting(key: str, value) -> str:
    """How the caller sets `key` to `value`: `key=value!r` from Python; the running subcommand's flag (`--meta-target
    pseudo`) or `--set key=value` (also a section's `model.key`) from `keras-iqa`; the Python spelling where the command
    has neither. `value=...` (Ellipsis) reads as "any value": `key=...`, `--set key=...`."""
    s = _session
    python = f"{key}={'...' if value is Ellipsis else repr(value)}"  # `...`: any value
    if s is None:
        return python
    text = "..." if value is Ellipsis else cli_value(value)
    if key in s.flags:
        return s.flags[key] if key in s.switches and value is True else f"{s.flags[key]} {_shell(text)}"
    keys = [k for k in s.config_keys if k == key] or [k for k in s.config_keys if k.endswith("." + key)]
    if len(keys) == 1:
        return f"--set {_shell(keys[0] + '=' + text)}"
    return python


@contextlib.contextmanager
def stderr_fd_silenced():
    """Points file descriptor 2 at /dev/null (C/C++ writers included) for the duration of the block."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def quiet_native():
    """Around a library call that prints natively (TFLite's converter): its stderr lines hidden in `keras-iqa` without
    `-v`; from Python, or with `-v`, nothing changes."""
    if _session is None or _session.verbose:
        yield
        return
    with stderr_fd_silenced():
        yield


def _issuer() -> str:
    """The module that called `warnings.warn` (whatever its `stacklevel` points at), seen from `showwarning`."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") in ("warnings", __name__):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "") if frame is not None else ""


def _within(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


class _OneLine(logging.Formatter):
    def format(self, record):
        return f"{record.levelname.lower()}: {record.getMessage()}"


@contextlib.contextmanager
def cli_session(verbose: bool = False, flags: Optional[Mapping[str, str]] = None, config_keys: Iterable[str] = (),
                switches: Iterable[str] = ()):
    """The block runs as `keras-iqa` (see the module docstring); everything is restored after it. `flags`: argument
    dest -> the subcommand's flag; `config_keys`: what its `--set` takes; `switches`: the dests of flags without a value."""
    global _session
    previous = _session
    _session = _Session(verbose, dict(flags or {}), frozenset(config_keys), frozenset(switches))
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        issuer = _issuer()
        if _within(issuer, _OWN):
            print(f"warning: {message}", file=sys.stderr)
        elif verbose or not _within(issuer, LIBRARIES):
            show(message, category, filename, lineno, file, line)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    loggers = [logging.getLogger(name) for name in _OWN]
    saved = [(lg.propagate, lg.level) for lg in loggers]
    with warnings.catch_warnings():
        warnings.showwarning = showwarning
        for lg in loggers:
            lg.addHandler(handler)
            lg.propagate = False  # one line each, even where a root handler exists (Beam's basicConfig)
            if lg.level == logging.NOTSET:
                lg.setLevel(logging.INFO if verbose else logging.WARNING)
        try:
            yield
        finally:
            for lg, (propagate, level) in zip(loggers, saved):
                lg.removeHandler(handler)
                lg.propagate, lg.level = propagate, level
            _session = previous
