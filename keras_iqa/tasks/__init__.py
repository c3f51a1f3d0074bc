"""Training tasks: one module per method (`reqa`, `metaiqa`, `hcl`), each owning its config dataclass, `build_model`,
`build_inputs`, `train` and the protocols it runs (TF Model Garden's task style). `keras-iqa train METHOD` is a thin adapter
over the task; `evaluate` (keras_iqa.tasks.evaluate) is the one evaluation they share.

Adding a method: a model package (keras_iqa/models/<name>/), a task module here exposing `TASK` (a
`keras_iqa.tasks.base.Task`) and one `keras_iqa.registry.Family` entry naming both; `keras-iqa train <name>` then runs the
task through the generic adapter of `keras_iqa.commands.train`, or through the family's own `command` module when it
needs flags of its own (docs/contributing.md).

Example:
>>> from keras_iqa.tasks import TASKS, get_task
>>> sorted(TASKS)
['hcl', 'metaiqa', 'reqa']
>>> get_task("reqa").config_cls.__name__
'REQATrainConfig'
"""

from __future__ import annotations

import importlib

from keras_iqa import registry

__all__ = ["TASKS", "get_task", "task_modules", "task_names"]


def task_modules() -> dict:
    """Method name -> the module that defines its `TASK`, from the registry's family table (imported on first use: the
    CLI lists methods without loading TensorFlow)."""
    return {f.name: f.task for f in registry.FAMILIES.values() if f.task}


TASKS = task_modules()  # the built-in methods (read `task_modules()` for families added at run time)


def task_names() -> tuple:
    """The method names, in the order `keras-iqa train` lists them."""
    return tuple(task_modules())


def get_task(name: str):
    """The `Task` of a method ("reqa", "metaiqa", "hcl")."""
    tasks = task_modules()
    if name not in tasks:
        raise KeyError(f"unknown training task {name!r}; known: {', '.join(tasks)}")
    return importlib.import_module(tasks[name]).TASK
