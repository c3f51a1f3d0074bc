"""`keras-iqa synthesize`: 25 KADID/KADIS distortions x 5 levels on pristine photos (Beam). (Stub until issue #4 lands.)"""

from keras_iqa.commands import missing


def register(sub):
    p = sub.add_parser("synthesize", help="25 KADID/KADIS distortions x 5 levels on pristine photos (Beam)", description="25 KADID/KADIS distortions x 5 levels on pristine photos (Beam)")
    p.set_defaults(func=missing("`keras-iqa synthesize` (25 KADID/KADIS distortions x 5 levels on pristine photos (Beam))", 4))
