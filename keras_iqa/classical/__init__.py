"""Classical no-reference baselines: BRISQUE (features + an RBF SVR fitted by `keras-iqa baseline fit brisque`) and NIQE
(opinion-unaware: distance to a Gaussian model of pristine photos). `load_baseline` opens one by folder or name; it then
scores like any other MODEL of `keras-iqa evaluate / report / score` (docs/baselines.md). The feature code
(`keras_iqa.classical.features`, `.niqe`, `.brisque`) loads SciPy and is imported when a baseline first scores."""

from keras_iqa.classical.baseline import NAMES, Baseline, is_baseline, load_baseline, predict_records

__all__ = ["NAMES", "Baseline", "is_baseline", "load_baseline", "predict_records"]
