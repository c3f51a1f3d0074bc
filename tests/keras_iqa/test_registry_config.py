"""Registry (model cards, did-you-mean) and dataclass configs (files, --set, errors)."""

import dataclasses
import json

import pytest

from keras_iqa import config as cfgmod
from keras_iqa import registry


@dataclasses.dataclass
class Optim:
    lr: float = 1e-4
    milestones: tuple = (10, 20)


@dataclasses.dataclass
class Cfg:
    epochs: int = 40
    name: str = "x"
    flip: bool = True
    weights: object = None
    optimizer: Optim = dataclasses.field(default_factory=Optim)


def _card(name="dummy-model"):
    return registry.ModelCard(name=name, builder=lambda c: ("built", c), config_cls=Cfg, defaults={"epochs": 3},
                              score_range=(1, 5), description="test card")


def test_register_create_and_list():
    registry.register(_card())
    assert "dummy-model" in registry.list_models()
    kind, cfg = registry.create_model("dummy-model", name="y")
    assert kind == "built" and cfg.epochs == 3 and cfg.name == "y"
    summary = registry.get_card("dummy-model").summary()
    assert summary["score_range"] == [1, 5] and summary["config"]["epochs"] == 3
    json.dumps(summary)


def test_unknown_name_suggests():
    registry.register(_card())
    with pytest.raises(ValueError, match="Did you mean 'dummy-model'"):
        registry.get_card("dumy-model")


def test_unknown_override_lists_keys():
    registry.register(_card())
    with pytest.raises(ValueError, match="valid keys"):
        registry.create_model("dummy-model", epoch=3)


def test_config_sets_files_and_nesting(tmp_path):
    yml = tmp_path / "o.yaml"
    yml.write_text("epochs: 12\noptimizer:\n  lr: 0.5\n")
    js = tmp_path / "o.json"
    js.write_text(json.dumps({"name": "fromjson"}))
    cfg = cfgmod.load_config(Cfg, files=[str(yml), str(js)],
                             sets=["optimizer.milestones=[1,2,3]", "flip=false", "weights=null", "epochs=7"])
    assert cfg.epochs == 7 and cfg.optimizer.lr == 0.5 and cfg.optimizer.milestones == (1, 2, 3)
    assert cfg.flip is False and cfg.weights is None and cfg.name == "fromjson"
    back = cfgmod.from_dict(Cfg, cfgmod.to_dict(cfg))
    assert back == cfg


@pytest.mark.parametrize(
    "sets,match",
    [(["nope=1"], "Unknown config key 'nope'"), (["optimizer.nope=1"], "optimizer.nope"),
     (["epochs=abc"], "invalid literal"), (["flip=maybe"], "boolean"), (["epochs"], "key=value"),
     (["name.x=1"], "not a section")],
)
def test_config_errors(sets, match):
    with pytest.raises(ValueError, match=match):
        cfgmod.load_config(Cfg, sets=sets)


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        cfgmod.load_config(Cfg, files=[str(tmp_path / "missing.yaml")])
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        cfgmod.load_config(Cfg, files=[str(bad)])


def test_registered_families_and_lazy_model_imports():
    import keras_iqa.models as models

    names = registry.list_models()
    for family in ("reqa", "reqa-official", "reqa-tiny", "metaiqa", "metaiqa-official", "metaiqa-tiny", "hcl", "hcl-tiny"):
        assert family in names
    for cls in ("REQA", "MetaIQA", "HCL", "IQAModel"):
        assert isinstance(getattr(models, cls), type)
    with pytest.raises(AttributeError):
        models.Nope
