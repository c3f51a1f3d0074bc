"""`keras-iqa evaluate`: metrics and protocols (splits, official, cross, lodo). (Stub until issue #8 lands.)"""

from keras_iqa.commands import missing


def register(sub):
    p = sub.add_parser("evaluate", help="metrics and protocols (splits, official, cross, lodo)", description="metrics and protocols (splits, official, cross, lodo)")
    p.set_defaults(func=missing("`keras-iqa evaluate` (metrics and protocols (splits, official, cross, lodo))", 8))
