"""`keras-iqa`: the command line. One module per subcommand in `keras_iqa/commands/` (each defines `register(subparsers)`).

Heavy imports (TensorFlow, Beam) happen inside the commands, so `keras-iqa --help` and `keras-iqa models` never import
TensorFlow or Keras (tests/keras_iqa/test_cli_rules.py checks it). Flag names mean one thing in every subcommand: the rule
and the table are in `keras_iqa/commands/__init__.py`.

Start-up noise: TensorFlow's shared objects log through absl from static initializers when they are loaded (oneDNN on,
"Could not find cuda drivers"), before `absl::InitializeLog()`, so TF_CPP_MIN_LOG_LEVEL does not reach them; and the lines
came twice because two of them carry their own copy of those initializers (`_pywrap_cpu_feature_guard` with the framework,
then `_pywrap_profiler_plugin` while `tensorflow/__init__` builds its API). `main` therefore loads TensorFlow's extension
modules with file descriptor 2 pointed at /dev/null, and sets TF_CPP_MIN_LOG_LEVEL=3 (an explicit value is kept) and the absl /
tensorflow / Beam loggers to ERROR, all unless `--verbose`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import importlib.machinery
from importlib.metadata import version
import importlib.util
import logging
import os
import signal
import sys
import threading

from keras_iqa.caller import stderr_fd_silenced
from keras_iqa.commands import add_output_args

COMMANDS = ("prepare", "synthesize", "train", "evaluate", "report", "export", "score", "convert", "preset", "models", "demo",
            "baseline")
#: Commands that a re-run with the same arguments resumes (complete shards, the last finished epoch): Ctrl-C says so.
RESUMABLE = ("prepare", "synthesize", "train")

EPILOG = """\
A typical session:
  keras-iqa prepare koniq10k --root /data/koniq10k --out records/      # official layout -> TFRecords + manifest + splits
  keras-iqa train reqa --data records/koniq10k --split split_00 --out runs/reqa-koniq
  keras-iqa evaluate runs/reqa-koniq --data records/koniq10k --protocol splits --out reports/reqa
  keras-iqa export runs/reqa-koniq --format savedmodel --out saved_models/reqa
  keras-iqa score saved_models/reqa/1 photos/ --recursive --scores scores.csv
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

    for leaf in leaf_parsers(parser):  # every runnable subcommand: -q/--quiet and -v/--verbose
        add_output_args(leaf)
    return parser


