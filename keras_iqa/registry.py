"""Model cards: name -> builder, default config, input contract, score range and direction, training data, citation.

`FAMILIES` is the one list of model families: each is a package `keras_iqa/models/<family>/` (keras-hub's layout: config,
model, presets) that registers its cards at import time with `register(ModelCard(...))`. The packages are imported lazily
the first time the registry is read, so `import keras_iqa` stays light; `keras_iqa.models` resolves the model classes a
family lists, and `keras-iqa train` offers one method per family (its task). Adding a method = one model package, one
task module and one `Family` entry (docs/contributing.md).

Example:
>>> import keras_iqa
>>> "reqa-tiny" in keras_iqa.list_models()
True
>>> model = keras_iqa.create_model("reqa-tiny", steps=2)
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional



@dataclass(frozen=True)
class CardListing:
    """What `keras-iqa models` lists for a built-in card, readable without importing its model code (and so without
    TensorFlow / Keras); tests/keras_iqa/test_cli_rules.py keeps it in step with the registered card."""

    name: str
    score_range: tuple
    higher_better: bool
    description: str


@dataclass(frozen=True)
class Family:
    """A model family, the one registry entry a method needs: its `name` (the `keras-iqa train` method), its `package`
    (imported to register its cards), the model `classes` that `keras_iqa.models` exports from it, its training `task`
    module (exposing `TASK`, a `keras_iqa.tasks.base.Task`), the `command` module with its own `keras-iqa train NAME`
    flags (empty: the generic adapter of `keras_iqa.commands.train`, built from the task) and its `cards`' listings."""

    name: str
    package: str
    classes: tuple = ()
    task: str = ""
    command: str = ""
    cards: tuple = ()


#: The model families, in `keras-iqa train`'s order.
FAMILIES: dict = {f.name: f for f in (
    Family("reqa", "keras_iqa.models.reqa", ("REQA",), task="keras_iqa.tasks.reqa", command="keras_iqa.commands.train_reqa",
           cards=(
               CardListing("reqa", (0.0, 100.0), True,
                           "REQA: ResNet-50 + ConvLSTM feedback (T=4) + quality transformer, coarse-to-fine; `keras-iqa train "
                           "reqa` (paper protocol: micro-batches of 5, 4-stage curriculum)"),
               CardListing("reqa-official", (0.0, 100.0), True,
                           "REQA with the official-code training preset (same network; train with `keras-iqa train reqa "
                           "--preset official`: batches of 16, whole-batch RankLoss1, constant weights 0.25/0.125/0.25/0.375)"),
               CardListing("reqa-tiny", (0.0, 100.0), True, "a tiny REQA (64 px, 1/8-width ResNet) for tests and smoke runs"),
           )),
    Family("metaiqa", "keras_iqa.models.metaiqa", ("MetaIQA",), task="keras_iqa.tasks.metaiqa",
           command="keras_iqa.commands.train_metaiqa", cards=(
               CardListing("metaiqa", (0.0, 1.0), True,
                           "MetaIQA, ResNet-18 + GAP + FC + FC (paper head); meta-train with `keras-iqa train metaiqa`"),
               CardListing("metaiqa-official", (0.0, 1.0), True,
                           "MetaIQA with the released code's head (FC-1000 -> 1024 -> 512 -> 1, BN, PReLU, dropout 0.5, "
                           "sigmoid)"),
               CardListing("metaiqa-tiny", (0.0, 1.0), True,
                           "tiny MetaIQA (width 0.125, one block per stage, 64 px) for tests and smoke runs"),
           )),
    Family("hcl", "keras_iqa.models.hcl", ("HCL", "HCLSynthetic", "RestorationNet"), task="keras_iqa.tasks.hcl",
           command="keras_iqa.commands.train_hcl", cards=(
               CardListing("hcl", (0.0, 100.0), True,
                           "HCL (reconstruction): ResNet-50 U-Net restoration features + K subnetworks + CQAC + fused head"),
               CardListing("hcl-tiny", (0.0, 100.0), True,
                           "tiny HCL (reconstruction) (width 0.125, one block per stage, 64 px, K=2) for tests and smoke "
                           "runs"),
           )),
)}
_FAMILY_MODULES = tuple(f.package for f in FAMILIES.values())  # the built-in family packages (read FAMILIES instead)


#: the base class of every keras-iqa model (named, not imported: the registry stays free of Keras)
IQA_MODEL_CLASS = "keras_iqa.models.base.IQAModel"


def families() -> tuple:
    """The family names (`keras-iqa train` methods), without importing any model."""
    return tuple(FAMILIES)


def not_a_model(config) -> Optional[str]:
    """None when a saved Keras config (a `.keras` file's config.json, a preset's) names a registered keras-iqa model
    class (an `IQAModel`: `keras_iqa>REQA`, a family of your own), else what it names ("keras.Sequential",
    "keras_iqa>RestorationNet"), read without building anything. Import the families first (`list_models`)."""
    import keras

    if not isinstance(config, dict):
        return f"JSON {type(config).__name__}, not a Keras config"
    name = config.get("registered_name") or ""
    cls = keras.saving.get_registered_object(name) if name else None
    if isinstance(cls, type) and any(f"{c.__module__}.{c.__name__}" == IQA_MODEL_CLASS for c in cls.__mro__):
        return None
    return name or ".".join(str(v) for v in (config.get("module"), config.get("class_name")) if v) or "config without a class"


