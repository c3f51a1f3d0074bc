"""Checkpoint converters (`keras_iqa.converters`): safe loading (a checkpoint that would run code is refused and runs none),
MetaIQA's and REQA's official formats checked numerically against PyTorch re-implementations of the official forward passes
(bench/peers) on random weights, presets written by `keras-iqa convert`, and errors that name the problem."""

import json
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # in [dev]; the converters need it (extra [torch])

import keras_iqa  # noqa: E402
from bench.peers.metaiqa_torch import Net  # noqa: E402
from bench.peers.reqa_torch import REQANet  # noqa: E402
from bench.peers.resnet_torch import calibrate_, imagenet_input, randomize_  # noqa: E402
from keras_iqa.cli import main as cli_main  # noqa: E402
from keras_iqa.converters import convert_to_preset, metaiqa, reqa  # noqa: E402
from keras_iqa.converters.safe_load import UnsafeCheckpointError, load_state_dict  # noqa: E402
from keras_iqa.models.reqa import TINY as REQA_TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY_RESNET = dict(width=0.125, blocks=(1, 1, 1, 1))
REQA_SIZES = {k: v for k, v in REQA_TINY.items() if k != "test_crops"}  # the reqa-tiny card's network sizes
#: fp32 tolerance relative to the output scale: the Keras and PyTorch kernels sum in different orders; float32 rounding
#: (2^-24 ~ 6e-8 per operation) over thousands of accumulations per output and ~60 layers stays near 1e-6 relative (measured:
#: 2e-7 .. 2.8e-6, tiny and full-size, docs/converters.md), so 1e-4 leaves a wide margin, while a swapped gate, a mis-split
#: attention head or shifted positions are off by 1e-2 .. 1 relative (`assert_matches` also checks that the outputs spread
#: well beyond the tolerance, so a near-constant output cannot pass by accident).
RTOL_SCALE = 1e-4


def photos(n, size, seed):
    """Varied synthetic photos in 0..255 (gratings of random frequency and contrast plus noise of random strength)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        f = rng.uniform(1, 8, 3)
        base = 127.5 + 100 * np.stack([np.sin(2 * np.pi * (f[0] * xx + f[1] * yy + k / 3)) for k in range(3)], -1)
        out.append(base * rng.uniform(0.3, 1) + rng.normal(0, rng.uniform(0, 60), (size, size, 3)))
    return np.clip(np.stack(out), 0, 255).astype("float32")


def metaiqa_peer(seed=0, gain=20.0, **sizes):
    torch.manual_seed(seed)
    net = randomize_(Net(**sizes), seed)
    with torch.no_grad():
        net.net.fc3.weight.mul_(gain)  # spread the sigmoid outputs (without saturating them)
    return net.eval()


def reqa_peer(seed=0, size=64, calibration=8, gain=30.0, **sizes):
    torch.manual_seed(seed)
    net = randomize_(REQANet(**sizes), seed)
    with torch.no_grad():  # the official zero inits of the class token and positions would hide a misplaced one
        g = net.global_context_understanding_module
        g.cls_token.normal_(0, 0.5)
        g.position_embeddings.normal_(0, 0.5)
    calibrate_(net, imagenet_input(photos(calibration, size, seed + 100)))  # BN statistics of real-looking inputs: outputs vary
    with torch.no_grad():
        net.fc[-2].weight.mul_(gain)  # spread the scores (a random MLP-III maps every input near its bias)
    return net


def torch_forward(net, x):
    with torch.no_grad():
        return net(imagenet_input(x)).numpy()


def assert_matches(got, ref):
    scale = float(np.abs(ref).max())
    atol = RTOL_SCALE * scale
    assert np.abs(ref - ref.mean(0)).max() > 20 * atol, "the reference outputs barely vary: the check would prove little"
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)


# ------------------------------------------------------------------------------------------------------------ safe loading
class _RunsCode:
    """Unpickling this calls `open(marker, "w")`, which creates the marker file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_checkpoint_that_would_run_code_is_refused_and_runs_none(tmp_path, zip_format, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = {k: v for k, v in Net(**TINY_RESNET).state_dict().items()}
    state["payload"] = _RunsCode(marker)
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError) as e:
        load_state_dict(path)
    assert "io.open" in str(e.value) and "weights_only=True" in str(e.value) and "state_dict()" in str(e.value)
    assert cli_main(["convert", "metaiqa", str(path), "--out", str(tmp_path / "preset"), "--card", "metaiqa-tiny"]) == 2
    err = capsys.readouterr().err
    assert "refusing to open" in err and "io.open" in err
    assert not marker.exists(), "loading the checkpoint ran code from it"
    assert not (tmp_path / "preset").exists()
    # control: the payload is live, an unrestricted torch.load runs it (so the assertions above can fail)
    loaded = torch.load(path, map_location="cpu", weights_only=False)
    loaded["payload"].close()
    assert marker.exists()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_whole_pickled_model_is_refused_and_the_recipe_of_the_message_works(tmp_path, zip_format):
    # MetaIQA's released files: torch.save(model) from a script (PyTorch 0.4: the legacy format), so the classes are pickled
    # as __main__.Net and __main__.BaselineModel1
    net = metaiqa_peer(**TINY_RESNET)
    main = sys.modules["__main__"]
    classes = {type(net), type(net.net)}
    saved = {cls: (cls.__module__, cls.__qualname__) for cls in classes}
    path = tmp_path / "TID2013_IQA_Meta_resnet18.pt"
    try:
        for cls in classes:
            cls.__module__, cls.__qualname__ = "__main__", cls.__name__
            setattr(main, cls.__name__, cls)
        torch.save(net, path, _use_new_zipfile_serialization=zip_format)
    finally:
        for cls, (mod, qual) in saved.items():
            delattr(main, cls.__name__)
            cls.__module__, cls.__qualname__ = mod, qual
    with pytest.raises(UnsafeCheckpointError, match=r"__main__\.Net") as e:
        load_state_dict(path)
    err = e.value
    assert "__main__.BaselineModel1" in err.globals_needed and "torch.save(model)" in str(err)
    assert "docs/converters.md" in str(err) and err.recipe in str(err)
    # the message's one-liner, run as a trusted machine would (a separate process, torch installed, the classes it does not
    # stub importable), makes a state dict the converter takes
    recipe = err.recipe.replace("python -c", f"{shlex.quote(sys.executable)} -c", 1)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run(recipe, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert err.state_dict_path == str(tmp_path / "TID2013_IQA_Meta_resnet18.state_dict.pt")
    model, report = metaiqa.convert(err.state_dict_path, card="metaiqa-tiny", head="official")
    x = photos(3, 64, 1)
    assert_matches(np.asarray(model(x, training=False)), torch_forward(net, x))


def test_state_dict_containers_and_formats(tmp_path):
    sd = Net(**TINY_RESNET).state_dict()
    ref = {k: v.float().numpy() for k, v in sd.items()}
    files = {
        "plain.pt": sd,
        "nested.pth": {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3, "best_srcc": 0.9},
        "legacy.pt": sd,
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name, _use_new_zipfile_serialization=name != "legacy.pt")
        got = load_state_dict(tmp_path / name)
        got = {k.removeprefix("module."): v for k, v in got.items()}
        assert got.keys() == ref.keys(), name
        assert all(np.array_equal(got[k], ref[k]) for k in ref), name
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "weights.safetensors"))
    got = load_state_dict(tmp_path / "weights.safetensors")
    assert got.keys() == ref.keys() and all(np.array_equal(got[k], ref[k]) for k in ref)


