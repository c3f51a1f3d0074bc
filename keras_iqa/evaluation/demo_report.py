"""The demo's report.md (`keras-iqa demo`): each method's numbers from its `keras-iqa evaluate --report` folder, the verdict
they support (learned / weakly / not), the sentences that say what each number means, the plots and the step timings."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from keras_iqa.evaluation.formatting import _atomic_write, _fmt

#: Held-out SROCC at or above which the demo report says a method learned (the demo's target), and below which it says the
#: method did NOT learn (between the two: learned only weakly).
LEARNED_SROCC = 0.5
NOT_LEARNED_SROCC = 0.2


def method_facts(report_dir) -> dict:
    """The numbers the demo report states for one `keras-iqa evaluate --report` folder: summary SROCC / PLCC / KROCC / MAE
    (the dataset's scale), the held-out MOS mean / std / range, the prediction range on the dataset's scale, and the MAE of the
    best constant prediction (the held-out median). Missing numbers are NaN."""
    import pandas as pd

    d = Path(report_dir)
    nan = float("nan")
    facts = {k: nan for k in ("srocc", "plcc", "krocc", "mae", "rmse", "mos_mean", "mos_std", "mos_min", "mos_max",
                              "pred_min", "pred_max", "pred_std", "constant_mae")}
    facts.update(n=0, score_range=None, pred_scale=None)
    try:
        res = json.loads((d / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return facts
    summ = res.get("summary") or {}
    for k in ("srocc", "plcc", "krocc", "mae", "rmse"):
        v = (summ.get(k) or {}).get("median")
        facts[k] = float(v) if v is not None else nan
    facts["score_range"] = res.get("score_range")
    rows = res.get("rows") or []
    if rows:
        facts["pred_scale"] = rows[0].get("pred_scale")
    try:
        preds = pd.read_csv(d / "predictions.csv")
    except (OSError, ValueError):
        return facts
    if rows and "row" in preds and (preds["row"] == rows[0].get("row")).any():
        preds = preds[preds["row"] == rows[0]["row"]]
    mos = preds["target"].to_numpy(np.float64)
    pred = preds["pred_data_scale" if "pred_data_scale" in preds else "pred"].to_numpy(np.float64)
    ok = np.isfinite(mos) & np.isfinite(pred)
    mos, pred = mos[ok], pred[ok]
    facts["n"] = int(mos.size)
    if mos.size:
        facts.update(mos_mean=float(mos.mean()), mos_std=float(mos.std(ddof=1)) if mos.size > 1 else 0.0,
                     mos_min=float(mos.min()), mos_max=float(mos.max()), pred_min=float(pred.min()), pred_max=float(pred.max()),
                     pred_std=float(pred.std(ddof=1)) if pred.size > 1 else 0.0,
                     constant_mae=float(np.abs(mos - np.median(mos)).mean()))
        if not math.isfinite(facts["mae"]):
            facts["mae"] = float(np.abs(pred - mos).mean())
    return facts


def learned_verdict(srocc) -> str:
    """"learned" | "weak" | "not learned" for a held-out SROCC (NaN: not learned)."""
    if srocc is None or not math.isfinite(float(srocc)) or srocc < NOT_LEARNED_SROCC:
        return "not learned"
    return "learned" if srocc >= LEARNED_SROCC else "weak"


def on_scale(facts: dict) -> bool:
    """Predictions are on the MOS scale when their MAE is below the held-out MOS standard deviation."""
    mae, std = facts.get("mae"), facts.get("mos_std")
    return mae is not None and std is not None and math.isfinite(mae) and math.isfinite(std) and mae < std


def _srocc_halfwidth(n: int) -> float:
    """Approximate 95 % half-width of a Spearman correlation near 0 on n items (Fisher z, sigma ~ 1.03 / sqrt(n - 3))."""
    return float("nan") if n <= 3 else float(np.tanh(1.96 * 1.03 / math.sqrt(n - 3)))


def method_paragraph(label: str, f: dict) -> str:
    """Sentences about one method whose wording depends on its numbers (learned / weak / did NOT learn; on the MOS scale or
    NOT)."""
    s, v = f.get("srocc", float("nan")), learned_verdict(f.get("srocc"))
    n = f.get("n", 0)
    if v == "learned":
        out = [f"**{label} learned**: its held-out SROCC is {_fmt(s, 3)} (PLCC {_fmt(f.get('plcc'), 3)}), at or above the "
               f"{LEARNED_SROCC:g} this demo aims for, so it ranks the {n} held-out images (photos it never saw) largely in the "
               "order of their pseudo-MOS."]
    elif v == "weak":
        out = [f"**{label} learned only weakly**: its held-out SROCC is {_fmt(s, 3)} (PLCC {_fmt(f.get('plcc'), 3)}), better "
               f"than chance but below the {LEARNED_SROCC:g} this demo aims for; treat its ranking as unreliable."]
    else:
        why = "no SROCC could be computed (the run failed or its predictions are constant)" if not math.isfinite(s) else \
            f"its held-out SROCC is {_fmt(s, 3)}, within noise of 0 for {n} images"
        out = [f"**{label} did NOT learn**: {why}; its ranking of the held-out images is no better than a guess, and the "
               "number says nothing about the method beyond this failed run."]
    mae, std = f.get("mae"), f.get("mos_std")
    if on_scale(f):
        out.append(f"Its predictions are on the dataset's MOS scale: MAE {_fmt(mae, 2)} is below the held-out MOS standard "
                   f"deviation {_fmt(std, 2)} (predicting the held-out median for every image would give MAE "
                   f"{_fmt(f.get('constant_mae'), 2)}).")
    else:
        out.append(f"Its predictions are NOT on the MOS scale: MAE {_fmt(mae, 2)} is not below the held-out MOS standard "
                   f"deviation {_fmt(std, 2)} (predictions span {_fmt(f.get('pred_min'), 1)} to {_fmt(f.get('pred_max'), 1)}, "
                   f"the MOS {_fmt(f.get('mos_min'), 1)} to {_fmt(f.get('mos_max'), 1)}).")
    ps, ms = f.get("pred_std"), f.get("mos_std")
    if ps is not None and ms is not None and math.isfinite(ps) and math.isfinite(ms) and ms > 0 and ps < 0.05 * ms:
        out.append(f"Its predictions barely vary (standard deviation {_fmt(ps, 3)} against {_fmt(ms, 2)} for the MOS): the "
                   "network has collapsed to a near-constant output.")
    return " ".join(out)


def _rel(path, start) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def demo_report_markdown(out_dir, methods: Sequence[dict], info: dict) -> str:
    """The demo's report.md: what ran, one line per method with its numbers and verdict, the sentences that say what each
    number means (depending on the numbers), the plots inline, what the numbers do NOT show, and the step timings.

    `methods`: dicts with `name`, `label` (e.g. "MetaIQA"), `card` (registry card), `report_dir` (an evaluate --report folder),
    `training` (one sentence) and optionally `facts` (else read with `method_facts`). `info`: `budget`, `seed`, `images`,
    `references` (train, test), `types`, `levels`, `crop`, and optionally `steps` [(title, seconds)], `seconds`, `best`,
    `exports` {label: path}, `parity_missed`, `scores` [paths]. Every path in the text is relative to `out_dir`."""
    out_dir = Path(out_dir)
    ms = [dict(m, facts=m.get("facts") or method_facts(m["report_dir"])) for m in methods]
    n_test = max((m["facts"]["n"] for m in ms), default=0)
    tr, te = info.get("references", ("?", "?"))
    verdicts = {m["label"]: learned_verdict(m["facts"]["srocc"]) for m in ms}
    learned = [k for k, v in verdicts.items() if v == "learned"]
    failed = [k for k, v in verdicts.items() if v != "learned"]
    L = [f"# keras-iqa demo report ({info.get('budget', 'small')} budget, seed {info.get('seed', 0)})", ""]
    if failed:
        L.append(f"**Outcome: {', '.join(failed)} did not reach the target held-out SROCC of {LEARNED_SROCC:g}"
                 + (f"; {', '.join(learned)} did." if learned else ".") + "** See the per-method sections below.")
    else:
        L.append(f"**Outcome: all three methods learned to rank held-out images (held-out SROCC >= {LEARNED_SROCC:g}).** This "
                 "shows the training code works on this small task; it does not measure the methods (see *What the numbers do "
                 "not show*).")
    L += ["", "## What ran", "",
          f"The demo distorted the {int(tr) + int(te) if str(tr).isdigit() and str(te).isdigit() else '?'} "
          f"{info.get('photos', 'photos bundled with scikit-image')} with {info.get('types', '?')} KADID-10k distortion types at {info.get('levels', 5)} levels "
          f"({info.get('images', '?')} images) and labelled every distorted image with a *pseudo-MOS*: 100 x MS-SSIM between "
          "the image and its undistorted photo (a full-reference metric, computed, not a human opinion). The images of "
          f"{tr} photos were used for training and the images of the other {te} photos ({n_test} images) were held out: no "
          "network saw any version of a held-out photo. The same split is used for all three methods.", ""]
    for m in ms:
        L.append(f"- **{m['label']}** (`{m.get('card', '?')}`): {m.get('training', '')}")
    L += ["", ("Each network is a tiny version of the paper's (1/8 of the channels, one residual block per stage, randomly "
               "initialised: no ImageNet weights), trained for minutes on CPU. " if info.get("budget", "small") == "small" else
               "The networks are the papers' (ImageNet weights when cached), on a budget still far below the papers'. ")
          + "Each was then scored on the held-out images with "
          "`keras-iqa evaluate` (the model's test-time crops, averaged), and predictions on another scale than the dataset's "
          "0-100 (MetaIQA outputs 0-1) were mapped to it linearly before computing MAE.", "",
          "## Results on the held-out images", "",
          "| method | SROCC | PLCC | KROCC | MAE (0-100) | held-out MOS std | predictions (min - max) | verdict |",
          "|---|---|---|---|---|---|---|---|"]
    for m in ms:
        f = m["facts"]
        v = verdicts[m["label"]]
        v = {"learned": "learned", "weak": "weak", "not learned": "**did NOT learn**"}[v]
        scale = "" if on_scale(f) else ", **NOT on the MOS scale**"
        L.append(f"| {m['label']} | {_fmt(f['srocc'], 3)} | {_fmt(f['plcc'], 3)} | {_fmt(f['krocc'], 3)} | {_fmt(f['mae'], 2)} | "
                 f"{_fmt(f['mos_std'], 2)} | {_fmt(f['pred_min'], 1)} - {_fmt(f['pred_max'], 1)} | {v}{scale} |")
    hw = _srocc_halfwidth(n_test)
    mf = ms[0]["facts"] if ms else {}
    L += ["", "How to read the table: SROCC (Spearman) and KROCC (Kendall) measure whether a method puts the held-out images "
          "in the same order as their pseudo-MOS (1 = same order, 0 = unrelated, -1 = reversed); PLCC is the linear "
          "correlation of the predictions with the pseudo-MOS; MAE is the mean absolute error on the 0-100 scale, to compare "
          "with the spread of the held-out MOS (its standard deviation): a method whose MAE is below it predicts on the right "
          "scale. " + (f"The held-out pseudo-MOS is skewed towards the top of the scale (mean {_fmt(mf.get('mos_mean'), 1)}, "
                        f"range {_fmt(mf.get('mos_min'), 1)} to {_fmt(mf.get('mos_max'), 1)}): MS-SSIM stays high for "
                        "mild distortions. " if mf else "")
          + (f"With {n_test} images of {te} photos, one split, an SROCC is uncertain by about +-{hw:.2f} (95 %), so "
             "differences between the methods smaller than that mean nothing." if math.isfinite(hw) else ""), ""]
    for m in ms:
        L += [f"### {m['label']}", "", method_paragraph(m["label"], m["facts"]), ""]
        rd = Path(m["report_dir"])
        for png, alt in (("scatter.png", "prediction vs pseudo-MOS"), ("error_hist.png", "absolute error histogram")):
            if (rd / png).is_file():
                L.append(f"![{m['label']}: {alt}]({_rel(rd / png, out_dir)})")
        L += ["", f"Full evaluation: [{_rel(rd / 'summary.md', out_dir)}]({_rel(rd / 'summary.md', out_dir)}) "
              "(per distortion type, per quality range, ACR confusion).", ""]
    L += ["## What the numbers do not show", "",
          "- They are not a reproduction of MetaIQA, REQA or HCL: the papers train full-size ImageNet-initialised networks for "
          "hours on human-rated datasets (KonIQ-10k, LIVE Challenge, KADID-10k); here tiny random-init networks train for "
          "minutes on a few hundred images.",
          "- The targets are pseudo-labels from MS-SSIM, not human opinion. Learning to predict MS-SSIM without the reference, "
          f"on {info.get('types', '?')} synthetic distortion types, is a much easier and cleaner task than predicting human "
          "MOS of authentic photos.",
          "- The ranking of the three methods here says nothing about which method is better: their budgets (epochs, crops, "
          "learning rates) were chosen so that each learns within minutes, not to compare them fairly, and the held-out set "
          f"is {n_test} images of {te} photos.",
          "- A method that learned here shows that its training, evaluation and export code work end to end; a method that did "
          "not learn points at a problem in this run (budget, learning rate, a bug), not at the method.", ""]
    ex = info.get("exports") or {}
    if ex or info.get("best"):
        L += ["## Export and scoring", "",
              f"The method with the highest held-out SROCC ({info.get('best', '?')}) was exported and used to score a few images "
              "(one deliberately broken):", ""]
        for k, p in ex.items():
            L.append(f"- {k}: `{_rel(p, out_dir)}`")
        for p in info.get("scores") or []:
            L.append(f"- scores: [{_rel(p, out_dir)}]({_rel(p, out_dir)})")
        if info.get("parity_missed"):
            L.append("- note: the int8 TFLite model missed its parity target against the Keras model (see its parity.json).")
        L.append("")
    steps = info.get("steps") or []
    if steps:
        L += ["## Time per step", "", "Wall-clock seconds on this machine (shared CPUs make these noisy).", "",
              "| step | seconds |", "|---|---|"]
        L += [f"| {t} | {s:.0f} |" for t, s in steps]
        if info.get("seconds") is not None:
            L.append(f"| **total** | **{info['seconds']:.0f}** |")
        L.append("")
    L += ["Side-by-side table of every metric: [reports/comparison.md](reports/comparison.md). Machine-readable numbers: "
          "[summary.json](summary.json).", ""]
    text = "\n".join(L)
    return text.replace(str(out_dir.resolve()) + os.sep, "")  # belt and braces: no absolute path of the output folder


def write_demo_report(out_dir, methods: Sequence[dict], info: dict, name: str = "report.md") -> Path:
    """Writes `demo_report_markdown` to out_dir/name; returns the path."""
    path = Path(out_dir) / name
    _atomic_write(path, demo_report_markdown(out_dir, methods, info))
    return path
