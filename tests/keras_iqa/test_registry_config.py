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
     (["epochs=abc"], "config key 'epochs' expects an integer, got 'abc'"), (["flip=maybe"], "boolean"), (["epochs"], "key=value"),
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


def test_the_family_table_is_the_one_list_of_families():
    """`registry.FAMILIES` names each family's package and classes; the cards, `keras_iqa.models` and
    `registry.families()` (the `keras-iqa train` methods) all derive from it."""
    import importlib

    import keras_iqa.models as models

    assert registry.families() == ("reqa", "metaiqa", "hcl")
    assert set(models.__all__) == {"IQAModel", "TwoOptimizerModel", *registry.model_classes()}
    for fam in registry.FAMILIES.values():
        package = importlib.import_module(fam.package)
        for cls in fam.classes:
            assert getattr(models, cls) is getattr(package, cls), cls
    built_in = {registry.card_family(registry.get_card(n)) for n in registry.CARD_INDEX}
    assert built_in == {f.package for f in registry.FAMILIES.values()}


def test_adding_a_family_is_one_package_and_one_table_entry(tmp_path, monkeypatch):
    """A new family package that registers its cards on import, plus its `Family` entry: its cards list and build, its
    class resolves from `keras_iqa.models`, and `registry.families()` offers it."""
    import keras_iqa.models as models

    pkg = tmp_path / "extra_family"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import dataclasses\n"
        "from keras_iqa.registry import ModelCard, register\n"
        "@dataclasses.dataclass\n"
        "class ExtraConfig:\n"
        "    width: int = 2\n"
        "class ExtraModel:\n"
        "    def __init__(self, cfg):\n"
        "        self.cfg = cfg\n"
        "def build_extra(cfg):\n"
        "    return ExtraModel(cfg)\n"
        "register(ModelCard(name='extra-small', builder=build_extra, config_cls=ExtraConfig))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "FAMILIES", {**registry.FAMILIES,
                                               "extra": registry.Family("extra", "extra_family", ("ExtraModel",))})
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the test's card goes when the test ends
    monkeypatch.setattr(registry, "_loaded", False)
    assert "extra-small" in registry.list_models()
    assert registry.create_model("extra-small", width=3).cfg.width == 3
    assert registry.card_family(registry.get_card("extra-small")) == "extra_family"
    assert registry.families()[-1] == "extra"
    assert models.ExtraModel.__module__ == "extra_family"


def test_adding_a_method_is_a_model_package_a_task_module_and_one_entry(tmp_path, monkeypatch, capsys):
    """A new method: a model package, a task module exposing `TASK`, and one `Family` entry naming both. Its cards list
    (`keras-iqa models` reads the entry's listings), `keras_iqa.tasks` finds its task, and `keras-iqa train NAME` runs
    it through the generic adapter: --config / --model / --set reach the config, --data and --out reach `train`."""
    import json

    from keras_iqa import cli, tasks
    from keras_iqa.commands import train  # noqa: F401  (imported before the patch: its METHODS are the built-in ones)

    (tmp_path / "new_family.py").write_text(
        "import dataclasses\n"
        "from keras_iqa.registry import ModelCard, register\n"
        "@dataclasses.dataclass\n"
        "class NewConfig:\n"
        "    width: int = 2\n"
        "def build_new(cfg):\n"
        "    return cfg\n"
        "register(ModelCard(name='new-small', builder=build_new, config_cls=NewConfig, description='a new method'))\n")
    (tmp_path / "new_task.py").write_text(
        "import dataclasses, json, pathlib\n"
        "from keras_iqa.tasks.base import Task\n"
        "@dataclasses.dataclass\n"
        "class NewTrainConfig:\n"
        "    model: str = 'new-small'\n"
        "    epochs: int = 1\n"
        "    lr: float = 0.1\n"
        "class NewTask(Task):\n"
        "    name, config_cls, description = 'new', NewTrainConfig, 'train the new method'\n"
        "    def train(self, cfg, data, out):\n"
        "        result = {'config': dataclasses.asdict(cfg), 'data': data}\n"
        "        pathlib.Path(out).mkdir(parents=True, exist_ok=True)\n"
        "        (pathlib.Path(out) / 'results.json').write_text(json.dumps(result))\n"
        "        return result\n"
        "TASK = NewTask()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = registry.Family("new", "new_family", (), task="new_task",
                            cards=(registry.CardListing("new-small", (0.0, 1.0), True, "a new method"),))
    monkeypatch.setattr(registry, "FAMILIES", {**registry.FAMILIES, "new": entry})
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_loaded", False)
    assert "new-small" in registry.list_models()
    assert tasks.get_task("new").config_cls.__name__ == "NewTrainConfig"
    assert tasks.task_names()[-1] == "new"

    (tmp_path / "cfg.json").write_text(json.dumps({"epochs": 5, "lr": 0.5}))
    out = tmp_path / "run"
    rc = cli.main(["train", "new", "--data", str(tmp_path / "records"), "--out", str(out), "--model", "new-small",
                   "--config", str(tmp_path / "cfg.json"), "--set", "epochs=7"])
    assert rc == 0
    written = json.loads((out / "results.json").read_text())
    assert written == {"config": {"model": "new-small", "epochs": 7, "lr": 0.5}, "data": str(tmp_path / "records")}
    assert json.loads(capsys.readouterr().out) == written
    rc = cli.main(["train", "new", "--data", "a", "--data", "b", "--out", str(tmp_path / "run2")])
    assert rc == 0 and json.loads((tmp_path / "run2" / "results.json").read_text())["data"] == ["a", "b"]
    with pytest.raises(SystemExit):  # the task's unknown flag is argparse's error, not a crash
        cli.main(["train", "new", "--data", "a", "--out", str(tmp_path / "run3"), "--stages", "all"])
