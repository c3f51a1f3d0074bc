"""`keras-iqa baseline fit brisque`: fits a classical baseline on a prepared dataset's training split (docs/baselines.md)."""

from keras_iqa.commands import formatter

DESCRIPTION = """\
Classical no-reference baselines, scored like any other MODEL by `keras-iqa evaluate`, `report` and `score`:
  brisque   BRISQUE (Mittal et al., IEEE TIP 2012): 36 natural-scene features and an RBF SVR, fitted here on the training
            images of one split; writes OUT/brisque.json (plain numbers, no pickle). Scores are on the dataset's MOS scale.
  niqe      NIQE (Mittal et al., IEEE SPL 2013): opinion-unaware, needs no fitting: pass the name `niqe` as MODEL / SOURCE.
            Lower is better (evaluation maps the direction).
"""

EPILOG = """\
Examples:
  keras-iqa baseline fit brisque --data records/clive --split split_00 --out baselines/brisque-clive
  keras-iqa evaluate baselines/brisque-clive --data records/clive --split split_00 --protocol splits
  keras-iqa evaluate niqe --data records/clive --protocol official
  keras-iqa score niqe photos/
"""


def register(sub):
    p = sub.add_parser("baseline", help="classical baselines (BRISQUE fit; NIQE needs none)", description=DESCRIPTION,
                       epilog=EPILOG, formatter_class=formatter())
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    f = verbs.add_parser("fit", help="fit a baseline's regressor on a prepared dataset's training split",
                         description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter())
    f.add_argument("method", choices=("brisque",), help="the baseline to fit (niqe needs no fitting)")
    f.add_argument("--data", required=True, metavar="DIR", help="prepared dataset (its split's train subset is used)")
    f.add_argument("--split", default="split_00", metavar="COL", help="split column of splits.csv (default split_00)")
    f.add_argument("--out", required=True, metavar="DIR", help="folder to write brisque.json into")
    f.add_argument("--svr-c", type=float, metavar="C",
                   help="SVR cost C (default: chosen with gamma by 5-fold cross-validation on the training images)")
    f.add_argument("--svr-gamma", type=float, metavar="G",
                   help="RBF gamma on the [-1, 1]-scaled features (default: cross-validated with C)")
    f.add_argument("--svr-epsilon", type=float, default=0.01, metavar="E",
                   help="SVR epsilon on MOS mapped to [0, 1] (default 0.01)")
    f.set_defaults(func=run)


def run(args):
    from keras_iqa.classical.baseline import fit_brisque
    path = fit_brisque(args.data, args.out, split=args.split, C=args.svr_c, gamma=args.svr_gamma,
                       epsilon=args.svr_epsilon, progress=not getattr(args, "quiet", False))
    print(f"wrote {path}")
