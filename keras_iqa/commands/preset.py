"""`keras-iqa preset save|fetch|show`: make a preset from a trained run, download one into the cache, print its card.

A preset is a folder in keras-hub's layout (config.json, model.weights.h5, metadata.json; `keras_iqa.presets`,
docs/presets.md). `show` prints what a user needs to know (`--json`: the whole model card); `save --handle HANDLE` also
prints the registry entry (keras_iqa/iqa_presets.py) for the folder once it is published there.
"""

import json
from pathlib import Path
import pprint
import sys

from keras_iqa.commands import formatter

EPILOG = """\
Examples:
  keras-iqa preset save runs/reqa-koniq --out presets/reqa_koniq10k --license CC-BY-NC-4.0
  keras-iqa preset save runs/reqa-koniq --out presets/reqa_koniq10k --handle kaggle://ORG/keras-iqa/keras/reqa_koniq10k/1
  keras-iqa preset fetch kaggle://ORG/keras-iqa/keras/reqa_koniq10k/1     # download + verify into the cache
  keras-iqa preset show presets/reqa_koniq10k                             # what it is, what it was trained on
  keras-iqa score presets/reqa_koniq10k photos/                           # score with it

Publish the folder to Kaggle (kagglehub.model_upload) or Hugging Face (huggingface_hub.upload_folder), then load it
anywhere with keras_iqa.from_preset(HANDLE). The cache is $KERAS_IQA_CACHE (default ~/.keras/keras_iqa/presets);
downloads wait $KERAS_IQA_CONNECT_TIMEOUT / $KERAS_IQA_READ_TIMEOUT seconds (10 / 30) and accept files up to their
listed size, metadata.json up to 1 MiB, others up to $KERAS_IQA_MAX_DOWNLOAD_BYTES (4 GiB) (docs/security.md).
"""


def register(sub):
    p = sub.add_parser("preset", help="make, download and inspect presets (trained models in keras-hub's layout)",
                       description="Presets: a trained model as config.json + model.weights.h5 + metadata.json (the model "
                                   "card), loadable with keras_iqa.from_preset(HANDLE) from a folder, kaggle://, hf:// "
                                   "or https://.",
                       epilog=EPILOG, formatter_class=formatter())
    actions = p.add_subparsers(dest="action", metavar="ACTION")

    s = actions.add_parser("save", help="write a preset folder from a run directory or a .keras file",
                           description="Write a preset folder (config.json, model.weights.h5, metadata.json) from a "
                                       "training run: the model card takes the run's card, data, split, protocol, test "
                                       "metrics (results.json) and machine (run_info.json). Prints the registry entry.",
                           epilog=EPILOG, formatter_class=formatter())
    s.add_argument("model", metavar="RUN_OR_MODEL",
                   help="run directory (with model.keras), a .keras file, or a registered card name (random weights: "
                        "for trying the pipeline)")
    s.add_argument("--out", "-o", required=True, metavar="DIR", help="the preset folder to write")
    s.add_argument("--name", help="preset name (default: the --out folder name)")
    s.add_argument("--card", metavar="CARD", help="the registry card the model was built from (default: the run's)")
    s.add_argument("--description", metavar="TEXT",
                   help="one line for the model card (default: the card, data, split, protocol and test metrics)")
    s.add_argument("--dataset", metavar="TEXT", help="training data (default: the run's --data)")
    s.add_argument("--protocol", metavar="TEXT", help="training / test protocol (default: the run's split and preset)")
    s.add_argument("--license", metavar="TEXT", help="licence of the weights (mind the training data's licence)")
    s.add_argument("--machine", metavar="TEXT", help="what trained and measured it (default: the run's platform)")
    s.add_argument("--handle", metavar="HANDLE",
                   help="where the folder will be published (e.g. kaggle://ORG/keras-iqa/keras/NAME/1): prints the "
                        "registry entry for keras_iqa/iqa_presets.py with it")
    s.set_defaults(func=run_save)

    f = actions.add_parser("fetch", help="download a preset into the cache and verify every file's SHA-256",
                           description="Download (or find in the cache) a preset's three files and check their SHA-256; "
                                       "prints the cache folder. Copy that folder to a machine without network.",
                           epilog=EPILOG, formatter_class=formatter())
    f.add_argument("handle", metavar="HANDLE", help="registered preset name, kaggle://, hf:// or https:// handle")
    f.add_argument("--sha256", metavar="HEX", help="metadata.json's SHA-256, for a handle that is not registered")
    f.add_argument("--force", action="store_true", help="download again even when cached")
    f.set_defaults(func=run_fetch)

    w = actions.add_parser("show", help="say what a preset is, what it was trained on and how to use it (files verified)",
                           description="Verify a preset's files, then print its description, card, score scale, "
                                       "test-time crops, training data, measured metrics and licence.",
                           epilog=EPILOG, formatter_class=formatter())
    w.add_argument("handle", metavar="HANDLE", help="preset folder, registered name, kaggle://, hf:// or https:// handle")
    w.add_argument("--json", action="store_true", help="print the whole model card (metadata.json) as JSON instead")
    w.set_defaults(func=run_show)


