"""Reports: results.json / results.csv / predictions.csv / summary.md and PNG plots of one evaluation, and a side-by-side table of
several (`keras-iqa report`). Plots use matplotlib's Agg backend (no display needed).

Plots: `scatter.png` (prediction vs MOS with the fitted 5-parameter logistic curve), `per_range.png` (per-ACR-bin SROCC /
PLCC bars, REQA Table I), `error_hist.png` (|pred - MOS| on 0-100, REQA Fig. 7), `confusion.png` (ACR categories, REQA Fig. 6).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from keras_iqa import metrics as M

__all__ = ["write_report", "plot_scatter", "plot_per_range", "plot_error_hist", "plot_confusion", "load_results",
           "compare_table", "to_markdown", "method_facts", "learned_verdict", "method_paragraph",
           "demo_report_markdown", "write_demo_report"]

_COLS = ("srocc", "plcc", "krocc", "plcc_logistic4", "plcc_logistic5", "rmse", "mae", "n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _clean(o):
    """NaN/inf -> None so results.json is strict JSON."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (float, np.floating)) and not math.isfinite(float(o)):
        return None
    return o


def _atomic_write(path: Path, text: str):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_scatter(pred, mos, path, title: str = "", params: int = 5) -> Path:
    """Scatter of prediction vs MOS with the fitted logistic mapping curve."""
    plt = _plt()
    p, m = np.asarray(pred, np.float64), np.asarray(mos, np.float64)
    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=100)
    ax.scatter(p, m, s=6, alpha=0.5, edgecolors="none", label="images")
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", M.LogisticFitWarning)
            fit = M.fit_logistic(p, m, params)
        xs = np.linspace(p.min(), p.max(), 200)
        ax.plot(xs, fit(xs), "r-", lw=1.5, label=f"{'logistic-%d' % params if fit.ok else 'linear'} fit")
        ax.set_title(f"{title}  SROCC={M.srocc(p, m):.3f}  PLCC={M.plcc(p, m):.3f}".strip(), fontsize=9)
    except M.MetricInputError as e:
        ax.set_title(f"{title} ({e})"[:90], fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("MOS")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_per_range(fine: dict, path, title: str = "") -> Path:
    """Per-range SROCC and PLCC bars (one pair per ACR bin, n on top)."""
    plt = _plt()
    bins = fine["bins"]
    x = np.arange(len(bins))
    s = np.array([b["srocc"] if b["srocc"] is not None else np.nan for b in bins], np.float64)
    pl = np.array([b["plcc"] if b["plcc"] is not None else np.nan for b in bins], np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.bar(x - 0.2, np.nan_to_num(s), 0.4, label="SROCC")
    ax.bar(x + 0.2, np.nan_to_num(pl), 0.4, label="PLCC")
    for i, b in enumerate(bins):
        ax.text(i, 1.02, f"n={int(b['n']) if b['n'] is not None and np.isfinite(b['n']) else 0}", ha="center", fontsize=7)
    ax.set_xticks(x, [f"{b['label']}\n{b['low']:g}-{b['high']:g}" for b in bins], fontsize=8)
    ax.set_ylim(min(0.0, np.nanmin(np.r_[s, pl, 0.0])) - 0.05, 1.12)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_title(f"per-range correlation {title}".strip(), fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_error_hist(fine: dict, path, title: str = "") -> Path:
    """Histogram of |pred - MOS| on the 0-100 scale."""
    plt = _plt()
    h = fine["error_histogram"]
    edges, counts = np.asarray(h["edges"]), np.asarray(h["counts"])
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=100)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="white")
    ax.set_xlabel("|prediction - MOS| (0-100 scale)")
    ax.set_ylabel("images")
    last = int(np.flatnonzero(counts).max(initial=0)) + 2 if counts.any() else len(edges) - 1
    ax.set_xlim(0, edges[min(max(1, last), len(edges) - 1)])  # up to the last non-empty bin (+1), within the edges
    ax.set_title(f"absolute error {title}".strip(), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_confusion(fine: dict, path, title: str = "") -> Path:
    """ACR category confusion: rows MOS category, columns predicted category (row-normalised colours, counts written)."""
    plt = _plt()
    c = np.asarray(fine["confusion"]["matrix"], np.float64)
    labels = fine["confusion"]["labels"]
    norm = c / np.maximum(c.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            ax.text(j, i, int(c[i, j]), ha="center", va="center", fontsize=8, color="k" if norm[i, j] < 0.6 else "w")
    ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted category")
    ax.set_ylabel("MOS category")
    ax.set_title(f"ACR confusion (acc {fine['confusion']['accuracy']:.2f}) {title}".strip(), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _fmt(v, nd=4):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{v:.{nd}f}"


def to_markdown(results: dict) -> str:
    """Markdown summary of one evaluation's results dict."""
    r = results
    lines = [f"# {r.get('protocol', '?')} evaluation on {r.get('dataset', '?')}", "",
             f"sources: {', '.join(s['name'] for s in r.get('sources', []))}  ", f"data: `{r.get('data_dir')}`", ""]
    summ = r.get("summary") or {}
    if summ:
        lines += ["| metric | median | mean +- std | min | max | n |", "|---|---|---|---|---|---|"]
        for k, v in summ.items():
            lines.append(f"| {k} | {_fmt(v['median'])} | {_fmt(v['mean'])} +- {_fmt(v['std'])} | {_fmt(v['min'])} | "
                         f"{_fmt(v['max'])} | {v['n']} |")
        lines.append("")
    lines += ["| row | source | n | SROCC | KROCC | PLCC | PLCC (log-4) | PLCC (log-5) | RMSE (log-5) | MAE |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in r.get("rows", []):
        lines.append(f"| {row['row']} | {row['source']} | {row['n']} | {_fmt(row.get('srocc'))} | {_fmt(row.get('krocc'))} | "
                     f"{_fmt(row.get('plcc'))} | {_fmt(row.get('plcc_logistic4'))} | {_fmt(row.get('plcc_logistic5'))} | "
                     f"{_fmt(row.get('rmse'), 3)} | {_fmt(row.get('mae'), 3)} |")
    fg = r.get("fine_grained")
    if fg:
        head = f"## Fine-grained (range effect; predictions to 0-100 by `{fg['pred_mapping']}`; {fg.get('aggregate', '')})"
        lines += ["", head,
                  "", "| range | n | SROCC | PLCC | MAE (0-100) |", "|---|---|---|---|---|"]
        for b in fg["bins"]:
            lines.append(f"| {b['label']} ({b['low']:g}-{b['high']:g}) | {_fmt(b['n'], 0)} | {_fmt(b['srocc'])} | "
                         f"{_fmt(b['plcc'])} | {_fmt(b['mae'], 2)} |")
        lines.append(f"\nACR category accuracy: {fg['confusion']['accuracy']:.3f}")
    if r.get("per_distortion"):
        lines += ["", "## Per distortion type", "", "| type | name | n | SROCC | PLCC |", "|---|---|---|---|---|"]
        for d in r["per_distortion"]:
            lines.append(f"| {d['distortion_type']} | {d['distortion_name']} | {_fmt(d['n'], 0)} | {_fmt(d['srocc'])} | "
                         f"{_fmt(d['plcc'])} |")
    sel = r.get("official_code_selection")
    if sel:
        lines += ["", "## Best epoch per run (official REQA code selection)", "", sel["note"], ""]
        for k, v in sel["summary"].items():
            lines.append(f"- {k}: median {_fmt(v['median'])}, mean {_fmt(v['mean'])} +- {_fmt(v['std'])} over {v['n']} runs")
    if r.get("significance"):
        lines += ["", "## Significance", ""]
        for s in r["significance"]:
            note = f" ({s['note']})" if s.get("note") else ""
            lines.append(f"- {s['test']}: p = {_fmt(s.get('p_value'))} -> {s['verdict']}{note}")
    return "\n".join(lines) + "\n"


def write_report(result, out_dir, title: Optional[str] = None, plots: bool = True) -> dict:
    """Writes results.json, results.csv (one line per row), predictions.csv, summary.md and the PNG plots.
    Returns {file name: path}."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = _clean(result.results)
    files = {}
    files["results.json"] = out / "results.json"
    _atomic_write(files["results.json"], json.dumps(results, indent=2, default=_json_default))
    flat = [{k: v for k, v in row.items() if not isinstance(v, (dict, list))} for row in results.get("rows", [])]
    files["results.csv"] = out / "results.csv"
    _atomic_write(files["results.csv"], pd.DataFrame(flat).to_csv(index=False))
    preds = result.predictions
    if preds is not None and len(preds):
        files["predictions.csv"] = out / "predictions.csv"
        _atomic_write(files["predictions.csv"], preds.to_csv(index=False))
    files["summary.md"] = out / "summary.md"
    _atomic_write(files["summary.md"], to_markdown(results))
    if plots and preds is not None and len(preds):
        title = title or f"{results.get('dataset', '')}"
        # the scatter shows the row closest to the median SROCC (one model's predictions, not a mix of splits)
        rows = results.get("rows", [])
        sr = np.array([r.get("srocc") if r.get("srocc") is not None else np.nan for r in rows], np.float64)
        pick = rows[int(np.nanargmin(np.abs(sr - np.nanmedian(sr))))]["row"] if np.isfinite(sr).any() else None
        sel = preds[preds["row"] == pick] if pick is not None and "row" in preds else preds
        files["scatter.png"] = plot_scatter(sel.pred.values, sel.target.values, out / "scatter.png",
                                            title=f"{title} {pick or ''}".strip())
        fg = results.get("fine_grained")
        if fg:
            files["per_range.png"] = plot_per_range(fg, out / "per_range.png", title)
            files["error_hist.png"] = plot_error_hist(fg, out / "error_hist.png", title)
            files["confusion.png"] = plot_confusion(fg, out / "confusion.png", title)
    return files


# ------------------------------------------------------------------------------------------------------- side by side
def load_results(path) -> list:
    """results.json files of a run or report directory (itself, then one level of sub-directories) -> [(label, dict)]."""
    p = Path(path)
    if p.is_file():
        cands = [p]
    elif p.is_dir():
        cands = ([p / "results.json"] if (p / "results.json").is_file() else []) + sorted(p.glob("*/results.json"))
    else:
        raise FileNotFoundError(f"{path} not found")
    if not cands:
        raise FileNotFoundError(f"{path}: no results.json inside it or its sub-directories "
                                "(run `keras-iqa evaluate ... --report DIR`)")
    out = []
    for c in cands:
        try:
            with open(c, encoding="utf-8") as f:
                res = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{c}: not valid JSON ({e})") from e
        label = str(c.parent) if c.parent != p or p.is_file() else str(p)
        out.append((label, res))
    return out


def _summary_row(res: dict, stat: str) -> dict:
    row = {}
    if "protocol" in res:
        row.update(protocol=res["protocol"], dataset=res.get("dataset"))
        rows = res.get("rows", [])
        row["rows"] = len(rows)
        for k in _COLS[:-1]:
            s = (res.get("summary") or {}).get(k)
            if s:
                row[k] = s[stat]
                if stat != "median" and len(rows) > 1:
                    row[f"{k}_std"] = s["std"]
        fg = res.get("fine_grained")
        if fg:
            for b in fg["bins"]:
                row[f"srocc[{b['label']}]"] = b["srocc"]
    else:  # a training results.json: its flat numbers
        row.update({k: v for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return row


def compare_table(paths: Sequence, stat: str = "median"):
    """One line per results.json found under `paths`: protocol, dataset, summary metrics (`stat`: median | mean) and per-range
    SROCC. Returns a DataFrame."""
    import pandas as pd

    if stat not in ("median", "mean"):
        raise ValueError(f"stat must be 'median' or 'mean', got {stat!r}")
    lines = []
    for path in paths:
        for label, res in load_results(path):
            lines.append({"run": label, **_summary_row(res, stat)})
    return pd.DataFrame(lines)


def table_markdown(df) -> str:
    """`df` as a GitHub markdown table (pandas `DataFrame.to_markdown`, through tabulate): floats with 4 decimals
    (`_fmt`), missing values "-", other cells as text (never re-parsed as numbers)."""
    cells = df.astype(object).map(lambda v: _fmt(v) if isinstance(v, (float, np.floating)) else "-" if v is None else str(v))
    return cells.to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n"


# ------------------------------------------------------------------------------------------------------- demo report
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
