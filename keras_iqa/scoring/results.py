"""What scoring returns and writes: `Scores` (`keras_iqa.score`) and the CSV / JSON-lines files of `keras-iqa score`."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np


@dataclass(repr=False)
class Scores:
    """What `keras_iqa.score` returns: one row per image, in input order (a folder adds its image files, sorted; a
    [N, H, W, C] array adds N rows); rows that could not be scored hold NaN and are listed in `errors`.

    Attributes:
        scores: float64 [N] on the model's `score_range` (NaN where scoring failed). `np.asarray(result)` gives it too,
            and `float(result)` the single score of a one-image result.
        normalized: float64 [N] in [0, 1], 1 = best (the score range mapped, lower-is-better models flipped).
        sources: [N] a file's path, or a label such as "<array 2>", "<array 0>[5]" (image 5 of a batch), "<bytes 1>".
        input_index: int [N] the position in `inputs` each row came from (0 for a single input).
        crops: int [N] crops averaged into each score (0 where scoring failed).
        crop_scores: with `crop_scores=True`, [N] float64 arrays [crops] (None where scoring failed); else None.
        errors: [(row, source, reason)] for every row that could not be scored.
        model, score_range, higher_better, precision: what scored them.
    """

    scores: np.ndarray
    normalized: np.ndarray
    sources: list
    input_index: np.ndarray
    crops: np.ndarray
    crop_scores: Optional[list]
    errors: list
    model: str
    score_range: tuple
    higher_better: bool
    precision: str = "fp32"

    @property
    def ok(self) -> np.ndarray:
        """bool [N]: the rows that were scored."""
        return np.isfinite(self.scores)

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self):
        return iter(self.scores.tolist())

    def __getitem__(self, i):
        return self.scores[i]

    def __array__(self, dtype=None, copy=None):
        return self.scores.astype(dtype) if dtype is not None else self.scores.copy()

    def __float__(self) -> float:
        if len(self.scores) != 1:
            raise TypeError(f"float() needs exactly one image, this result holds {len(self.scores)}; use .scores")
        if self.errors:
            raise ValueError(f"{self.sources[0]} could not be scored: {self.errors[0][2]}")
        return float(self.scores[0])

    def to_pandas(self):
        """A DataFrame: source, input_index, score, score_normalized, crops, error (and crop_scores when asked)."""
        import pandas as pd

        reasons = {row: reason for row, _, reason in self.errors}
        df = pd.DataFrame({"source": self.sources, "input_index": self.input_index, "score": self.scores,
                           "score_normalized": self.normalized, "crops": self.crops,
                           "error": [reasons.get(i) for i in range(len(self.scores))]})
        if self.crop_scores is not None:
            df["crop_scores"] = self.crop_scores
        return df

    def __repr__(self) -> str:
        n, bad = len(self.scores), len(self.errors)
        return f"Scores({n} item{'s' if n != 1 else ''}: {n - bad} scored, {bad} failed)"

def write_rows(rows: list, out: os.PathLike) -> Path:
    """Writes scores as CSV (`.csv`) or JSON lines (`.jsonl` / `.json`), atomically (`crop_scores`, when present: a
    JSON list in JSON lines, space-separated values in CSV)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    elif out.suffix.lower() in (".csv", ".tsv", ".txt"):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            write_csv(rows, f, delimiter="\t" if out.suffix.lower() == ".tsv" else ",")
    else:
        raise ValueError(f"--out {out}: use a .csv or .jsonl file name")
    os.replace(tmp, out)
    return out


def write_csv(rows: list, f, delimiter: str = ",") -> None:
    """The CSV table of `score_paths` rows on an open text file (header, then one row per image)."""
    names = ["path", "score", "score_normalized", "crops"] + (["crop_scores"] if rows and "crop_scores" in rows[0] else [])
    w = csv.DictWriter(f, fieldnames=names, delimiter=delimiter)
    w.writeheader()
    for r in rows:
        if "crop_scores" in r:
            r = {**r, "crop_scores": " ".join(f"{v:.6g}" for v in r["crop_scores"])}
        w.writerow(r)
