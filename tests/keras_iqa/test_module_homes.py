"""Where things live (issue 23): models import nothing from training/, no `keras.src` import, HCL's layers / loss / metric
in layers/ losses.py metrics.py, optimizers in keras_iqa/optimizers.py; old import paths and saved names keep working."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("keras_iqa", "data_pipeline", "bench")


def _imports(path: Path):
    """Every module an `import` / `from` statement names in `path` (module level and inside functions)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def test_no_keras_src_anywhere():
    """Keras's private `keras.src` package changes between releases: the project uses public Keras APIs only."""
    hits = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "keras.src" in line or "keras/src" in line:
                    hits.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert not hits, "keras.src (private Keras) used; use the public keras API instead:\n" + "\n".join(hits)


def test_models_import_nothing_from_training_or_commands():
    bad = []
    for path in sorted((ROOT / "keras_iqa" / "models").rglob("*.py")):
        for mod in _imports(path):
            if mod.startswith(("keras_iqa.training", "keras_iqa.tasks", "keras_iqa.commands")):
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not bad, "models/ must not depend on training code (move what they share next to them):\n" + "\n".join(bad)


def test_importing_the_models_loads_no_training_module():
    """The import-time check of the rule above: transitive imports (registry, layers, losses...) count too."""
    code = ("import sys, json, keras_iqa.models.reqa, keras_iqa.models.hcl, keras_iqa.models.metaiqa;"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('keras_iqa.training', 'keras_iqa.commands')))))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_old_import_paths_are_the_new_objects():
    import keras_iqa.losses as L
    import keras_iqa.metrics as MET
    import keras_iqa.optimizers as O
    import keras_iqa.training.optimizers as TO
    from keras_iqa.layers import decoder_blocks as DB
    from keras_iqa.models import hcl as H

    for name in ("FusedAdam", "apply_optimizer_groups", "build_optimizer_groups", "scale_for_replicas", "replicas_in_sync"):
        assert getattr(TO, name) is getattr(O, name), name
    for name, home in (("ConvBlock", DB), ("InceptionConv", DB), ("DECODER_BLOCKS", DB), ("RestorationLoss", L),
                       ("restoration_l1", L), ("PIXEL_LOSSES", L), ("HeadCorrelation", MET)):
        assert getattr(H, name) is getattr(home, name), name


@pytest.mark.parametrize("registered, old_module", [
    ("keras_iqa>FusedAdam", "keras_iqa.training.optimizers"),
    ("keras_iqa>ConvBlock", "keras_iqa.models.hcl"),
    ("keras_iqa>InceptionConv", "keras_iqa.models.hcl"),
    ("keras_iqa>RestorationLoss", "keras_iqa.models.hcl"),
    ("keras_iqa>restoration_l1", "keras_iqa.models.hcl"),
    ("keras_iqa>HeadCorrelation", "keras_iqa.models.hcl"),
])
def test_saved_names_resolve_after_the_move(registered, old_module):
    """A `.keras` file written before the move names the old module; Keras finds the object by its registered name."""
    import keras_iqa.models.hcl  # noqa: F401  (registers the HCL family as loading a saved model does)

    obj = keras.saving.get_registered_object(registered)
    assert obj is not None and keras.saving.get_registered_name(obj) == registered
    configs = {"keras_iqa>FusedAdam": {"learning_rate": 0.001}, "keras_iqa>ConvBlock": {"filters": 8, "name": "merge1"},
               "keras_iqa>InceptionConv": {"filters": 8, "name": "merge1"},
               "keras_iqa>RestorationLoss": {"ssim_weight": 0.5, "pixel": "psnr", "name": "restoration_loss"},
               "keras_iqa>HeadCorrelation": {"num_datasets": 3, "name": "head_corr"}}
    class_name = registered.split(">")[1]
    if registered in configs:  # as `serialize_keras_object` wrote it before the move
        saved = {"module": old_module, "class_name": class_name, "config": configs[registered], "registered_name": registered}
        restored = keras.saving.deserialize_keras_object(saved)
        assert type(restored) is obj
        assert {k: restored.get_config()[k] for k in configs[registered] if k != "learning_rate"} == \
               {k: v for k, v in configs[registered].items() if k != "learning_rate"}
    else:  # a function: saved as its registered name
        saved = {"module": "builtins", "class_name": "function", "config": registered, "registered_name": "function"}
        assert keras.saving.deserialize_keras_object(saved) is obj


