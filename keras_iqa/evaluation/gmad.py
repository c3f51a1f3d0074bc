"""gMAD, group maximum differentiation competition (Ma et al., "Group MAD competition", TPAMI 2018), as used by HCL.

Two models score an unlabeled pool. For each of `levels` quality levels of the *defender* (quantiles of its scores), the images
whose defender score lies within `tol` of the level form a set the defender rates as equally good; among them the *attacker*
picks the pair with the largest difference of its own scores (its max and its min). Then the roles swap. A human looking at
the pairs judges who is right: if the pair looks equally good the attacker failed; if clearly different, the defender failed.

`gmad_pairs(scores_a, scores_b)` works on score arrays (no model needed); `gmad(model_a, model_b, images, out_dir)` scores a
folder of images (grid crops averaged, the deterministic test policy) and writes `gmad.json` + `gmad_sheet.png` (contact sheet).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image
from scipy import stats

from data_pipeline.images import load_image
from data_pipeline.test_time import TestTimeCrops
from keras_iqa.evaluation.predict import make_score_fn

__all__ = ["gmad_pairs", "score_images", "contact_sheet", "gmad"]


def _rank01(x):
    """Scores to [0, 1] by rank (scale-free, so `tol` means the same for both models)."""
    r = stats.rankdata(x, method="average")
    return (r - 1) / max(1, len(x) - 1)


def gmad_pairs(scores_a, scores_b, levels: int = 5, tol: float = 0.02, names: Sequence[str] = ("A", "B")) -> list:
    """gMAD pairs in both roles.

    Args:
        scores_a, scores_b: scores of the same images (any scales; both higher = better, negate a lower-better model first).
        levels: defender quality levels (centres at quantiles (k + 0.5) / levels).
        tol: half-width of the equal-quality window in the defender's rank units (0.02 = 2 % of the pool).

    Returns: a list of dicts {defender, attacker, level, i_high, i_low (image indices: attacker's best / worst), defender_scores,
    attacker_scores, attacker_gap (in attacker rank units), defender_gap}.
    """
    a, b = np.asarray(scores_a, np.float64).reshape(-1), np.asarray(scores_b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"scores_a has {a.size} values, scores_b {b.size}: score the same images with both models")
    if a.size < 4:
        raise ValueError(f"gMAD needs a pool of at least 4 images, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("gMAD: non-finite scores in the pool")
    ra, rb = _rank01(a), _rank01(b)
    out = []
    for (dname, aname), (rd, rt, sd, st) in zip(((names[0], names[1]), (names[1], names[0])), ((ra, rb, a, b), (rb, ra, b, a))):
        centres = (np.arange(levels) + 0.5) / levels
        # [levels, N] windows of equal defender quality; the attacker's extremes inside each window, vectorised
        win = np.abs(rd[None, :] - centres[:, None]) <= tol
        hi = np.where(win, rt[None, :], -np.inf).argmax(1)
        lo = np.where(win, rt[None, :], np.inf).argmin(1)
        for k in range(levels):
            if win[k].sum() < 2 or hi[k] == lo[k]:
                continue
            out.append({"defender": dname, "attacker": aname, "level": int(k), "i_high": int(hi[k]), "i_low": int(lo[k]),
                        "defender_scores": [float(sd[hi[k]]), float(sd[lo[k]])],
                        "attacker_scores": [float(st[hi[k]]), float(st[lo[k]])],
                        "attacker_gap": float(rt[hi[k]] - rt[lo[k]]), "defender_gap": float(abs(rd[hi[k]] - rd[lo[k]])),
                        "window_size": int(win[k].sum())})
    return out


def score_images(model, paths: Sequence, num_crops: Optional[int] = None, batch_size: int = 32) -> np.ndarray:
    """Image scores of `paths` in `model`'s own scale, through its test-time contract (`data_pipeline.test_time`;
    `num_crops` overrides its number of crops)."""
    contract = TestTimeCrops.from_model(model, num_crops=num_crops)
    crop, n = contract.crop_function(), contract.num_crops
    fn = make_score_fn(model, contract.crop_size)
    per = max(1, batch_size // n)
    out = []
    for s in range(0, len(paths), per):
        crops = np.concatenate([np.asarray(crop(load_image(p))) for p in paths[s:s + per]])
        out.append(contract.image_score(np.asarray(fn(crops)).reshape(-1, n)))
    return np.concatenate(out) if out else np.zeros(0)


def contact_sheet(pairs: list, paths: Sequence, path, thumb: int = 256) -> Path:
    """One row per pair (attacker's best | attacker's worst) with both models' scores; PNG."""
    matplotlib.use("Agg", force=True)

    rows = max(1, len(pairs))
    fig, axes = plt.subplots(rows, 2, figsize=(6, 3 * rows), dpi=max(60, thumb // 3), squeeze=False)
    for r, p in enumerate(pairs):
        for col, (idx, tag) in enumerate(((p["i_high"], "attacker best"), (p["i_low"], "attacker worst"))):
            im = Image.fromarray(load_image(paths[idx]))
            im.thumbnail((thumb, thumb))
            ax = axes[r, col]
            ax.imshow(np.asarray(im))
            ax.set_axis_off()
            ax.set_title(f"{p['defender']} (defender, level {p['level']}) = {p['defender_scores'][col]:.3g}\n"
                         f"{p['attacker']} ({tag}) = {p['attacker_scores'][col]:.3g}\n{Path(paths[idx]).name}", fontsize=7)
    if not pairs:
        axes[0, 0].text(0.5, 0.5, "no pairs (pool too small for the window)", ha="center")
        axes[0, 0].set_axis_off()
        axes[0, 1].set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def gmad(model_a, model_b, images: Sequence, out_dir, levels: int = 5, tol: float = 0.02, num_crops: Optional[int] = None,
         names: Optional[Sequence[str]] = None, scores: Optional[tuple] = None) -> dict:
    """Scores `images` (paths) with both models (or uses `scores=(a, b)`), finds gMAD pairs, writes gmad.json + gmad_sheet.png."""
    names = list(names or (getattr(model_a, "name", "A"), getattr(model_b, "name", "B")))
    if names[0] == names[1]:
        names = [names[0] + "_A", names[1] + "_B"]
    paths = [str(p) for p in images]
    if scores is None:
        sa, sb = score_images(model_a, paths, num_crops), score_images(model_b, paths, num_crops)
        # orient both higher = better
        sa = sa if getattr(model_a, "higher_better", True) else -sa
        sb = sb if getattr(model_b, "higher_better", True) else -sb
    else:
        sa, sb = (np.asarray(s, np.float64) for s in scores)
    pairs = gmad_pairs(sa, sb, levels=levels, tol=tol, names=names)
    for p in pairs:
        p["image_high"], p["image_low"] = paths[p["i_high"]], paths[p["i_low"]]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sheet = contact_sheet(pairs, paths, out / "gmad_sheet.png")
    res = {"models": names, "pool": len(paths), "levels": levels, "tol": tol, "pairs": pairs, "sheet": str(sheet)}
    (out / "gmad.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    return res
