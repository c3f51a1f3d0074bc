"""REQA curriculum (paper Eq. 14, Sec. IV-A(3)): loss weights per stage and the two learning rates, as one Keras callback.

Weight presets (w1 = coarse, w2..w4 = fine steps 2..4; docs/methods/reqa.md):
- "paper": 4 stages of `stage_epochs` (10) epochs:
      stage 1: 0.25, 0.5, 0.25/3, 0.25/3;  stage 2: 0.25*, 0.5, 0.25, 0.25;  stage 3: 0.25*, 0.25, 0.5, 0.25;
      stage 4: 0.25, 0.25, 0.25, 0.5.   (* w1 is not given for stages 2-3; we keep 0.25 as in stages 1 and 4. The paper's
      weights do not sum to 1 in stages 1/4 despite its Σw = 1 constraint; we use them as printed.)
- "official": constant 0.25, 0.125, 0.25, 0.375 (the released code: 0.25·coarse + 0.75·mean((0.5, 1, 1.5)/3 · fine)).
For T != 4 (Table V ablations) the presets are not defined by the paper: w1 is kept and the fine weight 1 - w1 (paper
stage 4 / official: 0.75) is split equally over steps 2..T in every stage (documented deviation).

Learning rates: "paper" = backbone 2e-5, rest 2e-4, both x0.1 at epochs 10, 20, 30 (0-based epoch index >= milestone);
"official" = the released code's intended schedule. Its optimiser is re-created AFTER training epoch t (0-based) with the
non-backbone LR 2e-5 / 10^(t // 10) x (10 if t <= 10 else 1), so that LR applies from epoch t + 1 on: backbone constant 2e-5;
rest 2e-4 for epochs 0-10, 2e-5 at epoch 11, 2e-6 for epochs 12-20, 2e-7 for epochs 21-30 (`official_head_lr`). The code's
optimiser re-creation each epoch (Adam moments reset) and its emptied head group (a bug that freezes FN/TE/MLP after
epoch 1) are not replicated.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np

from keras_iqa.losses import REQA_OFFICIAL_WEIGHTS, reqa_step_weights

PAPER_STAGES = (
    (0.25, 0.5, 0.25 / 3, 0.25 / 3),
    (0.25, 0.5, 0.25, 0.25),
    (0.25, 0.25, 0.5, 0.25),
    (0.25, 0.25, 0.25, 0.5),
)
OFFICIAL_WEIGHTS = REQA_OFFICIAL_WEIGHTS
PRESETS = ("paper", "official")


def constant_weights(preset: str = "official", steps: int = 4) -> np.ndarray:
    """The constant (official-code) weights, adapted to `steps` (see the module docstring)."""
    return reqa_step_weights(OFFICIAL_WEIGHTS, steps)


def _adapt(w, steps):
    return reqa_step_weights(w, steps)


def stage_weights(preset: str = "paper", steps: int = 4) -> list:
    """List of per-stage weight vectors (length `steps` each) of a preset."""
    if preset == "paper":
        return [np.asarray(w, "float32") for w in PAPER_STAGES] if steps == 4 else [_adapt(PAPER_STAGES[-1], steps)]
    if preset == "official":
        return [constant_weights("official", steps)]
    raise ValueError(f"curriculum preset must be one of {PRESETS}, got {preset!r}")


def lr_at(epoch: int, base_lr: float, milestones: Sequence[int] = (10, 20, 30), factor: float = 0.1) -> float:
    """Step schedule: base_lr · factor^(number of milestones <= epoch) (0-based epochs)."""
    return float(base_lr) * float(factor) ** sum(int(epoch) >= m for m in milestones)


def official_head_lr(epoch: int, lr: float = 2e-5, ratio: float = 10.0) -> float:
    """The released code's non-backbone LR during (0-based) `epoch`.

    The code trains epoch t, then re-creates its optimiser with lr / 10^(t // 10) · (ratio if t <= 10 else 1): the value
    computed after epoch t is used by epoch t + 1. Epoch 0 uses the initial lr · ratio (2e-4). So: 2e-4 for epochs 0-10,
    2e-5 for epoch 11, 2e-6 for epochs 12-20, 2e-7 for epochs 21-30.
    """
    if epoch <= 0:
        return lr * ratio
    t = epoch - 1  # the epoch after which this LR was set
    return lr / 10 ** (t // 10) * (ratio if t <= 10 else 1.0)


class CurriculumSchedule(keras.callbacks.Callback):
    """Sets `model.curriculum_weights` and the two learning rates at the start of every epoch.

    Args:
        stages: list of weight vectors; stage k is used for epochs [k·stage_epochs, (k+1)·stage_epochs) and the last one
            afterwards. One vector = constant weights.
        stage_epochs: epochs per stage (10 in the paper).
        lr: base LR of the non-backbone part (2e-4); None leaves the optimizer alone.
        backbone_lr: base LR of the backbone (2e-5); None leaves the backbone optimizer alone.
        lr_schedule: "paper" (x`lr_factor` at `milestones` for both), "official" (see the module docstring) or "constant".
        milestones, lr_factor: the step schedule (10, 20, 30; 0.1).
        verbose: print a line when the weights or LRs change.

    The epoch index Keras passes is absolute, so a resumed run (`runner.fit`, initial_epoch) gets the right stage.
    """

    def __init__(self, stages, stage_epochs: int = 10, lr: Optional[float] = 2e-4, backbone_lr: Optional[float] = 2e-5,
                 lr_schedule: str = "paper", milestones: Sequence[int] = (10, 20, 30), lr_factor: float = 0.1,
                 verbose: int = 0):
        super().__init__()
        self.stages = [np.asarray(s, "float32") for s in stages]
        if not self.stages:
            raise ValueError("CurriculumSchedule needs at least one stage")
        if len({len(s) for s in self.stages}) != 1:
            raise ValueError(f"every stage needs the same number of weights, got {[len(s) for s in self.stages]}")
        if lr_schedule not in ("paper", "official", "constant"):
            raise ValueError(f"lr_schedule must be paper, official or constant, got {lr_schedule!r}")
        self.stage_epochs, self.lr, self.backbone_lr = int(stage_epochs), lr, backbone_lr
        self.lr_schedule, self.milestones, self.lr_factor = lr_schedule, tuple(milestones), float(lr_factor)
        self.verbose = verbose
        self.history = []  # (epoch, weights, lr, backbone_lr)

    @classmethod
    def preset(cls, name: str = "paper", steps: int = 4, stage_epochs: int = 10, **kwargs) -> "CurriculumSchedule":
        """`preset("paper")`: 4 x 10-epoch stages + paper LRs; `preset("official")`: constant weights + the code's LRs."""
        kwargs.setdefault("lr_schedule", name)
        return cls(stage_weights(name, steps), stage_epochs=stage_epochs, **kwargs)

    def weights_at(self, epoch: int) -> np.ndarray:
        return self.stages[min(int(epoch) // max(self.stage_epochs, 1), len(self.stages) - 1)]

    def lrs_at(self, epoch: int):
        """(rest LR, backbone LR) for an epoch (None where not managed)."""
        if self.lr_schedule == "constant":
            return self.lr, self.backbone_lr
        if self.lr_schedule == "official":
            rest = None if self.lr is None else official_head_lr(epoch, self.backbone_lr or 2e-5, self.lr / (self.backbone_lr or 2e-5))
            return rest, self.backbone_lr
        return (None if self.lr is None else lr_at(epoch, self.lr, self.milestones, self.lr_factor),
                None if self.backbone_lr is None else lr_at(epoch, self.backbone_lr, self.milestones, self.lr_factor))

    def on_epoch_begin(self, epoch, logs=None):
        m = self.model
        w = self.weights_at(epoch)
        if int(m.curriculum_weights.shape[0]) != len(w):
            raise ValueError(f"curriculum has {len(w)} weights per stage but the model has steps={m.curriculum_weights.shape[0]}")
        changed = not np.allclose(np.asarray(m.curriculum_weights.numpy()), w)
        m.curriculum_weights.assign(w)
        lr, blr = self.lrs_at(epoch)
        if lr is not None:
            changed |= not np.isclose(float(m.optimizer.learning_rate.numpy()), lr)
            m.optimizer.learning_rate.assign(lr)
        if blr is not None and getattr(m, "backbone_optimizer", None) is not None:
            changed |= not np.isclose(float(m.backbone_optimizer.learning_rate.numpy()), blr)
            m.backbone_optimizer.learning_rate.assign(blr)
        self.history.append((int(epoch), w.tolist(), lr, blr))
        if self.verbose and (changed or epoch == 0):
            print(f"\nepoch {epoch}: curriculum weights {np.round(w, 4).tolist()}, lr {lr}, backbone lr {blr}")

    def get_config(self):
        return {"stages": [s.tolist() for s in self.stages], "stage_epochs": self.stage_epochs, "lr": self.lr,
                "backbone_lr": self.backbone_lr, "lr_schedule": self.lr_schedule, "milestones": list(self.milestones),
                "lr_factor": self.lr_factor}
