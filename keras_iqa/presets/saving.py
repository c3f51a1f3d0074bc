"""Models to and from preset folders: the model card (metadata.json), `save_to_preset`, `from_preset`, and the card
fields read from a training run (`metadata_from_run`)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Optional

from keras_iqa import registry, __version__
from keras_iqa.presets.fetch import fetch_preset
from keras_iqa.presets.format import (CONFIG_FILE, FORMAT, FORMAT_VERSION, METADATA_FILE, WEIGHTS_FILE,
                                      PresetError, _file_records, _read_json)
from keras_iqa.registry import family_of_class, CARD_INDEX


def _family(model) -> str:
    for cls in type(model).__mro__:
        family = family_of_class(cls.__name__)
        if family:
            return family
    return type(model).__name__.lower()


def model_card(model, metadata: Optional[dict] = None) -> dict:
    """The metadata.json of `model` (without the file hashes): `metadata` (user fields: card, name, training, metrics,
    machine, license, description, ...) completed from the model and its registry card; the contract fields always come
    from the model."""
    import keras

    from data_pipeline.test_time import TestTimeCrops

    user = dict(metadata or {})
    card_name = user.get("card") or getattr(model, "card_name", None) or _family(model)
    try:
        card = registry.get_card(card_name)
    except ValueError:
        card = None
    lo, hi = (float(v) for v in model.score_range)
    higher = bool(model.higher_better)
    versions = {"keras_iqa": __version__, "keras": keras.version()}
    try:
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    except ImportError:
        versions["tensorflow"] = None
    training = user.pop("training", None) or {"data": "not recorded", "protocol": "not recorded"}
    metrics = user.pop("metrics", None) or {}
    out = {
        "name": user.pop("name", None),
        "description": user.pop("description", None) or describe(card_name, training, metrics),
        "architecture": card.description if card else "",
        "card": card_name,
        "family": _family(model),
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "paper": user.pop("paper", None) or (card.paper if card else ""),
        "training": training,
        "metrics": metrics,
        "machine": user.pop("machine", None),
        "license": user.pop("license", None),
    }
    out.update(user)
    out.update({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "score_range": [lo, hi],
        "higher_better": higher,
        "direction": "higher = better" if higher else "lower = better",
        "test_time": TestTimeCrops.from_model(model).to_dict(),
        "versions": versions,
        "parameter_count": int(model.count_params()),
        "date_saved": _dt.datetime.now().isoformat(timespec="seconds"),
    })
    return out


def describe(card_name: str, training: dict, metrics: dict) -> str:
    """The one-line description of a preset, for its user: what it was trained on and what it measured (the card's
    own text describes the architecture, kept as `architecture`)."""
    training = training if isinstance(training, dict) else {}
    data = str(training.get("data") or "not recorded")
    if data.startswith("none"):
        return f"{card_name} with random weights (not trained): for trying the pipeline only, its scores mean nothing"
    if data == "not recorded":
        return f"{card_name} model; what it was trained on was not recorded"
    details = [str(training["split"])] if training.get("split") else []
    if training.get("protocol") and training["protocol"] != "not recorded":
        details.append(f"protocol {training['protocol']}")
    text = f"{card_name} trained on {data}" + (f" ({', '.join(details)})" if details else "")
    metrics = metrics if isinstance(metrics, dict) else {}
    measured = [f"{k.upper()} {metrics[k]:.3f}" for k in ("srocc", "plcc") if isinstance(metrics.get(k), (int, float))]
    if measured:
        text += f"; test {', '.join(measured)}" + (f" on {metrics['n']} images" if metrics.get("n") else "")
    return text


def _strip(config, keys=("compile_config", "build_config")):
    if isinstance(config, dict):
        for k in keys:
            config.pop(k, None)
        for v in config.values():
            _strip(v, keys)
    return config


def save_to_preset(model, preset_dir: os.PathLike, metadata: Optional[dict] = None) -> Path:
    """Writes `model` as a preset folder (config.json, model.weights.h5, metadata.json; see the module docstring).

    Args:
        model: a keras-iqa model (`IQAModel`: REQA, MetaIQA, HCL).
        preset_dir: the folder to write (created; files already there are replaced).
        metadata: model-card fields: card (registry card name; default: the model's `card_name`), name, description,
            training {data, protocol, ...}, metrics {srocc, plcc, ...}, machine, license, anything else JSON-ready.

    Returns:
        The folder.
    """
    import keras

    for attr in ("score_range", "higher_better", "crop_size", "test_crops", "crop_policy"):
        if not hasattr(model, attr):
            raise PresetError(f"save_to_preset: {type(model).__name__} is not a keras-iqa model (no {attr}); presets hold "
                              "REQA, MetaIQA or HCL models")
    folder = Path(preset_dir).expanduser()
    _no_savedmodel(folder, "save_to_preset: ")
    folder.mkdir(parents=True, exist_ok=True)
    meta = model_card(model, metadata)
    if not meta.get("name"):
        meta["name"] = folder.resolve().name
    config = _strip(keras.saving.serialize_keras_object(model))
    _write_atomic(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    tmp = folder / ("tmp." + WEIGHTS_FILE)
    model.save_weights(str(tmp))
    os.replace(tmp, folder / WEIGHTS_FILE)
    meta["files"] = _file_records(folder)
    _write_atomic(folder / METADATA_FILE, json.dumps(meta, indent=2, default=_json_default) + "\n")
    return folder


def _no_savedmodel(folder: Path, prefix: str = "") -> None:
    """Presets are data (config + weights): a folder holding a SavedModel (a program) is never one."""
    if (folder / "saved_model.pb").exists():
        raise PresetError(f"{prefix}{folder} holds a SavedModel (saved_model.pb); a preset is config.json, "
                          "model.weights.h5 and metadata.json only and never a SavedModel (score an exported SavedModel "
                          "as a SavedModel, docs/security.md)")


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def from_preset(handle, load_weights: bool = True, cache: Optional[os.PathLike] = None, sha256=None,
                force_download: bool = False, timeout=None, max_bytes: Optional[int] = None, **overrides):
    """Loads a preset as a keras-iqa model (`keras.Model`), like keras-hub's `from_preset`.

    Args:
        handle: local folder, registered preset name, kaggle://, hf:// or http(s):// handle (see the module docstring).
        load_weights: False builds the architecture with random weights.
        cache: cache root (default `cache_dir()`).
        sha256: pins an unregistered handle's files (metadata.json's hash, or a file -> hash dict).
        force_download: download again even when cached.
        timeout: download timeouts, seconds (or (connect, read)): see `fetch_preset`.
        max_bytes: the largest download accepted when no size is listed: see `fetch_preset`.
        **overrides: config fields replaced before the model is built, e.g. `test_crops=10`, `crop_policy="grid"`
            (architecture fields must match the weights).

    The config is data: it is rebuilt with `safe_mode=True`, only a keras-iqa model class is accepted, its
    `backbone_weights` is ignored (the weights come from model.weights.h5, nothing is fetched), and a folder holding a
    SavedModel is refused (docs/security.md, Models: data and programs).

    Returns:
        The model, built, weights loaded; `model.card_name` is the card it came from and `model.preset_metadata` its
        metadata.json.

    Raises:
        PresetHashError, PresetUnavailableError, PresetError: see `fetch_preset`.
    """
    import keras
    import numpy as np

    folder = fetch_preset(handle, cache=cache, sha256=sha256, force_download=force_download, timeout=timeout,
                          max_bytes=max_bytes)
    _no_savedmodel(folder)
    meta = _read_json(folder / METADATA_FILE, METADATA_FILE)
    config = _strip(_read_json(folder / CONFIG_FILE, CONFIG_FILE))  # architecture only: no optimizer to rebuild
    if overrides:
        inner = config.get("config")
        if not isinstance(inner, dict):
            raise PresetError(f"{folder / CONFIG_FILE}: no 'config' object to apply {sorted(overrides)} to")
        inner.update(overrides)
    registry.list_models()  # imports the families: registers their serializable classes
    what = registry.not_a_model(config)
    if what:
        raise PresetError(f"{folder / CONFIG_FILE}: not a keras-iqa model (it is a {what})")
    try:
        model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    except (TypeError, ValueError) as e:
        raise PresetError(f"{folder / CONFIG_FILE}: cannot build the model ({type(e).__name__}: {e})") from e
    c = int(model.crop_size)
    model(np.zeros((1, c, c, 3), "float32"), training=False)  # builds every variable, as the registry builders do
    if load_weights:
        try:
            model.load_weights(str(folder / WEIGHTS_FILE))
        except Exception as e:
            raise PresetError(f"{folder / WEIGHTS_FILE}: the weights do not fit the model of {CONFIG_FILE} "
                              f"({type(e).__name__}: {e})") from e
    model.card_name = meta.get("card")
    object.__setattr__(model, "preset_metadata", meta)  # a plain attribute: not tracked by Keras
    return model


def metadata_from_run(run_dir: os.PathLike) -> dict:
    """Model-card fields from a training run directory: card (config.json / results.json "model"), training data,
    split and protocol, test metrics (results.json "test") and the machine and versions (run_info.json)."""
    from data_pipeline import layout

    run = Path(run_dir)
    cfg = _maybe_json(run / layout.CONFIG_FILE)
    res = _maybe_json(run / layout.RESULTS_FILE)
    info = _maybe_json(run / layout.RUN_INFO_FILE)
    card = _run_card(res.get("model"), cfg.get("model"))
    data = res.get("data") or cfg.get("data") or info.get("data") or res.get("dataset")
    training = {k: v for k, v in {
        "data": data, "split": res.get("split") or cfg.get("split"), "protocol": res.get("protocol") or cfg.get("protocol"),
        "run": str(run), "command": _command(info.get("argv")),
        "seed": info.get("seed"), "started": info.get("started"), "precision": res.get("precision"),
    }.items() if v is not None}
    test = res.get("test") if isinstance(res.get("test"), dict) else {}
    metrics = {k: test[k] for k in ("n", "srocc", "plcc", "krocc", "rmse") if k in test}
    if metrics:
        metrics["on"] = "the run's test split (results.json 'test')"
    versions = info.get("versions") or {}
    machine = {k: v for k, v in {"platform": versions.get("platform"), "python": versions.get("python"),
                                 "tensorflow": versions.get("tensorflow"), "keras": versions.get("keras"),
                                 "cpu": res.get("cpu")}.items() if v}
    out = {"training": training or {"data": "not recorded", "protocol": "not recorded"}, "metrics": metrics,
           "machine": machine or None}
    if card:
        out["card"] = card
    return out


def _run_card(*candidates) -> Optional[str]:
    """The card name of a run: a card name recorded as "model" (REQA, MetaIQA runs), or the card whose config equals
    the run's "model" section (HCL runs record the model config itself)."""
    for c in candidates:
        if isinstance(c, str) and c in CARD_INDEX:
            return c
    for c in candidates:
        if isinstance(c, dict):
            for name in registry.list_models():
                card = registry.get_card(name)
                try:
                    defaults = json.loads(json.dumps(dataclasses.asdict(card.config()), default=list))
                except TypeError:
                    continue
                if {k: c.get(k) for k in defaults if k != "backbone_weights"} == \
                        {k: v for k, v in defaults.items() if k != "backbone_weights"}:
                    return name
    return None


def _command(argv) -> Optional[str]:
    """The command line of a run (run_info.json "argv"), its program as its file name (`keras-iqa train ...`)."""
    if not isinstance(argv, list) or not argv:
        return None
    return " ".join([Path(str(argv[0])).name, *(str(a) for a in argv[1:])])


def _maybe_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
