"""`keras-iqa prepare`: official dataset layouts -> TFRecords + manifest + splits (Beam). (Stub until issue #3 lands.)"""

from keras_iqa.commands import missing


def register(sub):
    p = sub.add_parser("prepare", help="official dataset layouts -> TFRecords + manifest + splits (Beam)", description="official dataset layouts -> TFRecords + manifest + splits (Beam)")
    p.set_defaults(func=missing("`keras-iqa prepare` (official dataset layouts -> TFRecords + manifest + splits (Beam))", 3))
