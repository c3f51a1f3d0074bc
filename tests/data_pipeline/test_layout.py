"""data_pipeline.layout: the names and readers of prepared datasets and run directories, on real files in tmp_path."""

import json
from pathlib import Path

import pytest

from data_pipeline import layout
from data_pipeline.fixtures import write_tiny_records


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    write_tiny_records(str(d), kind="authentic", n=6)
    return d


def test_manifest_and_shards_of_a_prepared_dataset(tiny):
    man = layout.load_manifest(tiny)
    files = layout.shard_files(tiny, man)
    assert files and all(layout.parse_shard_name(f.rsplit("/", 1)[-1]) for f in files)
    assert sum(s["count"] for s in man["shards"]) == man["count"] == 6
    name = layout.shard_name(2, 5, "abc123")
    assert name == "records-00002-of-00005-abc123.tfrecord" and layout.parse_shard_name(name) == (2, 5, "abc123")
    assert layout.parse_shard_name("records-1-of-2.tfrecord") is None


def test_broken_manifest_names_the_file_and_the_fix(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    with pytest.raises(FileNotFoundError, match=r"manifest.json not found.*keras-iqa prepare"):
        layout.load_manifest(d)
    (d / "manifest.json").write_text('{"kind": "authentic", "score_range": [0, 1')  # truncated mid-write
    with pytest.raises(ValueError, match=r"manifest.json: not valid JSON.*keras-iqa prepare"):
        layout.load_manifest(d)
    (d / "manifest.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="manifest.json: not valid JSON"):
        layout.load_manifest(d)
    (d / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        layout.load_manifest(d)
    (d / "manifest.json").write_text(json.dumps({"kind": "authentic", "score_range": [0, 1]}))
    with pytest.raises(ValueError, match=r"'higher_better'.*missing"):
        layout.load_manifest(d)
    (d / "manifest.json").write_text(json.dumps({"score_range": [0, 1], "higher_better": True, "schema_version": 999}))
    with pytest.raises(ValueError, match="newer than this reader"):
        layout.load_manifest(d)


def test_missing_shard_and_no_shards(tiny, tmp_path):
    d = tmp_path / "partial"
    d.mkdir()
    man = layout.load_manifest(tiny)
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(FileNotFoundError, match="shard files listed in manifest.json are missing"):
        layout.shard_files(d)
    (d / "manifest.json").write_text(json.dumps(dict(man, shards=[])))
    with pytest.raises(FileNotFoundError, match="no TFRecord shards"):
        layout.shard_files(d)
    (d / "hand-made.tfrecord").write_bytes(b"")  # a hand-made dataset whose manifest lists no shards: its files
    assert layout.shard_files(d) == [str(d / "hand-made.tfrecord")]


def test_splits_round_trip_and_malformed_files(tmp_path):
    p = tmp_path / "splits.csv"
    table = {"image_id": ["a", "b", "c"], "split_01": ["test", "train", "train"], "split_00": ["train", "test", "train"],
             "official": ["train", "", "validation"]}
    layout.write_splits_csv(p, table)
    assert p.read_text().splitlines()[0] == "image_id,split_00,split_01,official"
    assert layout.read_splits(tmp_path) == {k: table[k] for k in ("image_id", "split_00", "split_01", "official")}
    assert layout.ids_for(p, "split_00", "test") == ["b"] and layout.split_columns(layout.read_splits(tmp_path)) == [
        "split_00", "split_01"]
    with pytest.raises(ValueError, match=r"splits.csv: no split column 'split_07'; available: \['split_00'"):
        layout.ids_for(p, "split_07", "train")
    bad = {
        "image,split_00\na,train\n": "first row must name the column 'image_id'",
        "image_id,split_00\na,train\nb\n": "row 3 has 1 values for the 2 columns",
        "image_id,split_00\na,train\na,test\n": "'a' appears more than once",
        "image_id,split_00\na,train\nb,tset\n": "column 'split_00' row 3 has 'tset'",
        "image_id,split_00\na,\n": "column 'split_00' row 2 has ''",
    }
    for text, msg in bad.items():
        p.write_text(text)
        with pytest.raises(ValueError, match=msg) as e:
            layout.read_splits(tmp_path)
        assert str(p) in str(e.value)
    p.unlink()
    assert not layout.has_splits(tmp_path)
    with pytest.raises(FileNotFoundError, match="splits.csv not found.*keras-iqa prepare"):
        layout.read_splits(tmp_path)


def test_old_import_paths_are_the_layout_functions():
    from data_pipeline import splits
    from data_pipeline.beam import writer

    assert splits.read_splits_csv is layout.read_splits_csv and splits.ids_for is layout.ids_for
    assert writer.load_manifest is layout.load_manifest and writer.parse_shard_name is layout.parse_shard_name
    assert (writer.MANIFEST, writer.SPLITS, writer.SIDECAR) == (layout.MANIFEST, layout.SPLITS, layout.SIDECAR)


def _run_dir(path, model=True):
    path.mkdir(parents=True)
    (path / layout.CHECKPOINTS_DIR).mkdir()
    (path / layout.CONFIG_FILE).write_text(json.dumps({"split": "split_03"}))
    if model:
        (path / layout.MODEL_FILE).write_bytes(b"PK")  # only its name matters to the layout
    return path


def test_run_directory_without_model_and_not_a_run_directory(tmp_path):
    run = _run_dir(tmp_path / "run")
    assert layout.find_model_file(run) == run / "model.keras" and layout.run_dir_of(run) == run
    assert layout.read_run_json(run) == {"split": "split_03"} and layout.read_run_json(run, "results.json") == {}
    half = _run_dir(tmp_path / "half", model=False)
    assert layout.model_file(half) is None and layout.looks_like_run_dir(half)
    with pytest.raises(layout.MissingModelError, match="looks like a run directory without model.keras"):
        layout.find_model_file(half)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="is not a run directory: no model.keras"):
        layout.find_model_file(empty)
    with pytest.raises(ValueError, match="no such .keras file"):  # a ValueError too, as older callers raised
        layout.find_model_file(tmp_path / "missing.keras")
    (run / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        layout.read_run_json(run)


def test_hcl_stages_folder(tmp_path):
    out = tmp_path / "hcl"
    for stage in ("restoration", "synthetic"):
        _run_dir(Path(layout.hcl_stage_dir(out, stage)))
    (out / layout.RESULTS_FILE).write_text("{}")
    assert layout.is_hcl_stages_dir(out) and layout.model_file(out) is None
    with pytest.raises(layout.MissingModelError, match="HCL `--stages all` folder whose last stage has no model.keras"):
        layout.find_model_file(out)
    final = _run_dir(out / "3-finetune")
    assert layout.find_model_file(out) == final / "model.keras" and layout.run_dir_of(out) == final
    assert layout.find_model_file(out / "1-restoration") == out / "1-restoration" / "model.keras"
    with pytest.raises(ValueError, match="unknown HCL stage"):
        layout.hcl_stage_dir(out, "pretrain")


def test_evaluation_and_export_find_the_model_through_the_layout(tmp_path):
    from keras_iqa.commands.export import load_model_arg
    from keras_iqa.evaluation.protocols import load_source

    half = _run_dir(tmp_path / "half", model=False)
    for load in (load_source, load_model_arg):
        with pytest.raises(FileNotFoundError, match="looks like a run directory without model.keras"):
            load(str(half))


def test_an_hcl_stages_folder_scores_and_evaluates_as_its_last_stage(tmp_path):
    import keras_iqa
    from keras_iqa.evaluation.protocols import load_source
    from keras_iqa.scoring import load_scorer

    out = tmp_path / "hcl"
    final = _run_dir(out / "3-finetune", model=False)
    keras_iqa.create_model("metaiqa-tiny").save(final / "model.keras")
    scorer = load_scorer(out)
    assert scorer.kind == "run" and scorer.source == str(out)
    src = load_source(out)
    assert src.config == {"split": "split_03"} and src.name == "hcl" and src.model is not None