def family_of_class(cls_name: str) -> Optional[str]:
    """The family whose first (its IQA model) class is `cls_name` ("REQA" -> "reqa"), else None."""
    return next((f.name for f in FAMILIES.values() if f.classes and f.classes[0] == cls_name), None)


def model_classes() -> dict:
    """Class name -> the family package that defines it (what `keras_iqa.models` resolves lazily)."""
    return {cls: f.package for f in FAMILIES.values() for cls in f.classes}


@dataclass(frozen=True)
class InputContract:
    """What a model expects: RGB float32 pixels in [0, 255], `crop_size` square crops; normalisation happens inside the model."""

    crop_size: int = 224
    value_range: tuple = (0.0, 255.0)
    normalization: str = "imagenet mean/std (inside the model)"
    test_crops: str = "25 random crops averaged"


@dataclass(frozen=True)
class ModelCard:
    """Everything a user needs to know to use a model name.

    Args:
        name: registry key, e.g. "reqa".
        builder: callable(config) -> keras.Model.
        config_cls: the dataclass holding the model config (defaults are the card's defaults).
        defaults: overrides applied on top of `config_cls()` for this card (e.g. a tiny variant).
        score_range: (low, high) of the model's output scale.
        higher_better: direction of the score.
        trained_on: datasets / data the card's weights come from ("random init" when no weights ship).
        paper: citation.
        input: the input contract.
        description: one line.
    """

    name: str
    builder: Callable[[Any], Any]
    config_cls: type
    defaults: dict = field(default_factory=dict)
    score_range: tuple = (0.0, 100.0)
    higher_better: bool = True
    trained_on: str = "random init (train it: keras-iqa train ...)"
    paper: str = ""
    input: InputContract = InputContract()
    description: str = ""

    def config(self, **overrides):
        from keras_iqa.config import apply_overrides

        return apply_overrides(self.config_cls(), {**self.defaults, **overrides})

    def summary(self) -> dict:
        builder = f"{getattr(self.builder, '__module__', '?')}.{getattr(self.builder, '__qualname__', repr(self.builder))}"
        return {
            "name": self.name,
            "builder": builder,
            "description": self.description,
            "score_range": list(self.score_range),
            "higher_better": self.higher_better,
            "trained_on": self.trained_on,
            "paper": self.paper,
            "input": dataclasses.asdict(self.input),
            "config": dataclasses.asdict(self.config()),
        }


_REGISTRY: dict[str, ModelCard] = {}
_loaded = False


@dataclass(frozen=True)
class CardEntry:
    """A card's listing fields, readable without importing its model module (and so without TensorFlow / Keras)."""

    name: str
    family: str
    score_range: tuple
    higher_better: bool
    description: str


# What `keras-iqa models` lists: the built-in cards' listings from their `Family` entries.
CARD_INDEX: dict[str, CardEntry] = {c.name: CardEntry(c.name, f.package, tuple(c.score_range), c.higher_better, c.description)
                                    for f in FAMILIES.values() for c in f.cards}


def card_index() -> list:
    """The listing of every card, sorted by name, WITHOUT importing the model families: the built-in `CARD_INDEX`
    plus any card registered at run time (those are already imported)."""
    entries = dict(CARD_INDEX)
    for name, card in _REGISTRY.items():
        entries[name] = CardEntry(name, card_family(card), tuple(card.score_range), card.higher_better, card.description)
    return [entries[k] for k in sorted(entries)]


def card_family(card: ModelCard) -> str:
    """The family package a card's builder lives in (`keras_iqa.models.reqa` for `build_reqa`), else the builder's module
    (a card registered at run time)."""
    module = getattr(card.builder, "__module__", "") or ""
    for package in (f.package for f in FAMILIES.values()):
        if module == package or module.startswith(package + "."):
            return package
    return module


def register(card: ModelCard) -> ModelCard:
    """Adds a card (re-registering the same name replaces it, so module reloads are harmless)."""
    _REGISTRY[card.name] = card
    return card


def _load_families() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in (f.package for f in FAMILIES.values()):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:  # a family's own import failed: surface it
                raise


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def get_card(name: str, /) -> ModelCard:
    """The card for `name`; unknown names fail with a "did you mean" suggestion."""
    _load_families()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Available: {', '.join(sorted(_REGISTRY)) or '(none)'}")
    return _REGISTRY[name]


def create_model(name: str, /, config: Optional[Any] = None, **overrides):
    """Builds a registered model: `create_model("reqa", steps=3)` (keyword arguments are fields of the card's config,
    here REQA's feedback steps T); `config` replaces the card's config entirely."""
    card = get_card(name)
    cfg = config if config is not None else card.config(**overrides)
    model = card.builder(cfg)
    try:
        model.card_name = name  # the card a preset saved from this model names (keras_iqa.presets)
    except AttributeError:  # a builder that returns something other than a model (tests register such cards)
        pass
    return model