def leaf_parsers(parser: argparse.ArgumentParser, path=()):
    """The runnable subcommand parsers under `parser` (those that set `func`), depth first."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if child.get_default("func") is not None:
                    out.append(child)
                out.extend(leaf_parsers(child, (*path, name)))
    return out


def _version() -> str:
    try:
        return f"keras-iqa {version('keras-iqa')}"
    except Exception:
        return "keras-iqa (not installed)"


class _QuietLoader:
    """Wraps an extension-module loader: loading (dlopen + static initializers) and init run with fd 2 silenced."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        with stderr_fd_silenced():
            return self._loader.create_module(spec)

    def exec_module(self, module):
        with stderr_fd_silenced():
            return self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Loads TensorFlow's C extension modules (`tensorflow*`) with stderr silenced, hiding the start-up lines that
    TF_CPP_MIN_LOG_LEVEL cannot reach. Python-level errors still propagate (and print once stderr is back). It asks the
    other finders; one of them asking all finders in turn (keras_iqa.serializables) is answered None, not asked back."""

    _asking = threading.local()

    def find_spec(self, name, path=None, target=None):
        if not name.startswith("tensorflow") or getattr(self._asking, "name", None) == name:
            return None
        self._asking.name = name
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is None:
                    continue
                if spec.loader is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
            return None
        finally:
            self._asking.name = None


_NOISY_LOGGERS = ("absl", "tensorflow", "apache_beam", "h5py", "jax")


class _ThirdPartyRootFilter(logging.Filter):
    """Drops records below ERROR that TensorFlow / Beam / absl code logs straight on the root logger."""

    _PARTS = tuple(f"{os.sep}{name}{os.sep}" for name in ("tensorflow", "apache_beam", "absl", "tensorflow_text"))

    def filter(self, record):
        return record.levelno >= logging.ERROR or not any(p in (record.pathname or "") for p in self._PARTS)


def quiet_startup(verbose: bool = False) -> None:
    """Hide TensorFlow / absl / oneDNN / CUDA / Beam start-up and info lines (call before anything imports TensorFlow);
    `verbose=True` leaves them on. An explicit TF_CPP_MIN_LOG_LEVEL in the environment is kept either way."""
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, QuietTensorFlowFinder)]
        for f in [f for f in logging.root.filters if isinstance(f, _ThirdPartyRootFilter)]:
            logging.root.removeFilter(f)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # 3: also CUDA probing errors ("failed call to cuInit")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if not any(isinstance(f, _ThirdPartyRootFilter) for f in logging.root.filters):
        logging.root.addFilter(_ThirdPartyRootFilter())  # e.g. Beam's logging.warning("apitools not found ...")
    if not any(isinstance(f, QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowFinder())
    for name in _NOISY_LOGGERS:
        if name == "absl" and "absl.logging" not in sys.modules:
            continue  # absl installs its own logger class on import; set below through its API once loaded
        logging.getLogger(name).setLevel(logging.ERROR)
    if "absl.logging" in sys.modules:
        sys.modules["absl.logging"].set_verbosity("error")
    else:
        _after_import("absl.logging", lambda m: m.set_verbosity("error"))


def _after_import(name: str, hook) -> None:
    """Runs hook(module) right after `name` is first imported (a one-shot meta path finder)."""

    class _Once(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            if spec is None or spec.loader is None:
                return spec
            real = spec.loader

            class _Loader(_QuietLoader):
                def create_module(self, s):
                    return real.create_module(s)

                def exec_module(self, module):
                    real.exec_module(module)
                    try:
                        hook(module)
                    except Exception:  # never let a logging tweak break an import
                        pass

            spec.loader = _Loader(real)
            return spec

    sys.meta_path.insert(0, _Once())


class _Interrupt:
    """The SIGINT handler while a command runs: remembers the Ctrl-C (a Beam step re-raises it as another error), silences
    Beam's logging (its ERROR record and traceback of the interrupted step) and the errors of threads that end with the
    run, then raises KeyboardInterrupt as Python does."""

    def __init__(self):
        self.seen = False

    def __call__(self, signum, frame):
        self.seen = True
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL + 1)
        threading.excepthook = lambda args: None  # e.g. Beam's worker threads, once their worker processes stopped
        raise KeyboardInterrupt


def _interrupted(command: str) -> int:
    """One line, exit status 130 (128 + SIGINT, as shells report it)."""
    print("interrupted; re-run the same command to resume" if command in RESUMABLE else "interrupted", file=sys.stderr)
    return 130


@contextlib.contextmanager
def _catching_ctrl_c():
    """Installs `_Interrupt` for the block (main thread only; the previous handler and Beam's log level come back)."""
    handler = _Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    beam_level, hook = logging.getLogger("apache_beam").level, threading.excepthook
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGINT, previous)
        logging.getLogger("apache_beam").setLevel(beam_level)
        threading.excepthook = hook


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_startup(verbose=bool(getattr(args, "verbose", False)))
    if getattr(args, "quiet", False):
        logging.getLogger("keras_iqa").setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    with _catching_ctrl_c() as ctrl_c:
        try:
            rc = args.func(args)
        except KeyboardInterrupt:
            return _interrupted(args.command)
        except (ValueError, FileNotFoundError, RuntimeError, NotImplementedError) as e:
            if ctrl_c.seen:  # the Ctrl-C, re-raised as another error on its way out (Beam)
                return _interrupted(args.command)
            print(f"keras-iqa {args.command}: error: {e}", file=sys.stderr)
            return 2
        except Exception:
            if ctrl_c.seen:
                return _interrupted(args.command)
            raise
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
