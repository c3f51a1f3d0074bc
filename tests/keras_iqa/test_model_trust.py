"""Loading models and presets from elsewhere (docs/security.md, Models: data and programs): SavedModels with ops a scorer
does not use are refused before anything of them runs (every family's own export passes: tests/keras_iqa/test_export.py), `.tflite` custom ops likewise, presets never hold a SavedModel,
a saved `backbone_weights` is never fetched, foreign models say what they are, and keras-iqa `.keras` files load with
Keras's own loader once `keras_iqa` is imported."""

import http.server
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import keras_iqa
from keras_iqa.cli import main
from keras_iqa.export.contract import model_contract
from keras_iqa.export.savedmodel import CONTRACT_FILE
from keras_iqa.presets import PresetError, from_preset, save_to_preset
from keras_iqa.presets.format import _file_records
from keras_iqa.scoring import load_keras_model, load_scorer
from keras_iqa.scoring.savedmodel_check import MAIN_GRAPH, UntrustedModelError, check_tflite, graph_ops

@pytest.fixture(scope="module")
def tiny_model():
    return keras_iqa.create_model("metaiqa-tiny")


def _photo(path, seed=0):
    from PIL import Image

    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (72, 90, 3), dtype=np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------------------ SavedModel op check

def _contract_dir(model, path: Path) -> Path:
    (path / CONTRACT_FILE).parent.mkdir(parents=True, exist_ok=True)
    (path / CONTRACT_FILE).write_text(json.dumps(model_contract(model, format="savedmodel", name="evil", version=1)))
    return path


def _evil_signature_model(model, path: Path, target: Path) -> Path:
    """A SavedModel carrying the keras-iqa contract whose predict_crops writes `target` before scoring."""
    import tensorflow as tf

    c = model.crop_size

    class Evil(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, c, c, 3], tf.float32, name="crops")])
        def predict_crops(self, crops):
            with tf.control_dependencies([tf.io.write_file(str(target), "pwned")]):
                score = tf.reduce_mean(crops, axis=[1, 2, 3])
            return {"score": score, "score_normalized": score / 255.0}

    m = Evil()
    tf.saved_model.save(m, str(path), signatures={"predict_crops": m.predict_crops})
    return _contract_dir(model, path)


def _evil_initializer_model(model, path: Path, target: Path) -> Path:
    """A SavedModel carrying the keras-iqa contract whose resource initializer writes `target` when it is loaded."""
    import tensorflow as tf

    c = model.crop_size

    class Resource(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self):
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="evil_counter")

        def _initialize(self):
            tf.io.write_file(str(target), "pwned at load")
            tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=tf.constant(1.0))

    class Evil(tf.Module):
        def __init__(self):
            super().__init__()
            self.res = Resource()

        @tf.function(input_signature=[tf.TensorSpec([None, c, c, 3], tf.float32, name="crops")])
        def predict_crops(self, crops):
            score = tf.reduce_mean(crops, axis=[1, 2, 3])
            return {"score": score, "score_normalized": score / 255.0}

    m = Evil()
    tf.saved_model.save(m, str(path), signatures={"predict_crops": m.predict_crops})
    target.unlink(missing_ok=True)  # tracing ran the initializer once in this process
    return _contract_dir(model, path)


def test_savedmodel_writing_a_file_when_scoring_is_refused_by_score_unless_trusted(tmp_path, tiny_model, capsys):
    target = tmp_path / "written_by_model.txt"
    path = _evil_signature_model(tiny_model, tmp_path / "evil" / "1", target)
    photo = _photo(tmp_path / "a.png")
    assert main(["score", str(path), str(photo)]) != 0
    err = capsys.readouterr().err
    assert "op WriteFile in function" in err and "predict_crops" in err and "--trust-model" in err, err
    assert "Traceback" not in err
    assert not target.exists()
    with pytest.raises(UntrustedModelError, match="WriteFile"):
        keras_iqa.score(photo, model=str(path))
    assert not target.exists()
    # trusted, it loads and runs: the payload is real, so the refusal above is what kept the file unwritten
    assert main(["score", str(path), str(photo), "--trust-model"]) == 0
    assert target.read_text() == "pwned"


def test_savedmodel_whose_initializer_writes_at_load_is_refused_before_load(tmp_path, tiny_model):
    target = tmp_path / "written_at_load.txt"
    path = _evil_initializer_model(tiny_model, tmp_path / "evil" / "1", target)
    with pytest.raises(UntrustedModelError, match=r"op WriteFile in function \S*initialize"):
        load_scorer(path)
    assert not target.exists()
    scorer = load_scorer(path, trust=True)
    assert target.read_text() == "pwned at load"
    assert scorer.kind == "savedmodel"


