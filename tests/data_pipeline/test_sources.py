"""Adapters read tiny copies of the OFFICIAL layouts (data_pipeline.fixtures) and reject broken metadata clearly."""

import math
import os

import numpy as np
import pandas as pd
import pytest

from data_pipeline import fixtures
from data_pipeline.sources import SOURCES, MetadataError, get_source

CSV_OPTS = {"csv": "scores.csv", "image_dir": "photos", "image_column": "file", "score_column": "score",
            "score_range": "1,10", "split_column": "split"}


def _rows(name, root, **opts):
    rows, rejects = get_source(name)(str(root), **opts).rows()
    return {r["id"]: r for r in rows}, rejects


def test_every_dataset_reads_its_layout(tmp_path):
    for name, make in fixtures.LAYOUTS.items():
        info = make(str(tmp_path / name))
        rows, rejects = _rows(name, tmp_path / name, **(CSV_OPTS if name == "csv" else {}))
        assert not rejects, (name, rejects)
        assert sorted(rows) == sorted(info["ids"]), name
        src = SOURCES[name]
        assert src.kind in ("authentic", "synthetic") and src.layout


def test_koniq_scores_resolutions_and_official_split(tmp_path):
    info = fixtures.make_koniq10k(str(tmp_path))
    rows, _ = _rows("koniq10k", tmp_path)
    np.testing.assert_allclose([rows[i]["mos"] for i in info["ids"]], info["mos_zscore"], rtol=1e-6)
    assert all(math.isnan(r["std"]) for r in rows.values())  # SD is on the 1-5 scale: not a std of MOS_zscore
    assert [rows[i]["official"] for i in info["ids"]] == [{"training": "train"}.get(s, s) for s in info["sets"]]
    assert "1024x768" in rows[info["ids"][0]]["path"]
    src = get_source("koniq")(str(tmp_path), resolution="512x384", score_column="MOS")
    small, _ = src.rows()
    assert src.score_range == (1.0, 5.0) and all("512x384" in r["path"] for r in small)
    assert all(1 <= r["mos"] <= 5 and r["std"] == 0.5 for r in small)
    with pytest.raises(ValueError, match="resolution"):
        get_source("koniq10k")(str(tmp_path), resolution="800x600")
    with pytest.raises(ValueError, match="unknown option"):
        get_source("koniq10k")(str(tmp_path), resolutoin="512x384")


def test_clive_mat_cells_drop_training_images(tmp_path):
    info = fixtures.make_clive(str(tmp_path))
    rows, _ = _rows("clive", tmp_path)
    assert len(rows) == len(info["ids"]) and not any(i.startswith("t") for i in rows)
    np.testing.assert_allclose([rows[i]["mos"] for i in info["ids"]], info["mos"])
    assert rows["100.JPG"]["std"] == 12.5


def test_tid2013_case_insensitive_names(tmp_path):
    fixtures.make_tid2013(str(tmp_path))
    assert os.path.exists(tmp_path / "distorted_images" / "I01_01_1.bmp")  # upper-case on disk, lower-case in the txt
    rows, rejects = _rows("tid2013", tmp_path)
    r = rows["i01_01_1.bmp"]
    assert not rejects and r["path"].endswith("I01_01_1.bmp")
    assert (r["type"], r["level"], r["reference"], r["type_name"], r["std"]) == (1, 1, "i01", "AWGN", 0.8)


