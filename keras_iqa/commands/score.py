"""`keras-iqa score`: score files and folders with a trained model. (Stub until issue #9 lands.)"""

from keras_iqa.commands import missing


def register(sub):
    p = sub.add_parser("score", help="score files and folders with a trained model", description="score files and folders with a trained model")
    p.set_defaults(func=missing("`keras-iqa score` (score files and folders with a trained model)", 9))