def test_op_check_reads_functions_named_by_attributes_and_ops_named_as_functions():
    """A PartitionedCall whose `f` names an op (TensorFlow runs it as a one-node function) is checked as that op; the
    checkpoint ops pass only in functions the saver alone calls."""
    from tensorflow.core.protobuf import meta_graph_pb2

    mg = meta_graph_pb2.MetaGraphDef()
    mg.saver_def.save_tensor_name, mg.saver_def.restore_op_name = "save:0", "restore"
    lib = mg.graph_def.library
    restore = lib.function.add()
    restore.signature.name = "traced_restore"
    restore.node_def.add(name="r", op="RestoreV2")
    serve = lib.function.add()
    serve.signature.name = "serve"
    call = serve.node_def.add(name="call", op="PartitionedCall")
    call.attr["f"].func.name = "WriteFile"
    mg.graph_def.node.add(name="restore", op="StatefulPartitionedCall").attr["f"].func.name = "traced_restore"
    mg.graph_def.node.add(name="serving", op="StatefulPartitionedCall").attr["f"].func.name = "serve"
    ops, saver_only = graph_ops(mg)
    assert saver_only == {"traced_restore"}
    assert ops["serve"] == {"PartitionedCall", "WriteFile"} and ops["traced_restore"] == {"RestoreV2"}
    assert ops[MAIN_GRAPH] == {"StatefulPartitionedCall"}
    # reached from a signature too, the restore function gets the scorer list
    mg.graph_def.node.add(name="also", op="traced_restore")
    assert graph_ops(mg)[1] == set()


def test_tflite_with_a_custom_operator_is_refused_unless_trusted(tmp_path, tiny_model):
    import tensorflow as tf
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from keras_iqa.export.tflite import embed_contract

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def double(x):
        return x * 2.0

    flat = tf.lite.TFLiteConverter.from_concrete_functions([double.get_concrete_function()], double).convert()
    clean = tmp_path / "clean.tflite"
    clean.write_bytes(flat)
    check_tflite(clean)
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flat))
    model.operatorCodes[0].builtinCode = model.operatorCodes[0].deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    model.operatorCodes[0].customCode = b"FlexWriteFile"
    evil = tmp_path / "evil.tflite"
    evil.write_bytes(embed_contract(bytes(flatbuffer_utils.convert_object_to_bytearray(model)),
                                    model_contract(tiny_model, format="tflite")))
    with pytest.raises(UntrustedModelError, match="custom operator FlexWriteFile"):
        load_scorer(evil)
    # trusted, the check is skipped; this LiteRT interpreter has no Flex delegate and refuses the op itself
    with pytest.raises(RuntimeError, match="Select TensorFlow op"):
        load_scorer(evil, trust=True)


# ------------------------------------------------------------------------------------------------ presets are data

def test_preset_never_holds_a_savedmodel(tmp_path, tiny_model):
    folder = save_to_preset(tiny_model, tmp_path / "p")
    (folder / "saved_model.pb").write_bytes(b"")
    with pytest.raises(PresetError, match="holds a SavedModel"):
        from_preset(str(folder))
    with pytest.raises(PresetError, match="save_to_preset: .* holds a SavedModel"):
        save_to_preset(tiny_model, folder)


# ------------------------------------------------------------------------------------------------ loading never fetches

class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def loopback(monkeypatch):
    _Recorder.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    import huggingface_hub.constants

    monkeypatch.setenv("HF_ENDPOINT", url)  # hf:// handles resolve against the loopback server
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    yield url
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def standard_backbone_model():
    """A MetaIQA with the standard ResNet-18 (pretrained weights need it), random weights, small crops."""
    return keras_iqa.create_model("metaiqa", backbone_weights=None, crop_size=64, test_crops=2)


def _references(url, tmp_path):
    return {"http": f"{url}/attacker/evil-backbone", "hf": "hf://attacker/evil-backbone",
            "path": str(tmp_path / "attacker_backbone")}


@pytest.mark.parametrize("kind", ["http", "hf", "path"])
def test_preset_and_keras_file_naming_a_remote_backbone_load_without_a_request(tmp_path, loopback, kind,
                                                                               standard_backbone_model):
    model = standard_backbone_model
    ref = _references(loopback, tmp_path)[kind]
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    folder = save_to_preset(model, tmp_path / "preset")
    config = json.loads((folder / "config.json").read_text())
    config["config"]["backbone_weights"] = ref
    (folder / "config.json").write_text(json.dumps(config))
    meta = json.loads((folder / "metadata.json").read_text())
    meta["files"] = _file_records(folder)
    (folder / "metadata.json").write_text(json.dumps(meta))
    loaded = from_preset(str(folder))
    np.testing.assert_allclose(np.asarray(loaded.score(x)), np.asarray(model.score(x)), atol=1e-5)

    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["backbone_weights"] = ref
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    loaded = load_keras_model(path)
    np.testing.assert_allclose(np.asarray(loaded.score(x)), np.asarray(model.score(x)), atol=1e-5)
    assert _Recorder.requests == []