def test_kadid_live_csiq_kadis_fields(tmp_path):
    fixtures.make_kadid10k(str(tmp_path / "k"))
    k, _ = _rows("kadid10k", tmp_path / "k")
    r = k["I02_02_01.png"]
    assert (r["type"], r["level"], r["reference"], r["type_name"]) == (2, 1, "I02.png", "Lens_Blur")
    assert r["std"] == pytest.approx(0.5) and 1 <= r["mos"] <= 5
    fixtures.make_live(str(tmp_path / "l"))
    lv, _ = _rows("live", tmp_path / "l")
    assert len(lv) == 10 and lv["wn/img2.bmp"]["type_name"] == "wn" and lv["wn/img2.bmp"]["reference"] == "caps.bmp"
    assert get_source("live").higher_better is False
    fixtures.make_csiq(str(tmp_path / "c"))
    c, _ = _rows("csiq", tmp_path / "c")
    r = c["1601.jpeg2000.2.png"]
    assert (r["type"], r["level"], r["reference"]) == (3, 2, "1601") and os.sep + "jpeg2000" + os.sep in r["path"]
    fixtures.make_kadis700k(str(tmp_path / "d"))
    d, _ = _rows("kadis700k", tmp_path / "d")
    assert d["ref00000.png"]["dist_types"] == [1, 7, 8] and math.isnan(d["ref00000.png"]["mos"])


def test_generic_csv(tmp_path):
    fixtures.make_csv_folder(str(tmp_path))
    src = get_source("csv")(str(tmp_path), **CSV_OPTS)
    rows, _ = src.rows()
    assert src.score_range == (1.0, 10.0) and src.kind == "authentic"
    assert {r["official"] for r in rows} == {"train", "test"}
    with pytest.raises(ValueError, match="score_range"):
        get_source("csv")(str(tmp_path), csv="scores.csv")
    with pytest.raises(MetadataError, match=r"missing column\(s\) \['mos'\]"):
        get_source("csv")(str(tmp_path), csv="scores.csv", score_range="1,10", image_column="file").rows()


def test_broken_rows_are_rejected_with_file_and_row(tmp_path):
    fixtures.make_kadid10k(str(tmp_path))
    p = tmp_path / "dmos.csv"
    df = pd.read_csv(p)
    df.loc[1, "dmos"] = float("nan")  # NaN score -> row 3 of the file
    df.loc[2, "dmos"] = 7.5  # outside 1-5
    df = pd.concat([df, df.iloc[[3]]])  # duplicate id
    df.to_csv(p, index=False)
    os.remove(tmp_path / "images" / "I03_02_02.png")  # missing file
    rows, rejects = _rows("kadid10k", tmp_path)
    reasons = {r["reason"] for r in rejects}
    assert len(rows) == 12 - 3 and len(rejects) == 4
    assert any("score is nan" in r and "dmos.csv row 3" in r for r in reasons)
    assert any("outside the declared range [1.0, 5.0]" in r and "row 4" in r for r in reasons)
    assert any("duplicate image id 'I01_02_02.png'" in r and "first at" in r for r in reasons)
    assert any("image file not found" in r and "I03_02_02.png" in r for r in reasons)


def test_wrong_columns_and_missing_files_are_clear_errors(tmp_path):
    fixtures.make_kadid10k(str(tmp_path))
    (tmp_path / "dmos.csv").write_text("image,score\nI01_01_01.png,3\n")
    with pytest.raises(MetadataError, match=r"dmos.csv: missing column\(s\) \['dist_img', 'ref_img', 'dmos'\]"):
        _rows("kadid10k", tmp_path)
    with pytest.raises(MetadataError, match="mos_with_names.txt: not found"):
        _rows("tid2013", tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset root"):
        get_source("bid")(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        get_source("imagenet")
    fixtures.make_clive(str(tmp_path / "cl"))
    import scipy.io
    scipy.io.savemat(str(tmp_path / "cl" / "Data" / "AllMOS_release.mat"), {"AllMOS_release": np.ones((1, 3))})
    with pytest.raises(MetadataError, match="15 names but 3 MOS"):
        _rows("clive", tmp_path / "cl")
    (tmp_path / "tid").mkdir()
    (tmp_path / "tid" / "distorted_images").mkdir()
    (tmp_path / "tid" / "mos_with_names.txt").write_text("5.1 i01_01_1.bmp extra\n")
    with pytest.raises(MetadataError, match="line 1: expected '<MOS> <file name>'"):
        _rows("tid2013", tmp_path / "tid")
