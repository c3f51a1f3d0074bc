"""splits.csv: seeded random 80/20 columns, reference-grouped for synthetic sets, official column."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_pipeline.splits import SplitConfig, ids_for, make_splits, read_splits_csv, write_splits_csv


def test_random_split_ratio_and_reproducible():
    ids = [f"im{i}" for i in range(50)]
    a = make_splits(ids, num_splits=3, seed=1)
    b = make_splits(ids, num_splits=5, seed=1)
    assert list(a) == ["image_id", "split_00", "split_01", "split_02"]
    for k in ("split_00", "split_01", "split_02"):
        assert a[k].count("train") == 40 and a[k].count("test") == 10
        assert a[k] == b[k]  # adding repetitions keeps earlier columns
    assert a["split_00"] != a["split_01"]
    assert make_splits(ids, num_splits=1, seed=2)["split_00"] != a["split_00"]
    # order of the input does not change who is in train
    rev = make_splits(ids[::-1], num_splits=1, seed=1)
    assert dict(zip(rev["image_id"], rev["split_00"])) == dict(zip(a["image_id"], a["split_00"]))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=2, max_size=40), st.integers(0, 1000))
def test_grouped_split_never_shares_a_reference(groups, seed):
    ids = [f"d{i}" for i in range(len(groups))]
    t = make_splits(ids, groups=[f"ref{g}" for g in groups], num_splits=2, seed=seed)
    for col in ("split_00", "split_01"):
        train = {g for g, s in zip(groups, t[col]) if s == "train"}
        test = {g for g, s in zip(groups, t[col]) if s == "test"}
        assert not train & test
        if len(set(groups)) >= 2:
            assert train and test  # both sides non-empty
            assert len(train) == min(max(round(0.8 * len(set(groups))), 1), len(set(groups)) - 1)


def test_official_and_errors(tmp_path):
    t = make_splits(["a", "b", "c"], num_splits=1, official={"a": "training", "b": "validation", "c": "test"})
    assert t["official"] == ["train", "validation", "test"]
    with pytest.raises(ValueError, match="official split"):
        make_splits(["a"], official={"a": "dev"})
    with pytest.raises(ValueError, match="duplicate"):
        make_splits(["a", "a"])
    with pytest.raises(ValueError, match="train_ratio"):
        SplitConfig(train_ratio=1.0)
    p = str(tmp_path / "splits.csv")
    write_splits_csv(p, t)
    back = read_splits_csv(p)
    assert back["image_id"] == ["a", "b", "c"] and back["official"] == t["official"]
    assert ids_for(p, "official", "validation") == ["b"]
    with pytest.raises(ValueError, match="split_07"):
        ids_for(p, "split_07", "train")
    (tmp_path / "bad.csv").write_text("name,split\nx,train\n")
    with pytest.raises(ValueError, match="image_id"):
        read_splits_csv(str(tmp_path / "bad.csv"))
