"""The preset registry: trained keras-iqa models by name, in keras-hub's `*_presets.py` style.

Each entry maps a preset name to where its files live and what they hold:

    "reqa_koniq10k": {
        "handle": "kaggle://ORG/keras-iqa/keras/reqa_koniq10k/1",    # or hf://ORG/NAME, https://HOST/PATH/DIR
        "sha256": {"config.json": "64 hex", "model.weights.h5": "64 hex", "metadata.json": "64 hex"},
        "bytes": {"config.json": 0, "model.weights.h5": 0, "metadata.json": 0},  # optional: sizes, the download caps
        "metadata": {
            "card": "reqa",                      # the model card the preset was trained from (keras-iqa models)
            "description": "REQA trained on KonIQ-10k (split_00)",
            "dataset": "KonIQ-10k",
            "protocol": "split_00 of `keras-iqa prepare koniq10k --num-splits 10` (80/20 by image), paper curriculum",
            "srocc": 0.0, "plcc": 0.0,           # measured on the protocol's test split (results.json of the run)
            "machine": "what trained and measured it",
            "license": "licence of the weights (and of the data they were trained on)",
            "command": "the commands that made it: keras-iqa train ... && keras-iqa preset save RUN --out DIR",
        },
    }

`keras-iqa preset save RUN --out DIR` prints such an entry with the hashes filled in; docs/presets.md says how to publish
the folder and add the entry. An entry is only added for weights that exist: someone trained or converted them and the
entry names the command that did. keras-iqa cannot host weights from where it is developed, so this registry ships EMPTY;
`keras_iqa.presets.register_preset` adds entries at run time (tests serve one from a local HTTP server).

This module imports nothing heavy: `keras-iqa models` reads it without TensorFlow.
"""

from __future__ import annotations

# name -> entry (see the module docstring). Empty on purpose: no weights are hosted yet.
IQA_PRESETS: dict = {}
