"""`keras-iqa report`: side-by-side table of several runs. (Stub until issue #8 lands.)"""

from keras_iqa.commands import missing


def register(sub):
    p = sub.add_parser("report", help="side-by-side table of several runs", description="side-by-side table of several runs")
    p.set_defaults(func=missing("`keras-iqa report` (side-by-side table of several runs)", 8))
