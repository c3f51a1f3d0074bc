"""Loss functions (differentiable Keras-ops functions; no state).

- `batch_plcc(y_true, y_pred)`: Pearson correlation over the batch; `plcc_loss = 1 - batch_plcc`.
- REQA (Li & Huo, "Coarse-to-fine assessment of image quality to alleviate the range effect"):
  `reqa_coarse_loss` (Eq. 9-12: rank + gradient terms over all pairs i<j inside each 5-image micro-batch, sigma = 1e-4),
  `reqa_fine_loss` (Eq. 13: mean ReLU(|s - F_t| - l_t), thresholds 5 / 2.5 / 0 on the 0-100 scale),
  `reqa_rank_loss_official` (official code's `RankLoss1`: all B x B ordered pairs of the whole batch, mean over B^2, no
  gradient term), `reqa_total_loss` (Eq. 14 with weights w1..w4; `reqa_step_weights`: the released code's weights for
  T steps).
- HCL (reconstruction), curriculum 1 (docs/methods/hcl.md): `restoration_l1` and `RestorationLoss` (pixel L1 or -PSNR, plus
  an optional SSIM term), registered for `.keras` saving ("keras_iqa>restoration_l1", "keras_iqa>RestorationLoss").

All functions take tensors of any float dtype and compute in float32 (safe under mixed precision).
"""

from __future__ import annotations

import math

import keras
from keras import ops
import numpy as np
import tensorflow as tf

REQA_SIGMA = 1e-4
REQA_FINE_THRESHOLDS = (5.0, 2.5, 0.0)
PIXEL_LOSSES = ("l1", "psnr")


def _flat32(x):
    return ops.reshape(ops.cast(x, "float32"), (-1,))


def batch_plcc(y_true, y_pred, axis=None, eps=1e-8):
    """Pearson linear correlation of `y_pred` with `y_true` over the batch (in [-1, 1], differentiable, float32).

    r = sum((p - mean p)(t - mean t)) / sqrt(sum (p - mean p)^2 * sum (t - mean t)^2 + eps).
    `axis=None`: one scalar over all elements; `axis=0`: one r per column, broadcasting (HCL's CQAC:
    `batch_plcc(y[:, None], scores [B, K], axis=0)` -> [K]). A constant side (zero variance) gives r = 0 instead of NaN.
    """
    if axis is None:
        t, p, axis = _flat32(y_true), _flat32(y_pred), 0
    else:
        t = ops.cast(ops.convert_to_tensor(y_true), "float32")
        p = ops.cast(ops.convert_to_tensor(y_pred), "float32")
    t = t - ops.mean(t, axis=axis, keepdims=True)
    p = p - ops.mean(p, axis=axis, keepdims=True)
    num = ops.sum(t * p, axis=axis)
    den = ops.sqrt(ops.sum(t * t, axis=axis) * ops.sum(p * p, axis=axis) + eps)
    return num / den


def plcc_loss(y_true, y_pred, eps=1e-8):
    """1 - batch PLCC (0 for a perfectly linear prediction, 2 for a perfectly anti-correlated one)."""
    return 1.0 - batch_plcc(y_true, y_pred, eps=eps)


def _pairwise(v):
    """[G, n] -> [G, n, n] differences v_i - v_j."""
    return ops.expand_dims(v, -1) - ops.expand_dims(v, -2)


def reqa_coarse_loss(y_true, y_pred, group_size=5, sigma=REQA_SIGMA, reduction="sum"):
    """REQA coarse loss, paper Eq. 9-12, on micro-batches of `group_size` consecutive samples.

    For every pair i<j in a micro-batch, Δs = s_i - s_j (targets), Δp = F1(I_i) - F1(I_j) (t=1 predictions):
        rank = max(0, -Δs·Δp / (|Δs| + σ)) · (|Δs| + 1)            (Eq. 10)
        grad = | |Δs| - |Δp| |                                      (Eq. 11)
        L_coarse = Σ_{i<j} (rank + grad)                             (Eq. 12)
    The batch size must be a multiple of `group_size`. `reduction`: "sum" sums each micro-batch's L_coarse and averages
    over micro-batches (the paper's per-micro-batch loss; default), "mean_pairs" averages over all pairs instead.
    """
    s = _flat32(y_true)
    p = _flat32(y_pred)
    n = int(group_size)
    s = ops.reshape(s, (-1, n))
    p = ops.reshape(p, (-1, n))
    ds = _pairwise(s)
    dp = _pairwise(p)
    ads = ops.abs(ds)
    rank = ops.relu(-ds * dp / (ads + sigma)) * (ads + 1.0)
    grad = ops.abs(ads - ops.abs(dp))
    mask = ops.triu(ops.ones((n, n), "float32"), k=1)  # pairs i<j
    per_pair = (rank + grad) * mask
    if reduction == "sum":
        return ops.mean(ops.sum(per_pair, axis=(1, 2)))
    if reduction == "mean_pairs":
        return ops.sum(per_pair) / (ops.cast(ops.shape(s)[0], "float32") * (n * (n - 1) / 2))
    raise ValueError(f"reduction must be 'sum' or 'mean_pairs', got {reduction!r}")


def reqa_rank_loss_official(y_true, y_pred, eps=REQA_SIGMA):
    """Official REQA code's coarse loss (`RankLoss1`): all B x B ordered pairs of the whole batch, mean over B^2.

    m = -Δp·Δs; loss_ij = ReLU(m / (|Δp| + 1e-4)) + ReLU(m / (|Δs| + 1e-4)). No gradient term. A discordant pair costs about
    |Δs| + |Δp|, a concordant pair 0 (each unordered pair is counted twice, the diagonal once with value 0).
    """
    s = _flat32(y_true)
    p = _flat32(y_pred)
    ds = _pairwise(s)
    dp = _pairwise(p)
    m = -dp * ds
    loss = ops.relu(m / (ops.abs(dp) + eps)) + ops.relu(m / (ops.abs(ds) + eps))
    return ops.mean(loss)