def test_reqa_step_weights_match_the_curriculum_presets():
    from keras_iqa.losses import REQA_OFFICIAL_WEIGHTS, reqa_step_weights
    from keras_iqa.training.curriculum import constant_weights, stage_weights

    np.testing.assert_array_equal(constant_weights("official", 4), np.asarray(REQA_OFFICIAL_WEIGHTS, "float32"))
    np.testing.assert_allclose(reqa_step_weights(steps=3), [0.25, 0.375, 0.375])
    np.testing.assert_allclose(reqa_step_weights(steps=1), [1.0])
    np.testing.assert_allclose(stage_weights("paper", 2)[0], [0.25, 0.75])
    for steps in (2, 3, 5):
        assert reqa_step_weights(steps=steps).sum() == pytest.approx(1.0)


def test_is_functional_on_each_kind_of_model():
    from keras_iqa.backbones import resnet_features
    from keras_iqa.layers.fused_batch_norm import _is_functional, fold_batch_norm

    inp = keras.Input((4,))
    functional = keras.Model(inp, keras.layers.Dense(2)(inp))
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    sub = Sub()
    sub(np.zeros((1, 4), "float32"))
    backbone = resnet_features(depth=18, width=0.125, blocks=(1, 1, 1, 1))  # a keras-hub Functional subclass inside
    assert _is_functional(functional) and _is_functional(backbone)
    assert not _is_functional(sequential) and not _is_functional(sub)
    assert not _is_functional(keras.layers.Dense(2)) and not _is_functional(None)
    with pytest.raises(ValueError, match="functional or Sequential"):
        fold_batch_norm(sub)
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(fold_batch_norm(sequential)(x), sequential(x), rtol=1e-6)


# The model configs of the tiny cards exactly as `.keras` files written before the family packages (keras_iqa/models/
# reqa.py, metaiqa.py, hcl.py as modules) store them: copied from the config.json of such files.
_PRE_SPLIT = [
    {"module": "keras_iqa.models.reqa", "class_name": "REQA", "registered_name": "keras_iqa>REQA", "config": {
        "score_range": [0.0, 100.0], "higher_better": True, "crop_size": 64, "test_crops": 2, "crop_policy": "random",
        "test_resize": None, "name": "reqa", "depth": 50, "backbone_weights": None, "width": 0.125, "blocks": [1, 1, 1, 1],
        "steps": 4, "hidden": [4, 4, 4], "pool_size": 2, "proj_dim": 8, "feedback": True, "transformer": True, "dim": 16,
        "heads": 2, "depth_te": 1, "mlp_dim": 16, "context_dim": 8, "dropout": 0.1, "norm_first": True,
        "head_units": [16, 8], "final_relu": True, "score_scale": 10.0}},
    {"module": "keras_iqa.models.hcl", "class_name": "HCL", "registered_name": "keras_iqa>HCL", "config": {
        "score_range": [0.0, 100.0], "higher_better": True, "crop_size": 64, "test_crops": 25, "crop_policy": "random",
        "test_resize": None, "name": "hcl", "restoration": {
            "depth": 50, "backbone_weights": None, "width": 0.125, "blocks": [1, 1, 1, 1],
            "decoder_filters": [32, 16, 16, 8, 8], "decoder_block": "conv", "input_norm": "imagenet", "output": "direct",
            "input_skip": False},
        "num_datasets": 2, "subnet_units": [32, 16], "subnet_dropout": 0.1, "cqac": True, "cqac_heads": 2,
        "cqac_key_dim": 8, "head_units": 16}},
    {"module": "keras_iqa.models.metaiqa", "class_name": "MetaIQA", "registered_name": "keras_iqa>MetaIQA", "config": {
        "score_range": [0.0, 1.0], "higher_better": True, "crop_size": 64, "test_crops": 4, "crop_policy": "random",
        "test_resize": None, "name": "metaiqa", "depth": 18, "backbone_weights": None, "width": 0.125,
        "blocks": [1, 1, 1, 1], "head": "paper", "head_units": 16, "dropout": 0.5}},
]


@pytest.mark.parametrize("saved", _PRE_SPLIT, ids=lambda s: s["class_name"])
def test_model_configs_saved_before_the_family_packages_load_unchanged(saved):
    """Registered names and config keys are what `.keras` files of the module layout hold: such a config deserialises
    to the family's class, which saves the very same config (the family packages changed no saved name or key)."""
    import keras_iqa

    keras_iqa.list_models()  # registers the families, as the project's loaders do before `load_model`
    model = keras.saving.deserialize_keras_object(json.loads(json.dumps(saved)))
    assert keras.saving.get_registered_name(type(model)) == saved["registered_name"]
    assert json.loads(json.dumps(model.get_config())) == saved["config"]
    name = {"REQA": "reqa-tiny", "HCL": "hcl-tiny", "MetaIQA": "metaiqa-tiny"}[saved["class_name"]]
    assert json.loads(json.dumps(keras_iqa.create_model(name).get_config())) == saved["config"]
