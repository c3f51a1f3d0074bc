"""`keras-iqa models`: the model registry (names, score ranges, input contracts, citations).

The list reads `keras_iqa.registry.card_index()` and never imports TensorFlow; `keras-iqa models NAME` builds the full card.
"""

import json

from keras_iqa.commands import formatter


def register(sub):
    p = sub.add_parser(
        "models",
        help="list registered models and their model cards",
        description="List the model registry. With a NAME, print that model card (config defaults, input contract, score range).",
        epilog="Examples:\n  keras-iqa models\n  keras-iqa models reqa",
        formatter_class=formatter(),
    )
    p.add_argument("name", nargs="?", help="a model name to show in full (its config defaults: imports the model)")
    p.set_defaults(func=run)


def run(args):
    from keras_iqa import registry

    if args.name:
        print(json.dumps(registry.get_card(args.name).summary(), indent=2))
        return 0
    for card in registry.card_index():  # names, ranges and descriptions without importing the models (no TensorFlow)
        lo, hi = card.score_range
        print(f"{card.name:24s} score {lo:g}..{hi:g} ({'higher' if card.higher_better else 'lower'} = better)  {card.description}")
    return 0
