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


def test_cid2013_splits_four_of_six_subsets():
    """MetaIQA Sec. 4.4: "four out of six subsets are used for model training, and the remaining two subsets are used for
    testing" -- never a random split of images."""
    import itertools

    from data_pipeline.splits import cid2013_subset, dataset_groups

    romans = ["I", "II", "III", "IV", "V", "VI"]
    ids = [f"IS{s}/co{c}/IS_{romans[s - 1]}_C{c:02d}_D{d:02d}.jpg" for s in range(1, 7) for c in (1, 2) for d in (1, 2, 3)]
    assert cid2013_subset("IS_IV_C01_D02.jpg") == "IS4" and cid2013_subset("CID2013/IS6/co1/x.jpg") == "IS6"
    groups, n_train = dataset_groups("cid2013", ids)
    assert n_train == 4 and dataset_groups("clive", ids) is None
    t = make_splits(ids, groups=groups, num_splits=15, seed=0, train_groups=n_train)
    chosen = []
    for k in range(15):
        col = t[f"split_{k:02d}"]
        train_sets = {g for g, v in zip(groups, col) if v == "train"}
        test_sets = {g for g, v in zip(groups, col) if v == "test"}
        assert len(train_sets) == 4 and len(test_sets) == 2 and not train_sets & test_sets
        chosen.append(tuple(sorted(train_sets)))
    assert len(set(chosen)) == 15 == len(list(itertools.combinations(range(6), 4)))  # every choice once
    # adding columns keeps the earlier ones
    assert make_splits(ids, groups=groups, num_splits=3, seed=0, train_groups=4)["split_02"] == t["split_02"]
    # a partial copy (2 sets) keeps one set on each side
    assert dataset_groups("cid2013", ids[:12])[1] == 1
    with pytest.raises(ValueError, match="CID2013"):
        cid2013_subset("foo.jpg")


def test_prepared_cid2013_splits_by_subset(tmp_path):
    from data_pipeline import fixtures
    from data_pipeline.beam.prepare import prepare
    from data_pipeline.splits import cid2013_subset, read_splits_csv

    fixtures.make_cid2013(str(tmp_path / "cid"))
    m = prepare("cid2013", str(tmp_path / "cid"), str(tmp_path / "out"), runner=None)
    assert m["splits"]["by_subset"] and m["splits"]["num_splits"] == 20
    t = read_splits_csv(str(tmp_path / "out" / "cid2013" / "splits.csv"))
    for k in range(20):
        col = t[f"split_{k:02d}"]
        sets = {v: {cid2013_subset(i) for i, x in zip(t["image_id"], col) if x == v} for v in ("train", "test")}
        assert sets["train"] and sets["test"] and not sets["train"] & sets["test"]