def test_the_loopback_recorder_sees_a_fetch(loopback):
    """The recorder and the hub endpoint work: a backbone fetched on purpose reaches the loopback server."""
    from keras_iqa.backbones import load_preset_backbone

    with pytest.raises(RuntimeError):
        load_preset_backbone("hf://attacker/evil-backbone")
    assert any("attacker/evil-backbone" in r for r in _Recorder.requests), _Recorder.requests


# ------------------------------------------------------------------------------------------------ foreign models

@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    import keras

    tmp = tmp_path_factory.mktemp("foreign")
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    seq.save(tmp / "seq.keras")
    (tmp / "text.keras").write_text("not a zip")
    folder = tmp / "preset"
    save_to_preset(keras_iqa.create_model("metaiqa-tiny"), folder)
    config = {"module": "keras_iqa.layers.normalization", "class_name": "ImageNetNormalization",
              "registered_name": "keras_iqa>ImageNetNormalization", "config": {}}
    (folder / "config.json").write_text(json.dumps(config))
    meta = json.loads((folder / "metadata.json").read_text())
    meta["files"] = _file_records(folder)
    (folder / "metadata.json").write_text(json.dumps(meta))
    return tmp


@pytest.mark.parametrize("name, message", [
    ("seq.keras", "not a keras-iqa model (it is a keras.Sequential)"),
    ("text.keras", "not a .keras archive"),
    ("preset", "not a keras-iqa model (it is a keras_iqa>ImageNetNormalization)"),
])
def test_foreign_models_say_what_they_are_in_score_evaluate_and_export(foreign, tmp_path, capsys, name, message):
    from keras_iqa.evaluation.sources import load_source

    path = foreign / name
    photo = _photo(tmp_path / "a.png")
    for argv in (["score", str(path), str(photo)], ["export", str(path), "--format", "savedmodel", "--out", str(tmp_path / "out")]):
        if name == "preset" and argv[0] == "export":
            continue  # export takes runs, .keras files and cards
        assert main(argv) != 0
        err = capsys.readouterr().err
        assert message in err and str(path) in err and "Traceback" not in err, (argv, err)
    if name != "preset":
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_source(path)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        keras_iqa.load_model(path)


# ------------------------------------------------------------------------------------------------ Keras's own loader

def test_keras_load_model_finds_keras_iqa_classes_once_keras_iqa_is_imported(tmp_path, tiny_model):
    path = tmp_path / "m.keras"
    tiny_model.save(path)
    probe = ("import json, sys\n{imports}\nm = keras.saving.load_model(sys.argv[1])\n"
             "print(json.dumps([type(m).__name__, m.crop_size]))")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    for imports in ("import keras_iqa\nimport keras", "import keras\nimport keras_iqa"):
        proc = subprocess.run([sys.executable, "-c", probe.format(imports=imports), str(path)], capture_output=True,
                              text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["MetaIQA", tiny_model.crop_size], imports


def test_keras_iqa_load_model_round_trips(tmp_path, tiny_model):
    x = np.random.default_rng(1).uniform(0, 255, (2, tiny_model.crop_size, tiny_model.crop_size, 3)).astype("float32")
    tiny_model.save(tmp_path / "m.keras")
    loaded = keras_iqa.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(loaded.score(x)), np.asarray(tiny_model.score(x)), atol=1e-6)
    folder = save_to_preset(tiny_model, tmp_path / "preset")
    np.testing.assert_allclose(np.asarray(keras_iqa.load_model(folder).score(x)), np.asarray(tiny_model.score(x)),
                               atol=1e-6)


# ------------------------------------------------------------------------------------------------ images, not crops

def test_model_score_of_an_image_is_keras_iqa_score_and_call_refuses_images(tmp_path):
    from PIL import Image

    model = keras_iqa.create_model("reqa-tiny")
    photo = _photo(tmp_path / "a.png")
    pixels = np.asarray(Image.open(photo))
    expected = float(keras_iqa.score(photo, model=model))
    for x in (str(photo), photo, Image.open(photo), pixels):
        assert float(model.score(x)) == pytest.approx(expected, abs=1e-4), type(x)
    for x in (str(photo), Image.open(photo), pixels):
        with pytest.raises(TypeError, match=r"model.score\(x\) or keras_iqa.score"):
            model(x)
    crops = np.random.default_rng(0).uniform(0, 255, (3, model.crop_size, model.crop_size, 3)).astype("float32")
    assert tuple(model(crops).shape)[0] == 3 and tuple(model.score(crops).shape) == (3,)
