"""`keras-iqa train hcl`: HCL reconstruction (three curricula). (Stub until issue #7 lands.)"""

from keras_iqa.commands import missing


def register(sub):
    p = sub.add_parser("hcl", help="HCL reconstruction (three curricula)", description="HCL reconstruction (three curricula)")
    p.set_defaults(func=missing("`keras-iqa train hcl` (HCL reconstruction (three curricula))", 7))
