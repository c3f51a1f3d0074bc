"""keras_iqa.evaluation: protocols (split hygiene, summaries), fine-grained report, significance, gMAD, reports and the CLI."""

import json
import sys
import types

import numpy as np
import pandas as pd
import pytest

from keras_iqa import metrics as M
from keras_iqa.evaluation import fine_grained as FG
from keras_iqa.evaluation import protocols as P
from keras_iqa.evaluation import reports as R
from keras_iqa.evaluation import significance as S


# --------------------------------------------------------------------------------------------------------- fixtures
def _write_dataset(root, kind="synthetic", n_refs=6, n_types=3, n_splits=3, official=True, leak=False, seed=0, prefix="I"):
    """A prepared dataset without pixels (metadata records only): manifest.json, splits.csv by reference, TFRecords."""
    import tensorflow as tf

    from data_pipeline.schema import make_example

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(n_refs):
        for t in range(1, n_types + 1):
            for lvl in range(1, 3):
                rows.append({"image_id": f"{prefix}{r:02d}_{t:02d}_{lvl}", "ref": f"{prefix}{r:02d}", "type": t, "level": lvl,
                             "mos": float(rng.uniform(0, 100))})
    df = pd.DataFrame(rows)
    with tf.io.TFRecordWriter(str(root / "records-00000-of-00001.tfrecord")) as w:
        for row in rows:
            fields = {"image/id": row["image_id"], "score/mos": row["mos"], "dataset/name": "tiny"}
            if kind == "synthetic":
                fields.update({"distortion/type": row["type"], "distortion/name": f"type{row['type']}",
                               "distortion/level": row["level"], "reference/id": row["ref"]})
            w.write(make_example(kind, fields).SerializeToString())
    splits = pd.DataFrame({"image_id": df.image_id})
    refs = sorted(df.ref.unique())
    for k in range(n_splits):
        test_refs = set(np.random.default_rng(k).choice(refs, size=max(1, n_refs // 3), replace=False))
        splits[f"split_{k:02d}"] = np.where(df.ref.isin(test_refs), "test", "train")
    if leak:  # one distorted image of a test reference moved to train
        i = int(np.flatnonzero(splits.split_00.values == "test")[0])
        splits.loc[i, "split_00"] = "train"
    if official:
        splits["official"] = np.where(df.ref.isin(refs[:1]), "test", np.where(df.ref.isin(refs[1:2]), "validation", "train"))
    splits.to_csv(root / "splits.csv", index=False)
    man = {"schema_version": 1, "dataset": root.name, "kind": kind, "count": len(df),
           "shards": [{"file": "records-00000-of-00001.tfrecord", "count": len(df), "sha256": ""}],
           "score_range": [0, 100], "higher_better": True, "rejects": [], "statistics": {}, "pseudo_label": None}
    (root / "manifest.json").write_text(json.dumps(man))
    return df


@pytest.fixture
def dataset(tmp_path):
    df = _write_dataset(tmp_path / "tiny")
    return tmp_path / "tiny", df


def _preds(df, noise, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"image_id": df.image_id, "pred": df.mos + rng.normal(0, noise, len(df))})


# -------------------------------------------------------------------------------------------------------- protocols
def test_read_metadata_and_split_hygiene(dataset, tmp_path):
    d, df = dataset
    meta = P.read_metadata(d)
    assert sorted(meta.image_id) == sorted(df.image_id)
    np.testing.assert_allclose(meta.set_index("image_id").loc[df.image_id, "mos"].values, df.mos.values, rtol=1e-6)
    table = P.read_splits(d)
    for col in P.split_columns(table):
        P.check_split_hygiene(table, col, meta)
        train, test = P.split_ids(table, col)
        assert train and test and not train & test
        ref = dict(zip(meta.image_id, meta.reference_id))
        assert not {ref[i] for i in train} & {ref[i] for i in test}
    leaky = tmp_path / "leaky"
    _write_dataset(leaky, leak=True)
    with pytest.raises(ValueError, match="reference image.*both train and test"):
        P.check_split_hygiene(P.read_splits(leaky), "split_00", P.read_metadata(leaky), leaky)
    with pytest.raises(ValueError, match="duplicated|more than once"):
        t = pd.read_csv(d / "splits.csv")
        pd.concat([t, t.iloc[:1]]).to_csv(leaky / "splits.csv", index=False)
        P.read_splits(leaky)


def test_splits_protocol_one_source_per_split(dataset):
    d, df = dataset
    sources = [_preds(df, noise, seed=i) for i, noise in enumerate((5.0, 10.0, 20.0))]
    res = P.evaluate_splits(sources, d)
    rows = res.results["rows"]
    assert [r["row"] for r in rows] == ["split_00", "split_01", "split_02"]
    table = P.read_splits(d)
    for r, src in zip(rows, sources):
        test = set(table.image_id[table[r["row"]] == "test"])
        sub = res.predictions[res.predictions.row == r["row"]]
        assert set(sub.image_id) == test  # exactly the test subset, nothing from train
        truth = src.merge(df[["image_id", "mos"]], on="image_id")
        truth = truth[truth.image_id.isin(test)]
        assert r["srocc"] == pytest.approx(M.srocc(truth.pred, truth.mos))
    s = np.array([r["srocc"] for r in rows])
    summ = res.results["summary"]["srocc"]
    assert summ["median"] == pytest.approx(np.median(s)) and summ["mean"] == pytest.approx(s.mean())
    assert summ["std"] == pytest.approx(s.std(ddof=1))
    assert res.results["fine_grained"]["bins"][0]["label"] == "Bad"
    with pytest.raises(ValueError, match="2 splits"):
        P.evaluate_splits(sources, d, splits=["split_00", "split_01"])
    with pytest.raises(ValueError, match="missing for"):
        P.evaluate_splits([_preds(df.iloc[:3], 1.0)], d)


def test_official_cross_lodo(dataset, tmp_path):
    d, df = dataset
    src = _preds(df, 5.0)
    off = P.evaluate_official(src, d)
    table = P.read_splits(d)
    assert set(off.predictions.image_id) == set(table.image_id[table.official == "test"])
    other = tmp_path / "other"
    df2 = _write_dataset(other, kind="authentic", official=False, seed=3, prefix="O")
    src2 = pd.concat([src, _preds(df2, 5.0)])
    cross = P.evaluate_cross(src2, [d, other])
    assert [r["row"] for r in cross.results["rows"]] == ["tiny", "other"]
    assert cross.results["rows"][1]["n"] == len(df2)  # ALL of B
    with pytest.raises(ValueError, match="no official split"):
        P.evaluate_official(src2, other)
    lodo = P.evaluate_lodo([src, src], d, held_out=[1, "type3"])
    assert set(lodo.predictions[lodo.predictions.row == "held_out=1"].image_id) == set(df.image_id[df.type == 1])
    assert set(lodo.predictions[lodo.predictions.row == "held_out=type3"].image_id) == set(df.image_id[df.type == 3])
    with pytest.raises(ValueError, match="held_out_distortion"):
        P.evaluate_lodo([src], d)
    with pytest.raises(ValueError, match="no distortion type"):
        P.evaluate_lodo([src2], other, held_out=[1])


class _Reader:
    """Stands in for data_pipeline.input.RecordReader (same constructor and eval_dataset), pixels = MOS-dependent noise."""

    calls = []

    def __init__(self, data_dir, split="split_00", subset=None, target="mos"):
        self.ids = P.read_splits(data_dir)
        self.meta = P.read_metadata(data_dir)
        if subset is not None:
            keep = set(self.ids.image_id[self.ids[split] == subset])
            self.meta = self.meta[self.meta.image_id.isin(keep)]
        _Reader.calls.append((split, subset))

    def eval_dataset(self, num_crops=25, crop_size=224, mode="random", seed=0, resize=None, contract=None):
        import tensorflow as tf

        if contract is not None:
            num_crops, crop_size = contract.num_crops, contract.crop_size

        m = self.meta.mos.to_numpy(np.float32)
        x = np.broadcast_to(m[:, None, None, None, None], (len(m), num_crops, crop_size, crop_size, 3)).astype(np.float32)
        return tf.data.Dataset.from_tensor_slices((x, m, self.meta.image_id.to_numpy().astype(bytes)))


def _tiny_model(crop=8, higher_better=True):
    import keras

    from keras_iqa.models.base import IQAModel

    class Tiny(IQAModel):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.pool = keras.layers.GlobalAveragePooling2D()

        def call(self, x):
            return self.pool(x)[:, :1] * (1.0 if self.higher_better else -1.0)

    return Tiny(crop_size=crop, test_crops=3, crop_policy="grid", higher_better=higher_better)


def test_model_source_uses_reader_and_orientation(dataset, monkeypatch):
    d, df = dataset
    monkeypatch.setitem(sys.modules, "data_pipeline.input", types.SimpleNamespace(RecordReader=_Reader))
    _Reader.calls.clear()
    res = P.evaluate_splits([_tiny_model(), _tiny_model()], d, batch_size=7)
    assert _Reader.calls == [("split_00", "test"), ("split_01", "test")]
    for r in res.results["rows"]:
        assert r["srocc"] == pytest.approx(1.0) and r["mae"] == pytest.approx(0.0, abs=1e-3)
    # a lower-is-better model on 0-100 scored against a higher-is-better dataset: mapped to the dataset's scale and direction
    m = _tiny_model(higher_better=False)
    res = P.evaluate_official(m, d)
    row = res.results["rows"][0]
    assert row["srocc"] == pytest.approx(1.0) and "mapped" in row["pred_scale"]
    # the tiny model outputs -MOS; declared range (-100, 0) lower-better -> maps back exactly onto the MOS
    m.score_range = (-100.0, 0.0)
    row = P.evaluate_official(m, d).results["rows"][0]
    assert row["mae"] == pytest.approx(0.0, abs=1e-3) and row["srocc"] == pytest.approx(1.0)
    np.testing.assert_allclose(P.to_data_scale([1, 3, 5], (1, 5), True, (0, 1), False), [1, 0.5, 0])


def test_predict_reader_averages_crops(monkeypatch):
    import tensorflow as tf

    from keras_iqa.evaluation import predict_reader

    class Rd:
        def eval_dataset(self, contract):
            assert (contract.num_crops, contract.crop_size, contract.policy) == (3, 8, "grid")
            x = np.zeros((5, 3, 8, 8, 3), np.float32) + np.arange(3, dtype=np.float32)[None, :, None, None, None]
            x += 10 * np.arange(5, dtype=np.float32)[:, None, None, None, None]
            return tf.data.Dataset.from_tensor_slices((x, np.arange(5, dtype=np.float32), [b"a", b"b", b"c", b"d", b"e"]))

    out = predict_reader(_tiny_model(), Rd(), batch_size=4)
    assert list(out.image_id) == list("abcde")
    np.testing.assert_allclose(out.pred, 10 * np.arange(5) + 1.0, rtol=1e-6)  # mean of crops 0, 1, 2


# --------------------------------------------------------------------------------------------------- fine-grained
def test_fine_grained_bins_confusion_and_histogram():
    mos = np.array([5, 15, 25, 35, 45, 55, 65, 75, 85, 95, 100, 10], float)
    pred = mos + np.array([1, -1, 30, 2, -2, 3, 0, 0, 0, -30, 0, 4], float)
    r = FG.fine_grained_report(pred, mos, pred_mapping="none")
    assert [b["label"] for b in r["bins"]] == list(FG.ACR_LABELS)
    assert [b["n"] for b in r["bins"]] == [3, 2, 2, 2, 3]
    assert np.isnan(r["bins"][1]["srocc"]) and "at least 3" in r["bins"][1]["note"]
    conf = np.array(r["confusion"]["matrix"])
    assert conf.sum() == 12 and conf[1, 2] == 1 and conf[4, 3] == 1  # 25 -> 55 is Poor -> Fair; 95 -> 65 Excellent -> Good
    assert r["confusion"]["accuracy"] == pytest.approx(10 / 12)
    assert sum(r["error_histogram"]["counts"]) == 12 and r["error_histogram"]["counts"][6] == 2  # |30| in [30, 35)
    # bins on another scale: KonIQ-like 1-5 MOS maps to 0-100; lower-is-better DMOS flips
    assert FG.to_100([1, 3, 5], (1, 5)).tolist() == [0, 50, 100]
    assert FG.to_100([0.0, 1.0], (0, 1), higher_better=False).tolist() == [100, 0]
    r5 = FG.fine_grained_report(pred / 20, mos / 20, mos_range=(0, 5), pred_range=(0, 5))
    assert [b["n"] for b in r5["bins"]] == [3, 2, 2, 2, 3]
    r3 = FG.fine_grained_report(pred, mos, pred_mapping="none", edges=(0, 50, 100), labels=["low", "high"])
    assert [b["n"] for b in r3["bins"]] == [6, 6]
    with pytest.raises(ValueError, match="increasing"):
        FG.assign_bins([1], edges=(0, 50, 40))


# ----------------------------------------------------------------------------------------------------- significance
def test_f_test_and_wilcoxon_on_constructed_cases():
    rng = np.random.default_rng(0)
    mos = rng.uniform(0, 100, 400)
    good, bad = mos + rng.normal(0, 3, 400), mos + rng.normal(0, 15, 400)
    r = S.f_test(good, bad, mos, names=("good", "bad"))
    assert r["verdict"] == "good is better" and r["p_value"] < 1e-6 and r["F"] < 1
    r = S.f_test(bad, good, mos, names=("bad", "good"))
    assert r["verdict"] == "good is better"
    same = S.f_test(mos + rng.normal(0, 5, 400), mos + rng.normal(0, 5, 400), mos)
    assert same["verdict"] == "no significant difference"
    a = [0.90, 0.91, 0.89, 0.92, 0.90, 0.91, 0.93, 0.90, 0.92, 0.91]
    w = S.wilcoxon_splits(a, [v - 0.02 for v in a], names=("new", "old"))
    assert w["verdict"] == "new is better" and w["p_value"] < 0.01
    w = S.wilcoxon_splits(a, [v + (0.01 if i % 2 else -0.01) for i, v in enumerate(a)])
    assert w["verdict"] == "no significant difference"
    assert "smallest" in S.wilcoxon_splits(a[:4], [v - 0.1 for v in a[:4]])["note"]
    with pytest.raises(ValueError, match="paired"):
        S.wilcoxon_splits(a, a[:3])
    dfa = pd.DataFrame({"image_id": [str(i) for i in range(400)], "target": mos, "pred": good})
    dfb = pd.DataFrame({"image_id": [str(i) for i in range(400)], "pred": bad})
    assert S.compare_predictions(dfa, dfb, names=("good", "bad"))["verdict"] == "good is better"


# ------------------------------------------------------------------------------------------------------------- gMAD
def test_gmad_finds_planted_pairs():
    rng = np.random.default_rng(0)
    n = 200
    a = rng.uniform(0, 1, n)
    b = a + rng.normal(0, 0.01, n)  # B agrees with A almost everywhere...
    # ...except two images A calls equal (mid quality) that B calls best and worst
    a[10], a[11] = np.median(a), np.median(a) + 1e-4
    b[10], b[11] = 2.0, -1.0
    from keras_iqa.evaluation.gmad import gmad_pairs

    pairs = gmad_pairs(a, b, levels=5, tol=0.02, names=("A", "B"))
    mid = [p for p in pairs if p["defender"] == "A" and p["level"] == 2][0]
    assert {mid["i_high"], mid["i_low"]} == {10, 11} and mid["i_high"] == 10
    assert mid["attacker_gap"] == pytest.approx(1.0)
    assert all(p["defender_gap"] <= 0.04 + 1e-9 for p in pairs)
    assert {p["defender"] for p in pairs} == {"A", "B"}


def test_gmad_writes_contact_sheet(tmp_path):
    from PIL import Image

    from keras_iqa.evaluation.gmad import gmad

    paths = []
    for i in range(8):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(np.full((20, 24, 3), i * 30, np.uint8)).save(p)
        paths.append(p)
    res = gmad(_tiny_model(), _tiny_model(), paths, tmp_path / "g", levels=2, tol=0.2)
    assert (tmp_path / "g" / "gmad_sheet.png").stat().st_size > 1000
    assert json.loads((tmp_path / "g" / "gmad.json").read_text())["pool"] == 8
    assert res["models"][0] != res["models"][1]


# ---------------------------------------------------------------------------------------------------- reports + CLI
def test_reports_plots_and_side_by_side(dataset, tmp_path):
    d, df = dataset
    res = P.evaluate_splits([_preds(df, 5.0), _preds(df, 8.0, 1)], d)
    files = R.write_report(res, tmp_path / "rep_a")
    for name in ("results.json", "results.csv", "predictions.csv", "summary.md", "scatter.png", "per_range.png",
                 "error_hist.png", "confusion.png"):
        assert files[name].stat().st_size > 100, name
    back = json.loads(files["results.json"].read_text())
    assert back["summary"]["srocc"]["median"] == pytest.approx(res.results["summary"]["srocc"]["median"])
    assert len(pd.read_csv(files["results.csv"])) == 2
    R.write_report(P.evaluate_official(_preds(df, 30.0), d), tmp_path / "rep_b", plots=False)
    table = R.compare_table([tmp_path / "rep_a", tmp_path / "rep_b"])
    assert list(table.protocol) == ["splits", "official"] and table.srocc[0] > table.srocc[1]
    assert "srocc[Bad]" in table.columns
    md = R.table_markdown(table).splitlines()  # pandas to_markdown: header, separator, one row per run
    assert [c.strip() for c in md[0].strip("|").split("|")] == list(table.columns)
    assert set(md[1]) <= set("|-") and len(md) == 2 + len(table)
    assert md[2].strip("|").split("|")[list(table.columns).index("srocc")].strip() == f"{table.srocc[0]:.4f}"


def test_cli_evaluate_and_report(dataset, tmp_path, capsys):
    from keras_iqa.cli import main

    d, df = dataset
    csv = tmp_path / "preds.csv"
    _preds(df, 5.0).to_csv(csv, index=False)
    assert main(["evaluate", str(csv), "--data", str(d), "--protocol", "official", "--out", str(tmp_path / "r1")]) == 0
    assert (tmp_path / "r1" / "results.json").is_file()
    assert main(["report", str(tmp_path / "r1"), "--md", str(tmp_path / "cmp.md")]) == 0
    assert "official" in (tmp_path / "cmp.md").read_text()
    assert main(["evaluate", str(tmp_path / "nope"), "--data", str(d), "--out", str(tmp_path / "r2")]) != 0
    assert "nope" in capsys.readouterr().err
    # significance against a baseline: one F-test per split + Wilcoxon over the splits
    good, bad = [], []
    for i in range(3):
        good.append(tmp_path / f"good{i}.csv")
        _preds(df, 3.0, seed=i).to_csv(good[-1], index=False)
        bad.append(tmp_path / f"bad{i}.csv")
        _preds(df, 40.0, seed=10 + i).to_csv(bad[-1], index=False)
    assert main(["evaluate", *map(str, good), *[a for b in bad for a in ("--compare", str(b))], "--data", str(d), "--protocol", "splits",
                 "--out", str(tmp_path / "r3"), "--no-plots"]) == 0
    sig = json.loads((tmp_path / "r3" / "results.json").read_text())["significance"]
    assert len(sig) == 4 and all("good" in s["verdict"] for s in sig[:3]) and sig[3]["test"].startswith("Wilcoxon")
    assert main(["evaluate", str(csv), "--data", str(d), "--protocol", "lodo", "--out", str(tmp_path / "r4")]) == 2
    assert "held_out_distortion" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ end to end on real records
def test_end_to_end_run_dirs_real_reader(tmp_path):
    """RecordReader over fixture records, run dirs (model.keras + config.json), `keras-iqa evaluate` splits and lodo."""
    import keras

    from data_pipeline.fixtures import write_tiny_records
    from keras_iqa.cli import main
    from keras_iqa.models.base import IQAModel
    from keras_iqa.training.runner import RunDir

    @keras.saving.register_keras_serializable(package="test_evaluation")
    class MeanBrightness(IQAModel):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.d = keras.layers.Dense(1)

        def call(self, x):
            return self.d(self.pool(x) / 255.0)

    data = tmp_path / "syn"
    write_tiny_records(str(data), kind="synthetic", n=30, n_types=3, n_refs=3, num_splits=2)
    runs = []
    for i, extra in enumerate(({"split": "split_01"}, {"split": "split_00"})):
        m = MeanBrightness(crop_size=32, test_crops=2, crop_policy="grid", score_range=(1, 5))
        m(np.zeros((1, 32, 32, 3), "float32"))
        run = RunDir.create(tmp_path / f"run{i}", config={"model": "tiny", "data": {"split": extra["split"]}})
        run.save_final(m)
        runs.append(str(run.path))
    pd.DataFrame({"epoch": [0, 1, 2], "test_srocc": [0.5, 0.9, 0.7], "test_plcc": [0.6, 0.5, 0.8]}).to_csv(
        tmp_path / "run0" / "history.csv", index=False)
    rep = tmp_path / "rep"
    assert main(["evaluate", *runs, "--data", str(data), "--protocol", "splits", "--out", str(rep), "--no-plots",
                 "--best-epoch"]) == 0
    res = json.loads((rep / "results.json").read_text())
    assert [r["row"] for r in res["rows"]] == ["split_01", "split_00"]  # from each run's config.json
    table = P.read_splits(data)
    preds = pd.read_csv(rep / "predictions.csv", dtype={"image_id": str})
    for col in ("split_00", "split_01"):
        assert set(preds.image_id[preds.row == col]) == set(table.image_id[table[col] == "test"])
    assert res["per_distortion"] and res["rows"][0]["n"] > 3
    sel = res["official_code_selection"]
    assert sel["per_run"] == [{"source": "run0", "epochs": 3, "srocc": 0.9, "srocc_epoch": 1, "srocc_column": "test_srocc",
                               "plcc": 0.8, "plcc_epoch": 2, "plcc_column": "test_plcc"}]
    with open(tmp_path / "run0" / "config.json", "w") as f:
        json.dump({"held_out_distortion": 2}, f)
    assert main(["evaluate", runs[0], "--data", str(data), "--protocol", "lodo", "--out", str(tmp_path / "lodo"),
                 "--no-plots"]) == 0
    meta = P.read_metadata(data)
    lodo = pd.read_csv(tmp_path / "lodo" / "predictions.csv", dtype={"image_id": str})
    assert set(lodo.image_id) == set(meta.image_id[meta.distortion_type == 2])
    # gMAD from the command line on a folder of unlabeled images
    from PIL import Image

    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(6):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(pool / f"p{i}.png")
    assert main(["evaluate", runs[0], "--protocol", "gmad", "--against", runs[1], "--pool", str(pool), "--gmad-levels", "2",
                 "--tol", "0.3", "--out", str(tmp_path / "gm")]) == 0
    assert json.loads((tmp_path / "gm" / "gmad.json").read_text())["pairs"]
    assert (tmp_path / "gm" / "gmad_sheet.png").stat().st_size > 1000


def test_error_hist_plot_with_errors_in_the_last_bin(tmp_path):
    """Regression: all errors in the last bin (a collapsed model far from every MOS) used to index past the edges."""
    from keras_iqa.evaluation.reports import plot_error_hist

    hist = {"edges": list(range(0, 105, 5)), "counts": [0] * 19 + [3]}
    path = plot_error_hist({"error_histogram": hist}, tmp_path / "e.png")
    assert path.stat().st_size > 0


def _bf16_tiny_metaiqa():
    """A tiny MetaIQA built under mixed_bfloat16 (its backbone's BN is what make_score_fn folds)."""
    import keras

    import keras_iqa

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = keras_iqa.create_model("metaiqa-tiny")
        # a non-negative score kernel on the ReLU features: the score's deviation from the bias is a sum without
        # cancellation, so bf16 errors (relative to the features) are relative to it too
        score_layer = model.head_layers[-1]
        score_layer.kernel.assign(np.abs(np.asarray(score_layer.kernel)))
        return model
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _backbone_part(model, scores):
    """The part of the scores that the backbone decides: score - the score layer's bias (the paper head's fc2 starts with
    a small kernel and a mid-range bias, so the scores themselves barely move with the input; their deviation from the
    bias is what folding can change). Tolerances are relative to its largest magnitude."""
    return np.asarray(scores, np.float64) - float(np.asarray(model.head_layers[-1].bias).reshape(-1)[0])


def _bf16_fold_tolerance(model):
    """Relative tolerance of folded vs unfolded bf16 scores: bf16 keeps 8 significant bits (epsilon 2^-8); folding moves
    at most one rounding per conv/BN pair and one per dense layer, each <= 2^-8 of the activations' magnitude, adding up
    (worst case, no cancellation) over the model's conv and dense layers. It counts roundings, not how a CPU sums: AMX,
    AVX512-BF16 and emulated bf16 all accumulate bf16 products in float32, so it holds on each."""
    import keras

    n = sum(isinstance(l, (keras.layers.Conv2D, keras.layers.Dense)) for l in model._flatten_layers())
    return 2.0 ** -8 * n


def test_score_fn_folds_bf16_backbone_bn_and_leaves_the_model_alone():
    """make_score_fn traces a bf16 model with its backbone's BN folded (no FusedBatchNorm op left in the graph), gives the
    unfolded scores up to bf16 rounding, keeps working after garbage collection, and leaves the model unchanged."""
    import gc

    import keras
    import tensorflow as tf

    from keras_iqa.evaluation.predict import make_score_fn

    model = _bf16_tiny_metaiqa()
    c = model.crop_size
    rng = np.random.default_rng(0)
    for layer in model.backbone.layers:  # non-trivial statistics, so that folding matters
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n), rng.uniform(0.5, 2, n)])
    backbone = model.backbone
    x = rng.uniform(0, 255, (6, c, c, 3)).astype("float32")

    def ops(fn):
        return {op.type for op in fn.get_concrete_function().graph.get_operations()}

    plain, folded = make_score_fn(model, c, fold_bn=False), make_score_fn(model, c)
    assert any("FusedBatchNorm" in t for t in ops(plain)) and not any("FusedBatchNorm" in t for t in ops(folded))
    assert model.backbone is backbone and any(isinstance(l, keras.layers.BatchNormalization) for l in backbone.layers)
    gc.collect()
    a, b = plain(tf.constant(x)).numpy(), folded(tf.constant(x)).numpy()
    dev = np.abs(_backbone_part(model, a)).max()
    assert np.isfinite(b).all() and dev > 0
    assert np.abs(a - b).max() <= _bf16_fold_tolerance(model) * dev, (np.abs(a - b).max(), dev)


