"""Earlier home of MetaIQA's training code, kept so that `from keras_iqa.training.meta import ...` keeps working.

The learner is `keras_iqa.training.meta_learner` (`MetaLearner`, `lr_factor`); fine-tuning and the paper's protocols are
MetaIQA's task, `keras_iqa.tasks.metaiqa` (`finetune`, `leave_one_distortion_out`, `synthetic_to_authentic`, ...).
"""

from __future__ import annotations

from keras_iqa.tasks.metaiqa_protocols import (  # noqa: F401 (re-exported)
    FINETUNE_PRESETS, baseline_then_finetune, compile_for_finetune, evaluate_model, finetune, leave_one_distortion_out,
    load_meta_weights, lodo_reference_split, lodo_splits, predict_batches, synthetic_to_authentic, tasks_to_dataset)
from keras_iqa.training.meta_learner import MetaLearner, lr_factor  # noqa: F401 (re-exported)

__all__ = [
    "MetaLearner", "lr_factor", "FINETUNE_PRESETS", "compile_for_finetune", "finetune", "load_meta_weights",
    "predict_batches", "evaluate_model", "lodo_splits", "lodo_reference_split", "leave_one_distortion_out",
    "synthetic_to_authentic", "baseline_then_finetune", "tasks_to_dataset",
]
