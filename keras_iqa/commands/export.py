"""`keras-iqa export`: SavedModel (TF Serving) and TFLite export. (Stub until issue #9 lands.)"""

from keras_iqa.commands import missing


def register(sub):
    p = sub.add_parser("export", help="SavedModel (TF Serving) and TFLite export", description="SavedModel (TF Serving) and TFLite export")
    p.set_defaults(func=missing("`keras-iqa export` (SavedModel (TF Serving) and TFLite export)", 9))
