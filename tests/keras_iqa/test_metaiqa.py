"""MetaIQA model (heads, config, .keras round trip, registry), the fine-tune path from meta-trained weights and the CLI
(the official checkpoint converter: tests/keras_iqa/test_converters.py)."""

import numpy as np
import pytest

import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import keras_iqa  # noqa: E402
from keras_iqa.cli import main as cli_main  # noqa: E402
from keras_iqa.models.metaiqa import MetaIQA  # noqa: E402
from keras_iqa.tasks.metaiqa import FINETUNE_PRESETS, MetaLearner, finetune, load_meta_weights  # noqa: E402
from run_checks import check_model_test_metrics  # noqa: E402

TINY = dict(width=0.125, blocks=(1, 1, 1, 1), crop_size=32, head_units=8)


def images(n, c=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, c, c, 3)).astype("float32")


@pytest.mark.parametrize("head", ["paper", "official"])
def test_heads_shapes_and_keras_round_trip(tmp_path, head):
    m = keras_iqa.create_model("metaiqa-tiny", head=head, crop_size=32)
    x = images(3)
    assert m(x).shape == (3, 1) and m.score(x).shape == (3,)
    names = [layer.name for layer in m.head_layers]
    if head == "official":
        assert names[:2] == ["imagenet_fc", "fc1"] and m.head_layers[0].units == 1000
        s = np.asarray(m.score(x))
        assert ((s > 0) & (s < 1)).all()  # sigmoid output
        assert m.head_layers[3].weights[0].shape == (1,)  # PReLU: one shared slope
    else:
        assert names == ["fc1", "fc2"]
    cfg = m.get_config()
    assert cfg["head"] == head and cfg["crop_policy"] == "random" and cfg["test_crops"] == 4  # the tiny card's contract
    path = tmp_path / "m.keras"
    m.save(path)
    m2 = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(m2.score(x)), np.asarray(m.score(x)), atol=1e-6)


def test_registry_cards_and_errors():
    assert {"metaiqa", "metaiqa-official", "metaiqa-tiny"} <= set(keras_iqa.list_models())
    card = keras_iqa.registry.get_card("metaiqa-official")
    assert card.config().head == "official" and card.score_range == (0.0, 1.0) and card.higher_better
    assert keras_iqa.registry.get_card("metaiqa").config().head == "paper"
    with pytest.raises(ValueError, match="head must be one of"):
        MetaIQA(head="mlp", **TINY)


def test_meta_trained_weights_load_into_a_fresh_model_and_fine_tune(tmp_path):
    """Meta-train (one tiny meta-step) -> save -> load into a normal MetaIQA -> fine-tune with model.fit (paper preset)."""
    rng = np.random.default_rng(0)
    model = keras_iqa.create_model("metaiqa-tiny", crop_size=32)
    tasks = [{"support_x": images(4, seed=i), "support_y": rng.uniform(size=4).astype("float32"),
              "query_x": images(2, seed=10 + i), "query_y": rng.uniform(size=2).astype("float32")} for i in range(2)]
    learner = MetaLearner(model, inner_steps=2, inner_lr=1e-3, outer_lr=0.5)
    before = [w.copy() for w in model.get_weights()]
    learner.meta_step(tasks)
    assert learner.trace_counts["task"] == 1
    path = tmp_path / "meta.weights.h5"
    model.save_weights(path)

    fresh = keras_iqa.create_model("metaiqa-tiny", crop_size=32)
    load_meta_weights(fresh, path)
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, model.get_weights()))

    ds = tf.data.Dataset.from_tensor_slices((images(8, seed=5), rng.uniform(size=8).astype("float32"))).batch(4)
    w0 = [w.copy() for w in fresh.get_weights()]
    hist = finetune(fresh, ds, epochs=1, preset="paper", verbose=0, lr=1e-3)
    assert np.isfinite(hist.history["loss"][0])
    assert any(np.abs(a - b).max() > 0 for a, b in zip(w0, fresh.get_weights()))
    assert FINETUNE_PRESETS["paper"]["lr"] == 1e-5 and FINETUNE_PRESETS["official"]["lr"] == 1e-4
    with pytest.raises(FileNotFoundError, match="Meta-trained weights not found"):
        load_meta_weights(fresh, tmp_path / "nope.weights.h5")


