"""Training tasks: one module per method (`reqa`, `metaiqa`, `hcl`), each owning its config dataclass, `build_model`,
`build_inputs`, `train` and the protocols it runs (TF Model Garden's task style). `keras-iqa train METHOD` is a thin adapter
over the task; `evaluate` (keras_iqa.tasks.evaluate) is the one evaluation they share.

Adding a method: a model module (keras_iqa/models), a task module here exposing `TASK` (a `keras_iqa.tasks.base.Task`), its
entry in `TASKS` below, and its command `keras_iqa/commands/train_<name>.py` (`register(subparsers)`).

Example:
>>> from keras_iqa.tasks import TASKS, get_task
>>> sorted(TASKS)
['hcl', 'metaiqa', 'reqa']
>>> get_task("reqa").config_cls.__name__
'REQATrainConfig'
"""

from __future__ import annotations

import importlib

__all__ = ["TASKS", "get_task", "task_names"]

# method name -> the module that defines its `TASK` (imported on first use: the CLI lists methods without loading TensorFlow)
TASKS = {
    "reqa": "keras_iqa.tasks.reqa",
    "metaiqa": "keras_iqa.tasks.metaiqa",
    "hcl": "keras_iqa.tasks.hcl",
}


def task_names() -> tuple:
    """The method names, in the order `keras-iqa train` lists them."""
    return tuple(TASKS)


def get_task(name: str):
    """The `Task` of a method ("reqa", "metaiqa", "hcl")."""
    if name not in TASKS:
        raise KeyError(f"unknown training task {name!r}; known: {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name]).TASK
