"""Reports: results.json / results.csv / predictions.csv / summary.md and PNG plots of one evaluation, and a side-by-side table of
several (`keras-iqa report`). Plots use matplotlib's Agg backend (no display needed). The demo's report.md is
`keras_iqa.evaluation.demo_report` (its names are re-exported here).

Plots: `scatter.png` (prediction vs MOS with the fitted 5-parameter logistic curve), `per_range.png` (per-ACR-bin SROCC /
PLCC bars, REQA Table I), `error_hist.png` (|pred - MOS| on 0-100, REQA Fig. 7), `confusion.png` (ACR categories, REQA Fig. 6).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence
import warnings

import numpy as np

from keras_iqa import metrics as M
from keras_iqa.evaluation.demo_report import (LEARNED_SROCC, NOT_LEARNED_SROCC,  # noqa: F401 (re-exported)
                                              demo_report_markdown, learned_verdict, method_facts, method_paragraph,
                                              on_scale, write_demo_report)
from keras_iqa.evaluation.formatting import _atomic_write, _clean, _fmt, _json_default

__all__ = ["write_report", "plot_scatter", "plot_per_range", "plot_error_hist", "plot_confusion", "load_results",
           "compare_table", "to_markdown", "method_facts", "learned_verdict", "method_paragraph",
           "demo_report_markdown", "write_demo_report"]

_COLS = ("srocc", "plcc", "krocc", "plcc_logistic4", "plcc_logistic5", "rmse", "mae", "n")


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