def reqa_fine_loss(y_true, y_pred, threshold):
    """REQA fine tolerance loss, paper Eq. 13: mean over the batch of ReLU(|s - F_t(I)| - l_t)."""
    s = _flat32(y_true)
    p = _flat32(y_pred)
    return ops.mean(ops.relu(ops.abs(s - p) - threshold))


def reqa_loss_terms(y_true, step_preds, coarse="paper", group_size=5, thresholds=REQA_FINE_THRESHOLDS):
    """All REQA loss terms: returns [L_coarse(t=1), L_2, L_3, ..., L_T] for step predictions [T, B] (or a list of T [B]).

    `coarse`: "paper" (Eq. 9-12, micro-batches) or "official" (`RankLoss1`, whole batch). Fine thresholds for steps 2..T are
    `thresholds` (5, 2.5, 0); with T > 4 the last threshold is repeated, with T < 4 the last T-1 thresholds are used
    (so the final step always has tolerance 0).
    """
    preds = [step_preds[i] for i in range(len(step_preds))] if isinstance(step_preds, (list, tuple)) else \
        [step_preds[i] for i in range(int(step_preds.shape[0]))]
    if coarse == "paper":
        terms = [reqa_coarse_loss(y_true, preds[0], group_size=group_size)]
    elif coarse == "official":
        terms = [reqa_rank_loss_official(y_true, preds[0])]
    else:
        raise ValueError(f"coarse must be 'paper' or 'official', got {coarse!r}")
    for thr, p in zip(fine_thresholds(len(preds), thresholds), preds[1:]):
        terms.append(reqa_fine_loss(y_true, p, thr))
    return terms


def fine_thresholds(steps, thresholds=REQA_FINE_THRESHOLDS):
    """Tolerances l_t for steps 2..T (T = `steps`): the paper's (5, 2.5, 0) for T = 4; trimmed from the front / padded with the
    last value for other T so the final step always uses the last (strictest) threshold."""
    k = int(steps) - 1
    th = list(thresholds)
    if k <= len(th):
        return th[len(th) - k:] if k > 0 else []
    return th[:-1] + [th[-1]] * (k - len(th) + 1)


REQA_OFFICIAL_WEIGHTS = (0.25, 0.125, 0.25, 0.375)  # Eq. 14 weights of the released code: 0.25 coarse + 0.75 fine


def reqa_step_weights(weights=REQA_OFFICIAL_WEIGHTS, steps=4):
    """Eq. 14 weights w_1..w_T (float32 numpy) for T = `steps`: `weights` as given for T = 4 (the paper's and the code's
    T); for other T (Table V ablations, not defined by the paper) w_1 is kept and 1 - w_1 is split equally over steps
    2..T ([1] for T = 1). `keras_iqa.training.curriculum` builds its presets on it."""
    steps = int(steps)
    if steps == 4:
        return np.asarray(weights, "float32")
    if steps == 1:
        return np.asarray([1.0], "float32")
    return np.asarray([weights[0]] + [(1.0 - weights[0]) / (steps - 1)] * (steps - 1), "float32")


def reqa_total_loss(terms, weights):
    """Eq. 14: Σ_t w_t · L_t over the loss terms (coarse first)."""
    total = 0.0
    for w, t in zip(weights, terms):
        total = total + ops.cast(w, "float32") * t
    return total


# ---------------------------------------------------------------------------------------- HCL curriculum 1

@keras.saving.register_keras_serializable(package="keras_iqa")
def restoration_l1(y_true, y_pred):
    """Mean absolute error between restored and reference images (both in [0, 1])."""
    return ops.mean(ops.abs(ops.cast(y_true, y_pred.dtype) - y_pred))


@keras.saving.register_keras_serializable(package="keras_iqa")
class RestorationLoss(keras.losses.Loss):
    """L = pixel(restored, reference) + ssim_weight * (1 - SSIM(restored, reference)) (docs/methods/hcl.md, Curriculum 1; SSIM term optional).

    pixel = "l1" (spec: mean absolute error per image) or "psnr" (our option: 10 log10(MSE + 1e-5) per image, i.e. minus
    the PSNR that the held-out check `keras_iqa.training.hcl.restoration_report` averages; the log weights each image's
    relative error, so nearly-clean inputs, where any added error costs many dB, count as much as heavily distorted ones).
    Targets are the reference crops in [0, 1] (reference / 255); SSIM is TF's Gaussian-window SSIM with max value 1.
    """

    def __init__(self, ssim_weight=0.0, pixel="l1", name="restoration_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if pixel not in PIXEL_LOSSES:
            raise ValueError(f"restoration pixel loss must be one of {PIXEL_LOSSES}, got {pixel!r}")
        self.ssim_weight, self.pixel = float(ssim_weight), pixel

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        if self.pixel == "l1":
            loss = ops.mean(ops.abs(y_true - y_pred), axis=(1, 2, 3))
        else:  # 10 log10(MSE + eps): -PSNR (max value 1), bounded below at -50 dB by eps
            loss = (10.0 / math.log(10.0)) * ops.log(ops.mean(ops.square(y_true - y_pred), axis=(1, 2, 3)) + 1e-5)
        if self.ssim_weight == 0.0:
            return loss

        ssim = tf.image.ssim(y_true, y_pred, max_val=1.0)
        return loss + self.ssim_weight * (1.0 - ssim)

    def get_config(self):
        return {**super().get_config(), "ssim_weight": self.ssim_weight, "pixel": self.pixel}
