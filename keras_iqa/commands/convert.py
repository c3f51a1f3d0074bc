"""`keras-iqa convert`: convert official PyTorch checkpoints. (Stub until issue #6 lands.)"""

from keras_iqa.commands import missing


def register(sub):
    p = sub.add_parser("convert", help="convert official PyTorch checkpoints", description="convert official PyTorch checkpoints")
    p.set_defaults(func=missing("`keras-iqa convert` (convert official PyTorch checkpoints)", 6))
