"""BRISQUE's regressor: an epsilon-SVR with an RBF kernel on the 36 features (`features.brisque_features`), the features
min-max scaled to [-1, 1] on the training images as the paper's LIBSVM release does (`svm-scale -l -1 -u 1`).

Fitting uses scikit-learn's `SVR` (the `classical` extra); scoring needs only numpy: the fitted model is plain numbers
(`brisque.json`: scaling, support vectors, dual coefficients, intercept, gamma), never a pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

FILE = "brisque.json"
FORMAT = "keras-iqa-brisque"
NUM_FEATURES = 36
#: The (C, gamma) grid searched by 5-fold cross-validation on the training images when neither is given (ours).
C_GRID = (1.0, 4.0, 16.0, 64.0, 256.0)
GAMMA_GRID = (0.01, 0.03, 0.1, 0.3)


@dataclass
class BrisqueModel:
    """A fitted BRISQUE regressor. Targets are learned on [0, 1] (`score_range` mapped there) and mapped back."""

    feature_min: list
    feature_max: list
    support_vectors: list
    dual_coef: list
    intercept: float
    gamma: float
    C: float
    epsilon: float
    score_range: list
    higher_better: bool
    trained_on: dict = field(default_factory=dict)

    def scale(self, feats) -> np.ndarray:
        lo, hi = np.asarray(self.feature_min), np.asarray(self.feature_max)
        span = np.where(hi > lo, hi - lo, 1.0)
        return -1.0 + 2.0 * (np.asarray(feats, np.float64) - lo) / span

    def predict(self, feats) -> np.ndarray:
        """Scores on `score_range` of features [N, 36]: sum_i dual_i exp(-gamma |sv_i - x|^2) + intercept, mapped back."""
        x = self.scale(np.atleast_2d(feats))
        sv = np.asarray(self.support_vectors, np.float64).reshape(-1, NUM_FEATURES)
        d2 = (x * x).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * x @ sv.T
        u = np.exp(-self.gamma * np.maximum(d2, 0.0)) @ np.asarray(self.dual_coef, np.float64) + self.intercept
        lo, hi = self.score_range
        return lo + u * (hi - lo)

    def save(self, folder) -> Path:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        path = out / FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "version": 1, **asdict(self)}, indent=1))
        tmp.replace(path)
        return path


def read_model(path) -> BrisqueModel:
    """A `brisque.json`; anything malformed fails in one line naming the file, the key and the fix."""
    path = Path(path)
    fix = "refit it with keras-iqa baseline fit brisque"
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{path}: not a keras-iqa BRISQUE model (key 'format' must be {FORMAT!r}); {fix}")
    names = [f for f in BrisqueModel.__dataclass_fields__]
    missing = [k for k in names if k not in d and k != "trained_on"]
    if missing:
        raise ValueError(f"{path}: key {missing[0]!r} missing; {fix}")

    def nums(key, shape):
        try:
            a = np.asarray(d[key], np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: key {key!r} must hold numbers; {fix}") from None
        if a.shape != shape or not np.all(np.isfinite(a)):
            raise ValueError(f"{path}: key {key!r} must be finite numbers of shape {shape}, got shape {a.shape}; {fix}")
        return a.tolist()

    n = len(d["dual_coef"]) if isinstance(d["dual_coef"], list) else -1
    if n < 1:
        raise ValueError(f"{path}: key 'dual_coef' must be a non-empty list of numbers; {fix}")
    m = BrisqueModel(feature_min=nums("feature_min", (NUM_FEATURES,)), feature_max=nums("feature_max", (NUM_FEATURES,)),
                     support_vectors=nums("support_vectors", (n, NUM_FEATURES)), dual_coef=nums("dual_coef", (n,)),
                     intercept=float(nums("intercept", ())), gamma=float(nums("gamma", ())), C=float(nums("C", ())),
                     epsilon=float(nums("epsilon", ())), score_range=nums("score_range", (2,)),
                     higher_better=bool(d["higher_better"]), trained_on=dict(d.get("trained_on") or {}))
    if m.gamma <= 0 or m.score_range[0] == m.score_range[1]:
        raise ValueError(f"{path}: key {'gamma' if m.gamma <= 0 else 'score_range'!r} is degenerate; {fix}")
    return m


def fit_svr(feats, targets, score_range: Sequence[float], higher_better: bool, C: Optional[float] = None,
            gamma: Optional[float] = None, epsilon: float = 0.01, trained_on: Optional[dict] = None) -> BrisqueModel:
    """Fits the RBF epsilon-SVR on features [N, 36] and targets on `score_range` (scikit-learn). A missing C or gamma is
    chosen on `C_GRID` x `GAMMA_GRID` by 5-fold cross-validation (fewer folds for fewer than 10 images)."""
    try:
        from sklearn.model_selection import GridSearchCV
        from sklearn.svm import SVR
    except ImportError:
        raise ImportError("fitting BRISQUE needs scikit-learn: pip install 'keras-iqa[classical]'") from None
    x = np.asarray(feats, np.float64)
    if len(x) < 3:
        raise ValueError(f"BRISQUE needs at least 3 training images, got {len(x)}")
    lo, hi = float(score_range[0]), float(score_range[1])
    y = (np.asarray(targets, np.float64) - lo) / (hi - lo)
    fmin, fmax = x.min(0), x.max(0)
    span = np.where(fmax > fmin, fmax - fmin, 1.0)
    xs = -1.0 + 2.0 * (x - fmin) / span
    grid = {"C": [C] if C is not None else list(C_GRID), "gamma": [gamma] if gamma is not None else list(GAMMA_GRID)}
    if len(grid["C"]) * len(grid["gamma"]) > 1:
        search = GridSearchCV(SVR(kernel="rbf", epsilon=epsilon), grid, cv=min(5, len(x) // 2) if len(x) >= 4 else 2,
                              scoring="neg_mean_squared_error")
        svr = search.fit(xs, y).best_estimator_
    else:
        svr = SVR(kernel="rbf", C=grid["C"][0], gamma=grid["gamma"][0], epsilon=epsilon).fit(xs, y)
    return BrisqueModel(feature_min=fmin.tolist(), feature_max=fmax.tolist(),
                        support_vectors=svr.support_vectors_.tolist(), dual_coef=svr.dual_coef_.ravel().tolist(),
                        intercept=float(svr.intercept_[0]), gamma=float(svr.gamma), C=float(svr.C), epsilon=float(epsilon),
                        score_range=[lo, hi], higher_better=bool(higher_better), trained_on=dict(trained_on or {}))