def _load_source(text: str):
    """(model, run metadata) from a run directory, a .keras file or a card name."""
    from data_pipeline import layout
    from keras_iqa import presets, registry
    from keras_iqa.scoring import load_keras_model

    p = Path(text)
    if p.is_dir():  # a run directory; `keras-iqa train hcl --stages all`: the deployable model is the last curriculum's
        model_file = layout.find_model_file(p)
        return load_keras_model(model_file), presets.metadata_from_run(model_file.parent)
    if p.is_file() and p.suffix == ".keras":
        meta = presets.metadata_from_run(p.parent) if (p.parent / layout.RESULTS_FILE).is_file() else {}
        return load_keras_model(p), meta
    if text in registry.CARD_INDEX or text in registry.list_models():
        return registry.create_model(text), {"training": {"data": "none (random init)", "protocol": "none"}}
    raise FileNotFoundError(f"{text}: not a run directory, .keras file or model card (keras-iqa models lists the cards)")


def run_save(args):
    from keras_iqa import presets

    model, meta = _load_source(args.model)
    training = dict(meta.get("training") or {})
    if args.dataset:
        training["data"] = args.dataset
    if args.protocol:
        training["protocol"] = args.protocol
    meta["training"] = training
    for key in ("name", "card", "description", "license", "machine"):
        if getattr(args, key):
            meta[key] = getattr(args, key)
    folder = presets.save_to_preset(model, args.out, metadata=meta)
    card = presets.load_metadata(str(folder))
    print(f"preset written: {folder}  (card {card['card']}, {card['parameter_count']:,} parameters)")
    print(f"  {card['description']}")
    print(f"  score with it: keras-iqa score {folder} PHOTOS   (Python: keras_iqa.from_preset({str(folder)!r}))")
    if not args.handle:
        print("  to share it: publish the folder and add it to the registry (docs/presets.md); --handle HANDLE prints "
              "its registry entry")
        return 0
    save_cmd = " ".join(["keras-iqa", "preset", "save", *sys.argv[3:]]) if sys.argv[1:3] == ["preset", "save"] else ""
    command = " && ".join(c for c in (training.get("command"), save_cmd) if c)  # the commands that made it
    entry = presets.registry_entry(folder, handle=args.handle, command=command)
    print(f"registry entry for keras_iqa/iqa_presets.py, once the folder is published at {args.handle}:")
    print(pprint.pformat({card["name"]: entry}, width=120, sort_dicts=False))
    return 0


def run_fetch(args):
    from keras_iqa import presets

    folder = presets.fetch_preset(args.handle, sha256=args.sha256, force_download=args.force)
    print(folder)
    return 0


def run_show(args):
    from keras_iqa import presets

    folder = presets.fetch_preset(args.handle)  # verifies every file
    meta = presets._read_json(folder / presets.METADATA_FILE, presets.METADATA_FILE)
    tt = meta.get("test_time")
    if isinstance(tt, dict) and isinstance(tt.get("positions"), list):
        meta["test_time"] = {**tt, "positions": f"{len(tt['positions'])} (fy, fx) pairs"}
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    print("\n".join(_summary(args.handle, folder, meta)))
    return 0


def _summary(handle: str, folder: Path, meta: dict) -> list:
    """The model card in words: one line per thing a user asks before scoring with a preset."""
    training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    tt = meta.get("test_time") if isinstance(meta.get("test_time"), dict) else {}
    lo, hi = (meta.get("score_range") or ["?", "?"])[:2]
    rows = [
        ("architecture", f"{meta.get('card')} ({meta.get('family')})" + (f": {meta['architecture']}"
                                                                 if meta.get("architecture") else "")),
        ("scores", f"{lo:g} to {hi:g}, {meta.get('direction', '')}" if isinstance(lo, (int, float)) else None),
        ("test time", f"{tt.get('num_crops')} crop(s) of {tt.get('crop_size')} px, {tt.get('policy')} positions"
         if tt else None),
        ("trained on", ", ".join(f"{k} {training[k]}" if k != "data" else str(training[k])
                                 for k in ("data", "split", "protocol") if training.get(k))),
        ("command", training.get("command")),
        ("measured", ", ".join(f"{k.upper()} {metrics[k]}" for k in ("srocc", "plcc", "krocc", "n") if k in metrics)
         + (f" ({metrics['on']})" if metrics.get("on") else "") if metrics else "nothing recorded"),
        ("licence", meta.get("license") or "not stated"),
        ("paper", meta.get("paper")),
        ("files", f"{folder} (SHA-256 verified)"),
    ]
    lines = [f"{meta.get('name') or folder.name}: {meta.get('description') or 'no description'}"]
    lines += [f"  {k:<13}{v}" for k, v in rows if v]
    lines.append(f"  {'use it':<13}keras-iqa score {handle} PHOTOS   |   keras_iqa.from_preset({handle!r})")
    lines.append(f"  (the whole model card: keras-iqa preset show {handle} --json)")
    return lines