# ----------------------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("argv", [["train", "metaiqa", "--help"], ["convert", "--help"]])
def test_cli_help_teaches(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Examples" in out


def _tiny_records_or_skip(tmp_path):
    from data_pipeline.fixtures import write_tiny_records
    syn, auth = tmp_path / "syn", tmp_path / "auth"
    write_tiny_records(str(syn), kind="synthetic", n=24, n_types=3)
    write_tiny_records(str(auth), kind="authentic", n=20)
    return syn, auth


def test_cli_train_metaiqa_end_to_end(tmp_path):
    syn, auth = _tiny_records_or_skip(tmp_path)
    out = tmp_path / "run"
    argv = ["train", "metaiqa", "--meta-data", str(syn), "--data", str(auth), "--out", str(out), "--model", "metaiqa-tiny",
            "--crop-size", "32", "--batch-size", "4", "--set", "meta_epochs=1", "--set", "finetune_epochs=1",
            "--set", "inner_steps=1", "--set", "tasks_per_batch=2", "--quiet"]
    assert cli_main(argv) == 0
    assert (out / "model.keras").exists() and (out / "results.json").exists() and (out / "config.json").exists()
    assert (out / "meta" / "meta_state" / "theta-0001.weights.h5").exists()  # the resume state after meta epoch 1
    import json

    res = json.loads((out / "results.json").read_text())
    assert res["meta_traces"]["task"] == 1 and res["meta_traces"]["outer"] == 1  # reader tasks: ragged batches, one trace
    assert len(res["meta_history"]["query_loss"]) == 1
    check_model_test_metrics(out, auth)  # SROCC / PLCC = scipy's over the saved model's predictions, one per test image


def _metaiqa_cfg(preset, *sets):
    import argparse

    from keras_iqa.commands.train_metaiqa import _config

    args = argparse.Namespace(preset=preset, config=[], set=list(sets), model=None, protocol=None, meta_target=None,
                              split=None, held_out=None, crop_size=None, batch_size=None, meta_epochs=None,
                              finetune_epochs=None, seed=None, precision=None, distribute=None)
    return _config(args)


def test_presets_set_the_test_time_contract_and_training_scale():
    """Paper default: test at the training scale (25 random native-resolution crops); official: 256x256 resize before the
    training crops (support and fine-tuning), whole image resized to 224 at test, batch 50."""
    import keras_iqa
    from keras_iqa.commands.train_metaiqa import set_test_contract

    paper, off = _metaiqa_cfg("paper"), _metaiqa_cfg("official")
    assert (paper.eval_mode, paper.eval_crops, paper.resize, paper.finetune_resize) == ("random", 25, None, None)
    assert (off.eval_mode, off.batch_size, off.resize, off.finetune_resize) == ("resize", 50, [256, 256], [256, 256])
    m = set_test_contract(keras_iqa.create_model("metaiqa-tiny"), paper)
    assert (m.crop_policy, m.test_crops, m.test_resize) == ("random", 25, None)
    m = set_test_contract(keras_iqa.create_model("metaiqa-tiny"), off)
    assert (m.crop_policy, m.test_crops, m.test_resize) == ("resize", 1, (256, 256))
    assert _metaiqa_cfg("paper", "resize=[300,400]").finetune_resize == [300, 400]


def test_cli_lodo_tests_the_held_out_type_without_and_with_reference_disjoint_finetuning(tmp_path):
    import json

    import pandas as pd

    from data_pipeline.fixtures import write_tiny_records
    from data_pipeline.input import RecordReader

    syn = tmp_path / "syn"
    write_tiny_records(str(syn), kind="synthetic", n=24, n_types=3, n_refs=4)
    idx = RecordReader(str(syn)).index()
    n_type = int((idx["type"] == 2).sum())
    base = ["train", "metaiqa", "--protocol", "lodo", "--meta-data", str(syn), "--held-out", "2", "--model", "metaiqa-tiny",
            "--crop-size", "16", "--batch-size", "4", "--set", "meta_epochs=1", "--set", "finetune_epochs=1",
            "--set", "inner_steps=1", "--set", "tasks_per_batch=2", "--set", "eval_crops=2", "--quiet"]
    assert cli_main(base + ["--out", str(tmp_path / "a")]) == 0
    row = pd.read_csv(tmp_path / "a" / "lodo.csv").iloc[0]
    assert int(row["n"]) == n_type and not bool(row["finetuned"])  # every image of the held-out type, no fine-tuning
    assert cli_main(base + ["--out", str(tmp_path / "b"), "--set", "lodo_finetune=true"]) == 0
    row = pd.read_csv(tmp_path / "b" / "lodo.csv").iloc[0]
    assert bool(row["finetuned"]) and int(row["n"]) + int(row["n_finetune"]) == n_type
    assert int(row["references_finetune"]) + int(row["references_test"]) == 4  # disjoint reference sets
    assert json.loads((tmp_path / "b" / "results.json").read_text())["protocol"] == "lodo"


def test_cards_test_at_their_training_scale():
    """Paper cards: 25 random crops at native resolution (the scale of the paper's random 224 training crops); the official
    card: the whole image resized to 224 (the released code trains on 256x256-resized images)."""
    from keras_iqa.registry import get_card

    paper, official = get_card("metaiqa").config(), get_card("metaiqa-official").config()
    assert (paper.crop_policy, paper.test_crops) == ("random", 25)
    assert (official.crop_policy, official.test_crops) == ("resize", 1)


def test_the_command_is_an_adapter_over_the_task():
    """`keras-iqa train metaiqa` and the Python API share the task: one config class, one preset table, one validation,
    one test-time contract; bad choices are errors that name the key."""
    import keras_iqa.commands.train_metaiqa as C
    import keras_iqa.tasks.metaiqa as T
    from keras_iqa.tasks import get_task

    assert get_task("metaiqa") is T.TASK and T.TASK.config_cls is T.MetaIQATrainConfig is C.MetaIQATrainConfig
    assert C.PRESETS is T.PRESETS and C.set_test_contract is T.set_test_contract
    assert _metaiqa_cfg("official", "protocol=lodo") == T.validate(T.MetaIQATrainConfig(**{**T.PRESETS["official"],
                                                                                          "protocol": "lodo"}))
    for bad, match in (("protocol=table9", "protocol must be meta, lodo or baseline"),
                       ("eval_mode=center", "eval_mode must be random, grid or resize"),
                       ("precision=fp8", "precision must be auto, fp32 or bf16")):
        with pytest.raises(ValueError, match=match):
            _metaiqa_cfg("paper", bad)
    with pytest.raises(ValueError, match="adam_state=fresh"):
        _metaiqa_cfg("official", "distribute=mirrored")
    with pytest.raises(ValueError, match=r"meta_data=\[DIR, \.\.\.\] is required"):
        T.train(T.MetaIQATrainConfig(model="metaiqa-tiny"), meta_data=[], data=None, out="unused")
