"""`keras-iqa models`: the model registry (names, score ranges, input contracts, citations) and the presets.

The list reads `keras_iqa.registry.card_index()` and `keras_iqa.presets.list_presets()` (the preset registry and the
preset cache: which presets are on this machine) and never imports TensorFlow; neither does `keras-iqa models NAME`, which
prints a built-in card's summary from `keras_iqa.reference_data` (generated from the registry, kept in step by
tests/keras_iqa/test_cli_reference.py) or a preset's registry entry.
"""

import difflib
import json
import sys

from keras_iqa.commands import formatter


def register(sub):
    p = sub.add_parser(
        "models",
        help="list registered models and their model cards",
        description="List the model registry (cards: architectures, random weights until trained) and the presets "
                    "(trained weights; which ones are in the local cache). With a NAME, print that model card (config "
                    "defaults, input contract, score range) or that preset's registry entry.",
        epilog="Examples:\n  keras-iqa models\n  keras-iqa models reqa\nPresets: docs/presets.md; the cache is "
               "$KERAS_IQA_CACHE (default ~/.keras/keras_iqa/presets).",
        formatter_class=formatter(),
    )
    p.add_argument("name", nargs="?", help="a model card to show in full (builder, config defaults, input contract, score "
                                           "range), or a registered preset name (its entry)")
    p.set_defaults(func=run)


def run(args):
    from keras_iqa import presets, registry
    from keras_iqa.reference_data import CARDS

    if args.name:
        entries = presets.registered_presets()
        if args.name in entries and args.name not in registry.CARD_INDEX:
            local = presets.local_dir(args.name)
            print(json.dumps({**entries[args.name], "local": str(local) if local else None}, indent=2))
            return 0
        if args.name not in CARDS:
            known = sorted({*registry.CARD_INDEX, *entries})
            close = difflib.get_close_matches(args.name, known, n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"no model card or preset named {args.name!r}{hint} (`keras-iqa models` lists them)")
        print(json.dumps(CARDS[args.name], indent=2))
        print(f"parameter count (builds the model): python -c \"import keras_iqa; "
              f"print(keras_iqa.create_model('{args.name}').count_params())\"", file=sys.stderr)
        return 0
    print("cards (architectures; random weights until trained: keras-iqa train METHOD ...):")
    for card in registry.card_index():  # names, ranges and descriptions without importing the models (no TensorFlow)
        lo, hi = card.score_range
        print(f"{card.name:24s} score {lo:g}..{hi:g} ({'higher' if card.higher_better else 'lower'} = better)  {card.description}")
    rows = presets.list_presets()  # registry + cache: plain Python, no hashing, no network
    print(f"\npresets (trained weights: keras_iqa.from_preset(NAME), keras-iqa score NAME PHOTOS; cache {presets.cache_dir()}):")
    if not rows:
        print("  none registered or cached yet: a preset is added with the command that trained or converted it, its "
              "handle and SHA-256 (docs/presets.md); `keras-iqa preset save RUN --out DIR` makes one from your own run")
    for r in rows:
        metric = " ".join(f"{k.upper()} {r[k]:.3f}" for k in ("srocc", "plcc") if isinstance(r.get(k), (int, float)))
        print(f"{r['name']:24s} {'local' if r['local'] else 'remote':6s}  card {r['card'] or '?'}  {r['dataset'] or ''}  "
              f"{metric}  {r['handle']}".rstrip())
    return 0
