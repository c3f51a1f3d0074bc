"""Evaluation: per-image predictions, protocols (splits, official, cross-dataset, leave-one-distortion-out), fine-grained
range report, significance tests, gMAD and reports. Submodules import their heavy dependencies lazily."""

from keras_iqa.evaluation.predict import predict_dataset, predict_reader

__all__ = ["predict_reader", "predict_dataset"]
