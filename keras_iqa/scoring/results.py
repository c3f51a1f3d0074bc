"""What scoring returns and writes: `Scores` (`keras_iqa.score`) and the CSV / JSON-lines files of `keras-iqa score`.

A score outside the model's declared `score_range` is kept as the model gave it and flagged: `Scores.out_of_range`, the
`out_of_range` column of `keras-iqa score`, and one warning (`flag_out_of_range`); `score_normalized` stays clipped to
[0, 1] as the exported serving signatures define it. `check_scores_target` refuses to replace a file that keras-iqa did not
write: one whose first line is not a header `keras-iqa score` writes (docs/scoring.md).
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

#: The columns `keras-iqa score` writes, in order (a file is keras-iqa's when its header is these, `crop_scores` optional).
COLUMNS = ("path", "score", "score_normalized", "out_of_range", "crops", "crop_scores")
_CSV_SUFFIXES, _JSON_SUFFIXES = (".csv", ".tsv", ".txt"), (".jsonl", ".json", ".ndjson")


def out_of_range(scores, score_range) -> np.ndarray:
    """bool [N]: the finite scores outside `score_range` (lo, hi)."""
    s = np.asarray(scores, np.float64)
    lo, hi = float(min(score_range)), float(max(score_range))
    return np.isfinite(s) & ((s < lo) | (s > hi))


def flag_out_of_range(scores, score_range, sources, model: str = "") -> np.ndarray:
    """`out_of_range(scores, score_range)`, with one warning naming how many, the range and the first such image."""
    mask = out_of_range(scores, score_range)
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        lo, hi = score_range
        warnings.warn(f"{int(mask.sum())} of {len(mask)} score(s) fall outside the range {lo:g}..{hi:g} that the model "
                      f"{model or ''} declares (e.g. {sources[i]}: {float(np.asarray(scores)[i]):.4g}); they are kept as "
                      "given and flagged out_of_range (score_normalized is clipped to 0..1)", UserWarning, stacklevel=2)
    return mask


def flag_rows(rows: list, score_range, model: str = "") -> list:
    """`score_paths` rows with an `out_of_range` field each (after `score_normalized`), and one warning when any is."""
    mask = flag_out_of_range([r["score"] for r in rows], score_range, [r["path"] for r in rows], model)
    out = []
    for r, flag in zip(rows, mask.tolist()):
        row = {k: r[k] for k in ("path", "score", "score_normalized") if k in r}
        row["out_of_range"] = bool(flag)
        row.update({k: v for k, v in r.items() if k not in row})
        out.append(row)
    return out


def _is_own_output(path: Path) -> bool:
    """True for an empty file or one whose first line is a header / first row of `keras-iqa score`'s output."""
    with open(path, "rb") as f:
        first = f.readline(64 * 1024).decode("utf-8", errors="replace").strip()
    if not first:
        return path.stat().st_size == 0
    if path.suffix.lower() in _JSON_SUFFIXES:
        try:
            keys = list(json.loads(first))
        except (ValueError, TypeError):
            return False
        return keys[:3] == list(COLUMNS[:3]) and set(keys) <= set(COLUMNS)
    names = next(csv.reader([first], delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    return names[:3] == list(COLUMNS[:3]) and set(names) <= set(COLUMNS)


def check_scores_target(path: os.PathLike, overwrite: bool = False) -> None:
    """A ValueError when `path` exists and was not written by `keras-iqa score` (unless `overwrite`): a label sheet or
    any other file is never replaced by a score table."""
    p = Path(path)
    if overwrite or not p.exists():
        return
    if p.is_dir():
        raise ValueError(f"--scores {path} is a folder: give a .csv or .jsonl file name")
    if not _is_own_output(p):
        with open(p, "rb") as f:
            first = f.readline(200).decode("utf-8", errors="replace").strip()
        raise ValueError(f"--scores {path} exists and was not written by keras-iqa score (its first line is {first!r}): "
                         "choose another file name, or add --overwrite to replace it")


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
        out_of_range: bool [N] (a property) scores outside `score_range`: kept as the model gave them, flagged, and
            warned about once when the result is made; their `normalized` value is clipped to 0 or 1.
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

    def __post_init__(self):
        flag_out_of_range(self.scores, self.score_range, self.sources, self.model)

    @property
    def out_of_range(self) -> np.ndarray:
        """bool [N]: the scores outside the model's `score_range` (see the attributes)."""
        return out_of_range(self.scores, self.score_range)

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
        """A DataFrame: source, input_index, score, score_normalized, out_of_range, crops, error (and crop_scores when
        asked)."""
        import pandas as pd

        reasons = {row: reason for row, _, reason in self.errors}
        df = pd.DataFrame({"source": self.sources, "input_index": self.input_index, "score": self.scores,
                           "score_normalized": self.normalized, "out_of_range": self.out_of_range, "crops": self.crops,
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
    names = [c for c in COLUMNS if c in ("path", "score", "score_normalized", "crops") or (rows and c in rows[0])]
    w = csv.DictWriter(f, fieldnames=names, delimiter=delimiter)
    w.writeheader()
    for r in rows:
        if "crop_scores" in r:
            r = {**r, "crop_scores": " ".join(f"{v:.6g}" for v in r["crop_scores"])}
        w.writerow(r)