@pytest.mark.parametrize("content,match", [
    (b"", "not a readable PyTorch checkpoint"),
    (b"this is not a checkpoint", "not a readable PyTorch checkpoint"),
    (pickle.dumps({"fc.weight": [1.0, 2.0]}), "not a readable PyTorch checkpoint"),  # a pickle, not torch.save's format
    ([1, 2, 3], "holds a list, not a state dict"),
    ({"epoch": 3, "best": 0.9}, "holds no tensors"),
], ids=["empty", "text", "plain-pickle", "list", "no-tensors"])
def test_malformed_files_are_errors_that_say_so(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match=match):
        load_state_dict(path)
    good = tmp_path / "good.pt"
    torch.save(Net(**TINY_RESNET).state_dict(), good)
    good.write_bytes(good.read_bytes()[:400])  # truncated zip
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_state_dict(good)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match="not a readable .safetensors file"):
        load_state_dict(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_state_dict(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------------------------------ numerics
def test_metaiqa_matches_the_official_forward_pass(tmp_path):
    net = metaiqa_peer(**TINY_RESNET)
    path = tmp_path / "metaiqa.pt"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)  # DataParallel-style keys
    model, report = metaiqa.convert(path, card="metaiqa-tiny", head="official")
    assert report["unused"] == [] and report["tensors"] == len([k for k in net.state_dict() if "num_batches" not in k])
    x = photos(4, 64, 2)
    assert_matches(np.asarray(model(x, training=False)), torch_forward(net, x))


def test_reqa_matches_the_official_forward_pass_at_every_step(tmp_path):
    net = reqa_peer(**REQA_SIZES)
    sd = net.state_dict()
    assert any(k.startswith("local_distortion_perception_module.res.") for k in sd)  # the official layout's repeats
    assert any(".cells.0.stack.0." in k for k in sd)
    path = tmp_path / "reqa.pt"
    torch.save(sd, path)
    model, report = reqa.convert(path, card="reqa-tiny")
    assert report["unused"] == ["global_context_understanding_module.encoder.encoder_norm.bias",
                                "global_context_understanding_module.encoder.encoder_norm.weight"]
    assert report["duplicates"] > 0
    x = photos(4, 64, 3)
    ref = torch_forward(net, x)
    got = np.asarray(model(x, training=False))
    assert got.shape == ref.shape == (4, 4)
    assert_matches(got, ref)
    np.testing.assert_allclose(np.asarray(model.score(x)), ref[:, -1], rtol=0, atol=RTOL_SCALE * np.abs(ref).max())


@pytest.mark.slow
@pytest.mark.parametrize("family", ["metaiqa", "reqa"])
def test_full_size_official_networks_match(family):
    """The released sizes at 224 px (ResNet-18 / ResNet-50)."""
    x = photos(3, 224, 4)
    if family == "metaiqa":
        net = calibrate_(metaiqa_peer(gain=3.0), imagenet_input(photos(4, 224, 5)))
        model, report = metaiqa.convert({k: v.numpy() for k, v in net.state_dict().items()})
    else:
        net = reqa_peer(size=224, calibration=4, gain=300.0)
        model, report = reqa.convert({k: v.numpy() for k, v in net.state_dict().items()})
    assert_matches(np.asarray(model(x, training=False)), torch_forward(net, x).reshape(len(x), -1))


# ------------------------------------------------------------------------------------------------------------ presets, CLI
def test_cli_writes_a_preset_that_scores_like_the_official_network(tmp_path, capsys):
    net = reqa_peer(**REQA_SIZES)
    ckpt = tmp_path / "reqa_koniq.pt"
    torch.save(net.state_dict(), ckpt)
    out = tmp_path / "presets" / "reqa-small"
    assert cli_main(["convert", "reqa", str(ckpt), "--out", str(out), "--card", "reqa-tiny"]) == 0
    assert "load it with keras_iqa.from_preset" in capsys.readouterr().out
    model = keras_iqa.from_preset(str(out))
    x = photos(3, 64, 6)
    assert_matches(np.asarray(model(x, training=False)), torch_forward(net, x))
    meta = json.loads((out / "metadata.json").read_text())
    src = meta["converted_from"]
    from keras_iqa.converters.safe_load import sha256

    assert src["sha256"] == sha256(ckpt) and src["checkpoint"] == "reqa_koniq.pt" and src["bytes"] == os.path.getsize(ckpt)
    assert src["command"].startswith("keras-iqa convert reqa ") and "--card reqa-tiny" in src["command"]
    assert meta["card"] == "reqa-tiny" and src["converter"] == "keras_iqa.converters.reqa"


def test_python_api_writes_the_preset_too(tmp_path):
    net = metaiqa_peer(**TINY_RESNET)
    ckpt = tmp_path / "m.pt"
    torch.save(net.state_dict(), ckpt)
    folder, report = convert_to_preset("metaiqa", ckpt, tmp_path / "p", card="metaiqa-tiny", head="official")
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["converted_from"]["command"].startswith("keras_iqa.converters.convert_to_preset('metaiqa'")
    x = photos(2, 64, 7)
    assert_matches(np.asarray(keras_iqa.from_preset(str(folder))(x, training=False)), torch_forward(net, x))


def test_errors_name_the_problem(tmp_path, capsys):
    sd = {k: v.numpy() for k, v in metaiqa_peer(**TINY_RESNET).state_dict().items()}
    with pytest.raises(ValueError, match="net.fc3"):
        metaiqa.convert({k: v for k, v in sd.items() if not k.startswith("net.fc3")}, card="metaiqa-tiny", head="official")
    wider = {k: v.numpy() for k, v in Net(width=0.25, blocks=(1, 1, 1, 1)).state_dict().items()}
    with pytest.raises(ValueError, match="shape mismatch for 'resnet_layer.layer2.0.conv1.weight'"):
        metaiqa.convert(wider, card="metaiqa-tiny", head="official")  # another width than the card's
    with pytest.raises(ValueError, match="official head"):
        metaiqa.convert(sd, card="metaiqa-tiny")
    with pytest.raises(ValueError, match="does not have, e.g. \\['extra.weight'\\]"):
        metaiqa.convert({**sd, "extra.weight": np.zeros(3, "float32")}, card="metaiqa-tiny", head="official")
    model, report = metaiqa.convert({**sd, "extra.weight": np.zeros(3, "float32")}, card="metaiqa-tiny", head="official",
                                    strict=False)
    assert report["unused"] == ["extra.weight"]
    rsd = {k: v.numpy() for k, v in REQANet(**REQA_SIZES).state_dict().items()}
    with pytest.raises(ValueError, match="feedback network and the transformer"):
        reqa.convert(rsd, card="reqa-tiny", transformer=False)
    bad = dict(rsd)
    key = "local_distortion_perception_module.res.conv1.weight"
    bad[key] = bad[key] + 1.0
    with pytest.raises(ValueError, match="shared module"):
        reqa.convert(bad, card="reqa-tiny")
    with pytest.raises(ValueError, match="lacks .* official REQA"):
        reqa.convert(sd, card="reqa-tiny")  # a MetaIQA checkpoint
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pt")
    assert cli_main(["convert", "reqa", str(tmp_path / "other.pt"), "--out", str(tmp_path / "o"), "--card", "reqa-tiny"]) == 2
    assert "lacks" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["convert", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Examples" in out and "weights_only=True" in out and "--out" in out and "metaiqa" in out and "reqa" in out
