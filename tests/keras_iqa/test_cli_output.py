"""What `keras-iqa` prints besides results: each keras-iqa warning once, library chatter only with -v, fix hints spelled
for the caller (flags from the CLI, keywords from Python), and int8 calibration with what a small dataset has."""

import csv
import logging
import types
import warnings

import pytest

from data_pipeline.fixtures import content_image, save, write_tiny_records
from keras_iqa import cli
from keras_iqa.caller import cli_session, setting

CHATTER = ("fully_quantize", "Statistics for quantized inputs", "tf.lite.Interpreter is deprecated", "UserWarning")


def _train_count(data_dir) -> int:
    with open(f"{data_dir}/splits.csv", newline="") as f:
        return sum(row["split_00"] == "train" for row in csv.DictReader(f))


def test_a_keras_iqa_warning_is_printed_once_as_one_line(tmp_path, capfd):
    photo = save(content_image(0, size=(80, 96)), str(tmp_path / "photo.png"))
    assert cli.main(["score", "reqa-tiny", photo]) == 0
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "is a model card" in line]
    assert len(lines) == 1 and err.count("is a model card") == 1, err
    assert lines[0].startswith("warning: model 'reqa-tiny' is a model card"), err
    assert "UserWarning" not in err and "load_scorer(" not in err, err  # no Python warning header or source line


def test_logged_and_warned_messages_are_printed_once_even_with_a_root_handler(capfd):
    from keras_iqa.training.lr import warn_random_init

    root = logging.StreamHandler()  # what Beam's logging.basicConfig installs: must not print "WARNING:keras_iqa:..." too
    logging.root.addHandler(root)
    try:
        with cli_session():
            warn_random_init("test-family-once")
            logging.getLogger("keras_iqa").warning("resume: nothing usable")
    finally:
        logging.root.removeHandler(root)
    err = capfd.readouterr().err
    assert err.count("test-family-once") == 1 and err.count("resume: nothing usable") == 1, err
    assert "WARNING:keras_iqa" not in err and "UserWarning" not in err, err


def test_python_callers_still_get_python_warnings():
    from keras_iqa.training.lr import warn_random_init

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_random_init("test-family-python")
    assert [str(w.message) for w in caught if "test-family-python" in str(w.message)][0].count("backbone_weights=None") == 1


def test_int8_export_calibrates_with_every_image_of_a_small_dataset_and_hides_chatter_without_v(tmp_path, capfd):
    data = tmp_path / "records"
    write_tiny_records(str(data), n=12)
    images = _train_count(data)
    assert 0 < images < 32  # fewer than one calibration batch
    argv = ["export", "metaiqa-tiny", "--format", "tflite", "--quantize", "int8", "--int8-scope", "all", "--data", str(data),
            "--no-parity"]
    capfd.readouterr()
    assert cli.main([*argv, "--out", str(tmp_path / "quiet")]) == 0
    out, err = capfd.readouterr()
    assert f"int8 calibration: {images} crops from records:{data}" in out, out
    assert len(list((tmp_path / "quiet").glob("*_int8.tflite"))) == 1
    assert not [m for m in CHATTER if m in err], err

    assert cli.main([*argv, "--out", str(tmp_path / "verbose"), "-v"]) == 0
    err = capfd.readouterr().err
    assert "fully_quantize" in err, err  # TFLite's converter line comes back with -v


def test_calibration_refuses_only_a_dataset_without_training_images(tmp_path):
    from keras_iqa.export.samples import calibration_crops

    data = tmp_path / "records"
    write_tiny_records(str(data), n=6)
    model = types.SimpleNamespace(crop_size=16)
    crops, source = calibration_crops(model, str(data), n=128)
    assert crops.shape == (_train_count(data), 16, 16, 3) and source == f"records:{data}"
    rows = list(csv.DictReader(open(data / "splits.csv", newline="")))
    with open(data / "splits.csv", "w", newline="") as f:  # every image moved to the test subset
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "split_00": "test"} for r in rows)
    with pytest.raises(ValueError, match=r"no image has split_00 == 'train'|no training images"):
        calibration_crops(model, str(data), n=128)


def test_setting_spells_flags_set_and_python_keywords():
    assert setting("backbone_weights", None) == "backbone_weights=None"
    assert setting("batch_size", ...) == "batch_size=..."
    with cli_session(flags={"meta_target": "--meta-target"}, config_keys=["model.backbone_weights", "milestones"]):
        assert setting("meta_target", "pseudo") == "--meta-target pseudo"
        assert setting("backbone_weights", None) == "--set model.backbone_weights=null"  # a section's key
        assert setting("milestones", [10, 20]) == "--set 'milestones=[10, 20]'"
        assert setting("target", "pseudo") == "target='pseudo'"  # nothing the command can set: the Python spelling
    assert setting("meta_target", "pseudo") == "meta_target='pseudo'"  # the session is over
    with cli_session(flags={"overwrite": "--overwrite", "version": "--version"}, switches={"overwrite"}):
        assert (setting("version", 2), setting("overwrite", True)) == ("--version 2", "--overwrite")
    assert (setting("version", 2), setting("overwrite", True)) == ("version=2", "overwrite=True")


def test_reader_target_hint_python_and_cli(tmp_path, capfd):
    from data_pipeline.input import RecordReader

    pairs, auth = tmp_path / "pairs", tmp_path / "auth"
    write_tiny_records(str(pairs), kind="pair", n=12)
    write_tiny_records(str(auth), n=12)
    with pytest.raises(ValueError, match=r"use target='pseudo'"):
        RecordReader(str(pairs), target="mos")
    with pytest.raises(ValueError, match=r"meta_target='mos' would give NaN targets; use meta_target='pseudo'"):
        RecordReader(str(pairs), target="mos", target_key="meta_target")
    rc = cli.main(["train", "metaiqa", "--model", "metaiqa-tiny", "--crop-size", "32", "--meta-data", str(pairs),
                   "--meta-target", "mos", "--data", str(auth), "--out", str(tmp_path / "run")])
    err = capfd.readouterr().err
    assert rc == 2 and "--meta-target mos would give NaN targets; use --meta-target pseudo" in err, err
    assert "target='" not in err and "pair_dataset" not in err, err


def test_imagenet_hint_python_and_cli(tmp_path, capfd, monkeypatch):
    import keras_hub

    import keras_iqa

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    with pytest.raises(RuntimeError) as e:
        keras_iqa.create_model("reqa", backbone_weights="imagenet")
    assert "backbone_weights=None for random initialisation" in str(e.value) and "--set" not in str(e.value)
    data = tmp_path / "auth"
    write_tiny_records(str(data), n=12)
    rc = cli.main(["train", "reqa", "--data", str(data), "--out", str(tmp_path / "run"), "--crop-size", "64"])
    err = capfd.readouterr().err
    assert rc == 2 and "--set backbone_weights=null for random initialisation" in err, err
    assert "weights=None" not in err, err


def test_config_choice_hint_python_and_cli(tmp_path, capfd):
    from keras_iqa.tasks.reqa import REQATrainConfig, validate

    with pytest.raises(ValueError, match=r"\(set sampler=\.\.\.\)"):
        validate(REQATrainConfig(sampler="pairs"))
    rc = cli.main(["train", "reqa", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--set", "sampler=pairs"])
    assert rc == 2 and "(set --set sampler=...)" in capfd.readouterr().err
