"""`keras-iqa train metaiqa`: MetaIQA (bi-level meta-learning). (Stub until issue #6 lands.)"""

from keras_iqa.commands import missing


def register(sub):
    p = sub.add_parser("metaiqa", help="MetaIQA (bi-level meta-learning)", description="MetaIQA (bi-level meta-learning)")
    p.set_defaults(func=missing("`keras-iqa train metaiqa` (MetaIQA (bi-level meta-learning))", 6))
