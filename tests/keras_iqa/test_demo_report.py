"""The demo's report.md (keras_iqa.evaluation.demo_report.demo_report_markdown) and the demo's small helpers: fast, no training."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from keras_iqa.evaluation import reports as R


def _fake_report(d: Path, mos, pred, data_scale=None):
    """An evaluate --report folder: results.json (summary medians), predictions.csv and two placeholder PNGs."""
    d.mkdir(parents=True)
    shown = pred if data_scale is None else data_scale
    summ = {"srocc": stats.spearmanr(shown, mos)[0], "plcc": stats.pearsonr(shown, mos)[0],
            "krocc": stats.kendalltau(shown, mos)[0], "mae": float(np.abs(shown - mos).mean())}
    res = {"protocol": "splits", "dataset": "pseudo_msssim", "score_range": [0, 100], "rows": [{"row": "split_00", **summ}],
           "summary": {k: {"median": float(v), "mean": float(v), "std": 0.0, "min": float(v), "max": float(v), "n": 1}
                       for k, v in summ.items()}}
    (d / "results.json").write_text(json.dumps(res))
    df = pd.DataFrame({"image_id": [f"i{i}.png" for i in range(len(mos))], "target": mos, "pred": pred, "row": "split_00",
                       "source": d.name})
    if data_scale is not None:
        df["pred_data_scale"] = data_scale
    df.to_csv(d / "predictions.csv", index=False)
    for png in ("scatter.png", "error_hist.png"):
        (d / png).write_bytes(b"\x89PNG placeholder")
    (d / "summary.md").write_text("# summary\n")


@pytest.fixture
def demo_out(tmp_path):
    """A fake demo output: MetaIQA learned (0-1 outputs mapped to 0-100), REQA did not (off-scale, random), HCL collapsed."""
    rng = np.random.default_rng(0)
    mos = np.clip(100 - rng.gamma(1.5, 6.0, 80), 30, 100)
    reports = tmp_path / "out" / "reports"
    good = mos + rng.normal(0, 2.0, mos.size)
    _fake_report(reports / "metaiqa", mos, good / 100.0, data_scale=good)
    _fake_report(reports / "reqa", mos, rng.uniform(-6.4, -1.6, mos.size))
    _fake_report(reports / "hcl", mos, 5.5 + rng.normal(0, 1e-3, mos.size))
    methods = [dict(name=n, label=lab, card=f"{n}-tiny", report_dir=reports / n, training="trained briefly.")
               for n, lab in (("metaiqa", "MetaIQA"), ("reqa", "REQA"), ("hcl", "HCL (reconstruction)"))]
    info = {"budget": "small", "seed": 0, "images": 400, "references": (8, 2), "types": 8, "levels": 5, "crop": 96,
            "best": "metaiqa", "exports": {"SavedModel": tmp_path / "out" / "exports" / "savedmodel" / "metaiqa"},
            "scores": [tmp_path / "out" / "scores_savedmodel.csv"], "steps": [("1. synthesize", 30.0), ("3. train", 60.0)],
            "seconds": 90.0}
    return tmp_path / "out", methods, info


def _section(text: str, label: str) -> str:
    return text.split(f"### {label}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]


def test_demo_report_relative_paths_inline_plots_and_explanations(demo_out):
    out, methods, info = demo_out
    path = R.write_demo_report(out, methods, info)
    text = path.read_text()
    assert path == out / "report.md"
    # no absolute path anywhere; every link and image resolves relative to report.md
    assert str(out) not in text and str(out.parent) not in text
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links and all(not Path(p).is_absolute() for p in links)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) == 6 and all((out / p).is_file() for p in images)
    for n in ("metaiqa", "reqa", "hcl"):
        assert f"](reports/{n}/scatter.png)" in text
    # the explanatory sentences: what ran, what the numbers mean, what they do not
    for phrase in ("## What ran", "pseudo-MOS", "100 x MS-SSIM", "not a human opinion", "held out", "## What the numbers do not show",
                   "not a reproduction", "tiny", "random", "How to read the table", "uncertain by about", "## Time per step"):
        assert phrase in text, phrase


def test_demo_report_text_depends_on_the_numbers(demo_out):
    out, methods, info = demo_out
    text = R.demo_report_markdown(out, methods, info)
    meta, reqa, hcl = (_section(text, lab) for lab in ("MetaIQA", "REQA", "HCL (reconstruction)"))
    assert "**MetaIQA learned**" in meta and "did NOT learn" not in meta
    assert "on the dataset's MOS scale" in meta and "NOT on the MOS scale" not in meta
    assert "**REQA did NOT learn**" in reqa and "NOT on the MOS scale" in reqa
    assert "**HCL (reconstruction) did NOT learn**" in hcl and "collapsed to a near-constant output" in hcl
    assert "**Outcome: REQA, HCL (reconstruction) did not reach" in text
    table = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "**did NOT learn**" in table["REQA"] and "learned |" in table["MetaIQA"]
    # a weak SROCC gets its own wording; all learned -> the outcome line says so
    f = R.method_facts(out / "reports" / "metaiqa")
    assert "learned only weakly" in R.method_paragraph("X", {**f, "srocc": 0.3})
    assert "did NOT learn" in R.method_paragraph("X", {**f, "srocc": float("nan")})
    good = [dict(m, facts=f) for m in methods]
    assert "all three methods learned" in R.demo_report_markdown(out, good, info)


def test_method_facts_reads_the_data_scale(demo_out):
    out, _, _ = demo_out
    f = R.method_facts(out / "reports" / "metaiqa")
    assert f["n"] == 80 and f["pred_max"] > 50  # pred_data_scale (0-100), not the model's 0-1 output
    assert f["mae"] < f["mos_std"] and R.on_scale(f) and R.learned_verdict(f["srocc"]) == "learned"
    r = R.method_facts(out / "reports" / "reqa")
    assert not R.on_scale(r) and R.learned_verdict(r["srocc"]) == "not learned"
    missing = R.method_facts(out / "nowhere")
    assert missing["n"] == 0 and R.learned_verdict(missing["srocc"]) == "not learned" and not R.on_scale(missing)


def test_demo_helpers(tmp_path):
    from keras_iqa import demo

    for b in demo.BUDGETS.values():
        assert len(demo._methods(b, tmp_path)) == 3
    (tmp_path / "splits.csv").write_text("image_id,split_00\na1.png,train\na2.png,train\nb1.png,test\nc1.png,train\n")
    (tmp_path / "m.csv").write_text("image,reference,mos\na1.png,a,1\na2.png,a,2\nb1.png,b,3\nc1.png,c,4\n")
    assert demo._split_counts(tmp_path, tmp_path / "m.csv") == (2, 1)
    assert demo._split_counts(tmp_path / "none", tmp_path / "m.csv") == ("?", "?")
    (tmp_path / "bad").mkdir()  # a damaged splits.csv (a value that is no subset): "?" in the report, no traceback
    (tmp_path / "bad" / "splits.csv").write_text("image_id,split_00\na1.png,train\na2.png,bogus\n")
    assert demo._split_counts(tmp_path / "bad", tmp_path / "m.csv") == ("?", "?")


def test_demo_budgets_are_valid_train_configs():
    """Every `--set key=value` a demo budget passes parses into its train command's config (an unknown or mistyped key
    would stop `make demo` minutes in), and the small budget's scene list is the natural photos without `moon`."""
    from data_pipeline import pristine
    from keras_iqa import demo
    from keras_iqa.commands.train_metaiqa import MetaIQATrainConfig
    from keras_iqa.commands.train_reqa import REQATrainConfig
    from keras_iqa.config import load_config
    from keras_iqa.training.hcl import FINETUNE_LOSSES, HCLTrainConfig

    for b in demo.BUDGETS.values():
        for cls, key in ((MetaIQATrainConfig, "meta_set"), (REQATrainConfig, "reqa_set"), (HCLTrainConfig, "hcl_set")):
            load_config(cls, sets=[f"{k}={v}" for k, v in b[key].items()])
    hcl = load_config(HCLTrainConfig, sets=[f"{k}={v}" for k, v in demo.BUDGETS["small"]["hcl_set"].items()])
    assert hcl.finetune.loss in FINETUNE_LOSSES
    scenes = demo._pristine("natural").split(":", 1)[1].split(",")
    assert "moon" not in scenes and set(scenes) < set(pristine.NATURAL) and set(scenes) <= set(pristine.embedded_names())
    assert demo._pristine("embedded") == "embedded"
