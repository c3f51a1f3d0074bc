"""`Scorer`: a loaded model as a crop-scoring function plus the test-time contract it crops and averages with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

PRECISIONS = ("fp32", "bf16", "auto")

@dataclass
class Scorer:
    """A loaded model: `crop_scores(crops [N, c, c, 3] float32) -> [N]` plus the contract needed to crop and normalise."""

    crop_scores: Callable[[np.ndarray], np.ndarray]
    kind: str
    source: str
    score_range: tuple
    higher_better: bool
    crop_size: int
    test_crops: int
    crop_policy: str
    max_crops_per_call: int = 256
    extra: dict = field(default_factory=dict)
    test_resize: object = None
    crop_seed: int = 0
    image_scores: Optional[Callable[[list], np.ndarray]] = None  # whole-photo models: decoded images -> scores
    precision: str = "fp32"

    @property
    def test_time(self):
        """The test-time contract (`data_pipeline.test_time.TestTimeCrops`) this scorer crops and averages with."""
        from data_pipeline.test_time import TestTimeCrops

        return TestTimeCrops(crop_size=self.crop_size, num_crops=self.test_crops, policy=self.crop_policy,
                             resize=self.test_resize, seed=self.crop_seed)

    def normalized(self, scores: np.ndarray) -> np.ndarray:
        lo, hi = self.score_range
        x = np.clip((np.asarray(scores, np.float64) - lo) / (hi - lo), 0.0, 1.0)
        return x if self.higher_better else 1.0 - x


def _contract_fields(d: dict) -> dict:
    """Scorer fields from an export's contract JSON (version 1 exports served "random" as a grid: kept so)."""
    out = {k: d[k] for k in ("score_range", "higher_better", "crop_size", "test_crops", "crop_policy")}
    tt = d.get("test_time")
    if tt is None:  # contract version 1
        out["crop_policy"] = d.get("served_crop_policy", "resize" if d["crop_policy"] == "resize" else "grid")
        return out
    out.update(crop_policy=tt["policy"], test_crops=tt["num_crops"], test_resize=tt.get("resize"), crop_seed=tt.get("seed", 0))
    return out


def resolve_precision(precision: str) -> str:
    """"fp32" or "bf16": "auto" is bf16 on CPUs with native bf16 dot products (`keras_iqa.training.cpu`), else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    from keras_iqa.training.cpu import resolve_precision as resolve

    import tensorflow as tf

    return resolve("auto", gpu=bool(tf.config.list_physical_devices("GPU")))
