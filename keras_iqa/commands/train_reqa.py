"""`keras-iqa train reqa`: REQA (coarse-to-fine, range effect). (Stub until issue #5 lands.)"""

from keras_iqa.commands import missing


def register(sub):
    p = sub.add_parser("reqa", help="REQA (coarse-to-fine, range effect)", description="REQA (coarse-to-fine, range effect)")
    p.set_defaults(func=missing("`keras-iqa train reqa` (REQA (coarse-to-fine, range effect))", 5))
