"""`keras-iqa models`: the model registry (names, score ranges, input contracts, citations)."""

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
    p.add_argument("name", nargs="?", help="a model name to show in full")
    p.set_defaults(func=run)


def run(args):
    from keras_iqa import registry

    if args.name:
        print(json.dumps(registry.get_card(args.name).summary(), indent=2))
        return 0
    for name in registry.list_models():
        card = registry.get_card(name)
        lo, hi = card.score_range
        print(f"{name:24s} score {lo:g}..{hi:g} ({'higher' if card.higher_better else 'lower'} = better)  {card.description}")
    return 0
