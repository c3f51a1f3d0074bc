"""`keras-iqa demo`: the whole chain on the embedded pristine photos. (Stub until issue #10 lands.)"""

from keras_iqa.commands import missing


def register(sub):
    p = sub.add_parser("demo", help="the whole chain on the embedded pristine photos", description="the whole chain on the embedded pristine photos")
    p.set_defaults(func=missing("`keras-iqa demo` (the whole chain on the embedded pristine photos)", 10))
