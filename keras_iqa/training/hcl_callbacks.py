"""Callbacks and learning-rate schedules of two-optimizer training (the backbone and the rest), and HCL's head-correlation
log.

`GroupLRSchedule` sets `model.optimizer` and `model.backbone_optimizer` (the `keras_iqa.models.two_optimizer` contract) per
epoch; `freeze_then_low_lr` / `step_decay` are HCL's curriculum-2 / curriculum-3 schedules for it; `HeadCorrelationLogger`
writes the K x K head-correlation matrix of `HCLSynthetic` per epoch (resume-safe).

Example:
>>> from keras_iqa.training.hcl_callbacks import freeze_then_low_lr, step_decay
>>> head, backbone = freeze_then_low_lr(1e-4, freeze_epochs=2, factor=0.1)
>>> head(0), backbone(1), backbone(2)
(0.0001, 0.0, 1e-05)
>>> head, backbone = step_decay(1e-4, 1e-5, decay_epoch=10, factor=0.1)
>>> round(head(10), 12), backbone(9)
(1e-05, 1e-05)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import keras
import numpy as np

from keras_iqa.training.files import save_json

__all__ = ["GroupLRSchedule", "HeadCorrelationLogger", "freeze_then_low_lr", "step_decay"]


def _callbacks_base():
    return keras.callbacks.Callback


class GroupLRSchedule(_callbacks_base()):
    """Sets both learning rates at each epoch start: `head_lr(epoch)` on `model.optimizer`, `backbone_lr(epoch)` on
    `model.backbone_optimizer` (the restoration network). The rates are optimizer variables: no retracing."""

    def __init__(self, head_lr, backbone_lr):
        super().__init__()
        self.head_lr, self.backbone_lr = head_lr, backbone_lr

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = float(self.head_lr(epoch))
        if self.model.backbone_optimizer is not None:
            self.model.backbone_optimizer.learning_rate = float(self.backbone_lr(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = float(self.head_lr(epoch))
            logs["backbone_lr"] = float(self.backbone_lr(epoch))


def freeze_then_low_lr(lr: float, freeze_epochs: int = 2, factor: float = 0.1):
    """(head_lr, backbone_lr) schedules of curriculum 2: heads at `lr`; backbone 0 for `freeze_epochs`, then `lr * factor`."""
    return (lambda e: lr), (lambda e: 0.0 if e < freeze_epochs else lr * factor)


def step_decay(lr: float, backbone_lr: float, decay_epoch: int = 10, factor: float = 0.1):
    """(head_lr, backbone_lr) schedules of curriculum 3: both multiplied by `factor` from `decay_epoch` on."""
    return (lambda e: lr * (factor if e >= decay_epoch else 1.0)), (lambda e: backbone_lr * (factor if e >= decay_epoch else 1.0))


class HeadCorrelationLogger(_callbacks_base()):
    """Writes the K x K head-correlation matrix of each training epoch (mean over batches of the batch PLCC between the
    heads' scores, `HCLSynthetic.head_corr`) to `<dir>/head_correlation.json` and `.csv`. Resume-safe: epochs that a
    resumed run re-does replace their old rows. The training matrix is captured before validation resets the metrics."""

    def __init__(self, directory, dataset_names: Optional[Sequence[str]] = None):
        super().__init__()
        self.dir = Path(directory)
        self.names = list(dataset_names) if dataset_names else None
        self._snap = None

    def on_epoch_begin(self, epoch, logs=None):
        self._snap = None

    def on_test_begin(self, logs=None):
        if self._snap is None:  # validation inside fit: keep the training epoch's matrix
            self._snap = self.model.head_corr.matrix()

    def on_epoch_end(self, epoch, logs=None):
        m = self._snap if self._snap is not None else self.model.head_corr.matrix()
        path = self.dir / "head_correlation.json"
        doc = {"datasets": self.names, "epochs": []}
        if path.exists():
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        doc["epochs"] = [e for e in doc.get("epochs", []) if e["epoch"] < epoch] + [
            {"epoch": int(epoch), "matrix": np.round(m, 6).tolist()}]
        save_json(doc, path)
        names = self.names or [str(i) for i in range(m.shape[0])]
        lines = ["epoch,head_i,head_j,plcc"]
        for e in doc["epochs"]:
            mat = np.asarray(e["matrix"])
            lines += [f"{e['epoch']},{names[i]},{names[j]},{mat[i, j]:.6f}" for i in range(len(mat)) for j in range(len(mat))]
        tmp = self.dir / "head_correlation.csv.tmp"
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, self.dir / "head_correlation.csv")