def test_reused_score_fn_refreshes_folded_weights_without_a_new_trace():
    """make_score_fn(reuse=True) (what predict_dataset uses for every validation pass) returns the same traced function for
    the same model and crop size, with the folded backbone weights rewritten from the model's current ones: after the
    weights change its scores equal those of a freshly folded function and differ from the old ones."""
    import keras
    import tensorflow as tf

    from keras_iqa.evaluation.predict import make_score_fn

    model = _bf16_tiny_metaiqa()
    c, rng = model.crop_size, np.random.default_rng(1)
    x = tf.constant(rng.uniform(0, 255, (4, c, c, 3)).astype("float32"))

    def perturb():  # new BN statistics and convolution kernels, as training would leave them
        for layer in model.backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                n = layer.gamma.shape[0]
                layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n),
                                   rng.uniform(0.5, 2, n)])
            elif isinstance(layer, keras.layers.Conv2D):
                layer.kernel.assign(layer.kernel * rng.uniform(0.5, 1.5))

    perturb()
    first = make_score_fn(model, c, reuse=True)
    before = first(x).numpy()
    assert first.folded_submodels, "the bf16 backbone was not folded"
    perturb()
    again = make_score_fn(model, c, reuse=True)
    assert again is first and first.experimental_get_tracing_count() == 1
    after, fresh = again(x).numpy(), make_score_fn(model, c)(x).numpy()
    np.testing.assert_allclose(after, fresh, rtol=1e-6, atol=1e-6)
    # the perturbation rescales BN statistics and kernels by factors 0.5..1.5: far more than bf16 rounding can move
    dev = np.abs(_backbone_part(model, before)).max()
    assert np.abs(after - before).max() > _bf16_fold_tolerance(model) * dev, "the weights were not refreshed"
    assert make_score_fn(model, c, fold_bn=False, reuse=True) is not first  # other settings: their own function
