"""Presets (`keras_iqa.presets`): save -> load in a fresh process for each family, a preset served over HTTP from
127.0.0.1 with a right and a wrong hash and a truncated file, the offline error, local folders that are broken, the
registry entry format, `keras-iqa preset` and `keras-iqa models` (no TensorFlow)."""

import functools
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import keras_iqa
from keras_iqa import presets
from keras_iqa.presets import PresetError, PresetHashError, PresetUnavailableError

FAMILIES = ("reqa-tiny", "metaiqa-tiny", "hcl-tiny")
# a contract unlike the cards' defaults, so the round trip proves every field travels
CONTRACT = {"test_crops": 3, "crop_policy": "grid", "test_resize": (72, 90)}


def _images():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((70, 96, 3), (64, 64, 3), (120, 80, 3))]


# the subprocess: load every preset, score the images through the test-time contract, print JSON
_LOAD = """
import json, sys
import numpy as np
import keras_iqa
from data_pipeline.test_time import TestTimeCrops
from keras_iqa.scoring import _from_keras_model, score_images
out = {}
images = [np.load(p) for p in json.loads(sys.argv[2])]
for card, folder in json.loads(sys.argv[1]).items():
    model = keras_iqa.from_preset(folder)
    out[card] = {"scores": score_images(_from_keras_model(model, "preset", folder), images).tolist(),
                 "contract": TestTimeCrops.from_model(model).to_dict(), "card": model.card_name,
                 "range": list(model.score_range), "higher_better": model.higher_better, "class": type(model).__name__}
print("RESULT=" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Each family's tiny card saved as a preset here, then loaded and scored in ONE fresh interpreter."""
    import keras

    from data_pipeline.test_time import TestTimeCrops
    from keras_iqa.scoring import _from_keras_model, score_images

    root = tmp_path_factory.mktemp("presets")
    images = _images()
    paths = []
    for i, img in enumerate(images):
        np.save(root / f"img{i}.npy", img)
        paths.append(str(root / f"img{i}.npy"))
    here, folders = {}, {}
    for card in FAMILIES:
        keras.utils.set_random_seed(1)
        model = keras_iqa.create_model(card)
        for k, v in CONTRACT.items():
            setattr(model, k, v)
        folders[card] = str(model.save_to_preset(root / card, metadata={"license": "test"}))
        here[card] = {"scores": score_images(_from_keras_model(model, "keras", card), images).tolist(),
                      "contract": TestTimeCrops.from_model(model).to_dict(), "class": type(model).__name__}
    env = {**os.environ, "KERAS_IQA_CACHE": str(root / "cache")}
    out = subprocess.run([sys.executable, "-c", _LOAD, json.dumps(folders), json.dumps(paths)], capture_output=True,
                         text=True, timeout=600, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT=")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    return here, json.loads(lines[0][len("RESULT="):]), folders


@pytest.mark.parametrize("card", FAMILIES)
def test_round_trip_in_a_fresh_process_gives_identical_scores(round_trip, card):
    here, there, folders = round_trip
    assert there[card]["scores"] == here[card]["scores"]  # bit-identical, through the same crops
    assert there[card]["contract"] == here[card]["contract"]
    assert there[card]["contract"]["policy"] == "grid" and there[card]["contract"]["resize"] == [72, 90]
    assert there[card]["card"] == card and there[card]["class"] == here[card]["class"]
    meta = json.loads((Path(folders[card]) / presets.METADATA_FILE).read_text())
    assert meta["card"] == card and meta["family"] == card.split("-")[0] and meta["license"] == "test"
    assert meta["score_range"] == there[card]["range"] and meta["higher_better"] is there[card]["higher_better"]
    assert meta["test_time"] == here[card]["contract"] and meta["paper"]
    for name in (presets.CONFIG_FILE, presets.WEIGHTS_FILE):
        assert meta["files"][name]["sha256"] == presets.sha256_file(Path(folders[card]) / name)


def test_recorded_hashes_are_the_files_sha256(round_trip, tmp_path):
    """The SHA-256 and size a saved preset records for each file are hashlib's over the file's bytes (not the package's own
    helper checked against itself); the helper gives the published digest of b"abc" (FIPS 180-2)."""
    _, _, folders = round_trip
    for card, folder in folders.items():
        meta = json.loads((Path(folder) / presets.METADATA_FILE).read_text())
        assert set(meta["files"]) >= {presets.CONFIG_FILE, presets.WEIGHTS_FILE}, card
        for name, record in meta["files"].items():
            data = (Path(folder) / name).read_bytes()
            assert record["sha256"] == hashlib.sha256(data).hexdigest(), (card, name)
            assert record["bytes"] == len(data), (card, name)
    (tmp_path / "abc").write_bytes(b"abc")
    assert presets.sha256_file(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --------------------------------------------------------------------------------------------------------- HTTP server
class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        if self.path.startswith("/short/") and self.path.endswith(presets.WEIGHTS_FILE):
            body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))  # says the full size, sends half: a cut connection
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            return
        super().do_GET()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A metaiqa-tiny preset under http://127.0.0.1:PORT/{good,trunc,short}/ (trunc: the weights file cut in half on
    the server; short: the server announces the full length and sends half)."""
    import keras

    root = tmp_path_factory.mktemp("served")
    keras.utils.set_random_seed(2)
    model = keras_iqa.create_model("metaiqa-tiny")
    good = presets.save_to_preset(model, root / "good", metadata={"license": "test"})
    for name in ("trunc", "short"):
        shutil.copytree(good, root / name)
    w = root / "trunc" / presets.WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    x = np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    try:
        yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "root": root, "model": model, "x": x,
               "server": server}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _cache_is_empty(cache: Path) -> bool:
    return not cache.exists() or not any(cache.iterdir())


def test_served_preset_with_the_right_hash_loads_and_is_cached(served, tmp_path):
    cache = tmp_path / "cache"
    entry = presets.registry_entry(served["root"] / "good", handle=served["url"] + "/good", command="test fixture")
    entry["metadata"].update(dataset="none", protocol="none", srocc=0.0, plcc=0.0, machine="test", license="test")
    presets.register_preset("test_metaiqa_served", entry)
    try:
        assert presets.is_preset_handle("test_metaiqa_served")
        assert presets.local_dir("test_metaiqa_served", cache) is None
        model = keras_iqa.from_preset("test_metaiqa_served", cache=cache)
        np.testing.assert_array_equal(model.score(served["x"]), served["model"].score(served["x"]))
        folder = presets.cached_path("test_metaiqa_served", cache)
        assert sorted(p.name for p in cache.iterdir()) == [folder.name]  # no partial downloads left
        assert sorted(p.name for p in folder.iterdir()) == sorted(presets.PRESET_FILES)
        assert presets.local_dir("test_metaiqa_served", cache) == folder
        rows = {r["name"]: r for r in presets.list_presets(cache)}
        assert rows["test_metaiqa_served"]["local"] == str(folder)
        # from the cache: the server is not asked again (a file changed on it is not fetched)
        (served["root"] / "good" / "metadata.json").touch()
        again = keras_iqa.from_preset("test_metaiqa_served", cache=cache)
        np.testing.assert_array_equal(again.score(served["x"]), model.score(served["x"]))
    finally:
        presets.unregister_preset("test_metaiqa_served")


def test_served_preset_with_a_wrong_hash_is_refused_and_not_cached(served, tmp_path):
    cache = tmp_path / "cache"
    entry = presets.registry_entry(served["root"] / "good", handle=served["url"] + "/good", command="test fixture")
    entry["metadata"].update(dataset="none", protocol="none", srocc=0.0, plcc=0.0, machine="test", license="test")
    right = entry["sha256"][presets.WEIGHTS_FILE]
    wrong = ("0" if right[0] != "0" else "1") + right[1:]
    entry["sha256"][presets.WEIGHTS_FILE] = wrong
    presets.register_preset("test_metaiqa_wrong", entry)
    try:
        with pytest.raises(PresetHashError) as e:
            keras_iqa.from_preset("test_metaiqa_wrong", cache=cache)
        msg = str(e.value)
        assert wrong in msg and right in msg and presets.WEIGHTS_FILE in msg and "test_metaiqa_wrong" in msg
        assert e.value.expected == wrong and e.value.actual == right
        assert _cache_is_empty(cache), list(cache.rglob("*"))
    finally:
        presets.unregister_preset("test_metaiqa_wrong")


def test_truncated_file_on_the_server_is_refused(served, tmp_path):
    cache = tmp_path / "cache"
    good = served["root"] / "good" / presets.WEIGHTS_FILE
    with pytest.raises(PresetHashError) as e:
        presets.from_preset(served["url"] + "/trunc", cache=cache)
    assert e.value.expected == presets.sha256_file(good)
    assert e.value.actual == presets.sha256_file(served["root"] / "trunc" / presets.WEIGHTS_FILE)
    assert e.value.expected in str(e.value) and e.value.actual in str(e.value)
    assert _cache_is_empty(cache)


def test_download_cut_short_is_refused(served, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(PresetHashError, match="truncated") as e:
        presets.from_preset(served["url"] + "/short", cache=cache)
    assert presets.sha256_file(served["root"] / "good" / presets.WEIGHTS_FILE) in str(e.value)
    assert _cache_is_empty(cache)


def test_a_pinned_metadata_hash_guards_an_unregistered_url(served, tmp_path):
    url = served["url"] + "/good"
    with pytest.raises(PresetHashError, match=presets.METADATA_FILE):
        presets.fetch_preset(url, cache=tmp_path / "c1", sha256="ab" * 32)
    assert _cache_is_empty(tmp_path / "c1")
    right = presets.sha256_file(served["root"] / "good" / presets.METADATA_FILE)
    assert presets.fetch_preset(url, cache=tmp_path / "c2", sha256=right).parent == tmp_path / "c2"


def test_plain_http_only_for_loopback():
    with pytest.raises(PresetError, match="https://"):
        presets.fetch_preset("http://example.com/presets/reqa")


# ------------------------------------------------------------------------------------------------------------- offline
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_error_names_the_handle_the_cache_and_where_to_copy(served, tmp_path):
    cache = tmp_path / "cache"
    handle = f"http://127.0.0.1:{_closed_port()}/presets/metaiqa"
    with pytest.raises(PresetUnavailableError) as e:
        presets.from_preset(handle, cache=cache)
    target = presets.cached_path(handle, cache)
    msg = str(e.value)
    assert handle in msg and str(target) in msg and "copy" in msg and presets.WEIGHTS_FILE in msg
    assert _cache_is_empty(cache)
    # doing what the message says makes the handle load without network
    shutil.copytree(served["root"] / "good", target)
    model = presets.from_preset(handle, cache=cache)
    np.testing.assert_array_equal(model.score(served["x"]), served["model"].score(served["x"]))
    # a copied file that is not the preset's is refused, offline too
    (target / presets.WEIGHTS_FILE).write_bytes(b"\0" * 100)
    with pytest.raises(PresetUnavailableError, match="SHA-256"):
        presets.from_preset(handle, cache=cache)


def test_offline_kaggle_and_hf_handles(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")  # kagglehub's test endpoint: http://localhost:7777
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    handle = "kaggle://keras-iqa-test/none/keras/none/1"
    with pytest.raises(PresetUnavailableError) as e:
        presets.from_preset(handle, cache=cache)
    assert handle in str(e.value) and str(presets.cached_path(handle, cache)) in str(e.value)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    handle = "hf://keras-iqa-test/none"
    with pytest.raises(PresetUnavailableError) as e:
        presets.from_preset(handle, cache=cache)
    assert handle in str(e.value) and str(presets.cached_path(handle, cache)) in str(e.value)
    assert _cache_is_empty(cache)


# ------------------------------------------------------------------------------------------------------ local folders
def test_broken_local_folders_are_refused_with_the_reason(served, tmp_path):
    good = served["root"] / "good"
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    w = bad / presets.WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[:-10])  # a truncated copy
    with pytest.raises(PresetHashError, match=presets.sha256_file(good / presets.WEIGHTS_FILE)):
        presets.from_preset(str(bad))
    shutil.copyfile(good / presets.WEIGHTS_FILE, w)
    (bad / presets.METADATA_FILE).write_text("{not json")
    with pytest.raises(PresetError, match="metadata.json"):
        presets.from_preset(str(bad))
    (bad / presets.METADATA_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(PresetError, match="not a keras-iqa preset"):
        presets.from_preset(str(bad))
    (bad / presets.METADATA_FILE).unlink()
    assert not presets.is_preset_handle(str(bad))
    with pytest.raises(PresetError, match="metadata.json missing"):
        presets.from_preset(str(bad))
    with pytest.raises(PresetError, match="not a preset"):
        presets.from_preset(str(tmp_path / "nowhere"))
    assert not presets.is_preset_handle("reqa-tiny")  # a card (random weights) is not a preset
    assert presets.is_preset_handle(str(good)) and presets.is_preset_handle("kaggle://a/b/keras/c/1")


def test_registry_entries_are_validated():
    for name, entry in presets.registered_presets().items():  # the shipped registry (empty until weights exist)
        presets.validate_entry(name, entry)
    ok = {"handle": "https://example.org/p", "sha256": {f: "a" * 64 for f in presets.PRESET_FILES},
          "metadata": {k: "x" for k in presets.ENTRY_METADATA_FIELDS}}
    assert presets.validate_entry("p", ok) is ok
    with pytest.raises(PresetError, match="sha256"):
        presets.validate_entry("p", {**ok, "sha256": {"model.weights.h5": "a" * 64}})
    with pytest.raises(PresetError, match="srocc"):
        presets.validate_entry("p", {**ok, "metadata": {k: "x" for k in presets.ENTRY_METADATA_FIELDS if k != "srocc"}})
    with pytest.raises(PresetError, match="handle"):
        presets.validate_entry("p", {**ok, "handle": "/local/folder"})
    with pytest.raises(PresetError, match="card"):
        presets.validate_entry("reqa-tiny", ok)


# ------------------------------------------------------------------------------------------------------------------ CLI
def test_preset_save_from_a_run_then_show_and_score(tmp_path, capsys):
    import keras

    from keras_iqa import cli
    from keras_iqa.training.runner import RunDir, save_json

    keras.utils.set_random_seed(4)
    run = RunDir.create(tmp_path / "runs" / "meta", config={"model": "metaiqa-tiny", "data": "records/kadid10k"})
    model = keras_iqa.create_model("metaiqa-tiny")
    run.save_final(model)
    save_json({"model": "metaiqa-tiny", "data": "records/kadid10k", "split": "split_00", "protocol": "paper",
               "test": {"n": 20, "srocc": 0.5, "plcc": 0.25}}, run.path / "results.json")
    out = tmp_path / "presets" / "meta_kadid"
    handle = "kaggle://org/keras-iqa/keras/meta_kadid/1"
    assert cli.main(["preset", "save", str(run.path), "--out", str(out), "--license", "CC0-1.0", "--handle", handle]) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / presets.METADATA_FILE).read_text())
    assert meta["card"] == "metaiqa-tiny" and meta["name"] == "meta_kadid" and meta["license"] == "CC0-1.0"
    assert meta["metrics"]["srocc"] == 0.5 and meta["metrics"]["plcc"] == 0.25
    assert meta["training"]["data"] == "records/kadid10k" and meta["training"]["split"] == "split_00"
    # the description says what the weights learned, not the card's architecture text
    described = ("metaiqa-tiny trained on records/kadid10k (split_00, protocol paper); test SROCC 0.500, PLCC 0.250 "
                 "on 20 images")
    assert meta["description"] == described, meta["description"]
    assert meta["architecture"] == keras_iqa.registry.get_card("metaiqa-tiny").description
    assert "smoke runs" not in meta["description"] and described in printed
    assert presets.sha256_file(out / presets.WEIGHTS_FILE) in printed and "'meta_kadid'" in printed
    assert handle in printed and "registry entry" in printed
    assert cli.main(["preset", "show", str(out)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == f"meta_kadid: {described}", shown
    text = "\n".join(shown)
    assert "registry entry" not in text and "iqa_presets.py" not in text and "{" not in text, text
    for row in ("scores       0 to 1, higher = better", "licence      CC0-1.0", "SHA-256 verified",
                "trained on   records/kadid10k, split split_00, protocol paper", f"keras-iqa score {out} PHOTOS"):
        assert row in text, (row, text)
    assert cli.main(["preset", "show", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["card"] == "metaiqa-tiny"
    # save_to_preset from Python: the description comes from the training metadata given
    py = presets.save_to_preset(model, tmp_path / "py", metadata={"training": {"data": "my 300 photos", "protocol":
                                                                               "80/20"}, "metrics": {"srocc": 0.8}})
    assert presets.load_metadata(str(py))["description"] == "metaiqa-tiny trained on my 300 photos (protocol 80/20); " \
                                                            "test SROCC 0.800"
    # without --handle, no registry entry: what a user needs to use it
    assert cli.main(["preset", "save", "metaiqa-tiny", "--out", str(tmp_path / "untrained")]) == 0
    printed = capsys.readouterr().out
    assert "registry entry for" not in printed and "random weights (not trained)" in printed
    x = np.random.default_rng(5).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(presets.from_preset(str(out)).score(x), model.score(x))
    assert cli.main(["preset", "save", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2


_MODELS = """
import json, sys
from keras_iqa import cli, presets
entry = json.loads(sys.argv[1])
presets.register_preset("test_registered_remote", entry)
rc = cli.main(["models"])
print("HEAVY=" + ",".join(sorted(m for m in ("tensorflow", "keras") if m in sys.modules)), file=sys.stderr)
sys.exit(rc)
"""


def test_models_lists_presets_and_local_ones_without_tensorflow(served, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(served["root"] / "good", cache / "https_example.org_p")  # a preset downloaded earlier
    entry = {"handle": "https://example.org/registered", "sha256": {f: "a" * 64 for f in presets.PRESET_FILES},
             "metadata": {**{k: "x" for k in presets.ENTRY_METADATA_FIELDS}, "card": "reqa", "srocc": 0.9, "plcc": 0.91}}
    env = {**os.environ, "KERAS_IQA_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", _MODELS, json.dumps(entry)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [line for line in out.stderr.splitlines() if line.startswith("HEAVY=")] == ["HEAVY="], out.stderr[-2000:]
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert "reqa-tiny" in lines
    assert "remote" in lines["test_registered_remote"] and "SROCC 0.900" in lines["test_registered_remote"]
    assert "local" in lines["good"] and "card metaiqa-tiny" in lines["good"]


def test_metadata_from_an_hcl_run_finds_its_card_from_the_model_config(tmp_path):
    import dataclasses

    from keras_iqa import registry
    from keras_iqa.config import to_dict
    from keras_iqa.training.runner import RunDir, save_json

    model_cfg = to_dict(registry.get_card("hcl-tiny").config())
    run = RunDir.create(tmp_path / "3-finetune", config={"model": model_cfg, "seed": 0}, seed=None,
                        extra={"stage": "finetune", "data": "records/clive"})
    save_json({"stage": "finetune", "model": "HCL (reconstruction)", "dataset": "clive", "split": "split_00",
               "test": {"n": 232, "srocc": 0.125, "plcc": 0.25}}, run.path / "results.json")
    meta = presets.metadata_from_run(run.path)
    assert meta["card"] == "hcl-tiny"
    assert meta["training"]["data"] == "records/clive" and meta["training"]["split"] == "split_00"
    assert meta["metrics"]["srocc"] == 0.125 and meta["metrics"]["n"] == 232
    other = dataclasses.replace(registry.get_card("hcl-tiny").config(), crop_size=96)  # matches no card
    save_json({"model": to_dict(other)}, run.path / "config.json")
    assert "card" not in presets.metadata_from_run(run.path)
