"""`keras-iqa score`: score files and folders of images with a trained or exported model."""

import sys

from keras_iqa.commands import formatter

EPILOG = """\
MODEL is any of: a run directory (runs/NAME with model.keras), a .keras file, a SavedModel (saved_models/NAME/1 or
saved_models/NAME for the latest version) or a .tflite with its sidecar .json.
Every format the decode policy reads is scored (JPEG, PNG, BMP, GIF, TIFF, WebP, JPEG 2000, PNM), not only .jpg.
Each image's score is the mean over the model's deterministic test crops (see README, Deployment).

Examples:
  keras-iqa score runs/reqa-koniq photo.jpg
  keras-iqa score saved_models/reqa photos/ --recursive --scores scores.csv
  keras-iqa score exports/reqa_int8.tflite a.png b.webp --scores scores.jsonl --batch-size 8

Files that cannot be read are listed on stderr with the reason and skipped; the exit status is non-zero only when nothing
could be scored.
"""


def register(sub):
    p = sub.add_parser("score", help="score files and folders with a trained or exported model",
                       description="Score image files and folders (batched, with a progress bar) and write a CSV or JSON-lines table.",
                       epilog=EPILOG, formatter_class=formatter())
    p.add_argument("model", metavar="MODEL", help="run directory, .keras file, SavedModel directory or .tflite file")
    p.add_argument("paths", metavar="PATH", nargs="+", help="image files and/or folders")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into subfolders of folder PATHs")
    p.add_argument("--scores", metavar="FILE", help="write the scores to FILE (.csv or .jsonl); default: CSV on stdout")
    p.add_argument("--batch-size", "-b", type=int, default=32, metavar="N", help="images decoded and scored together (default 32)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="decoding threads (default 2)")
    p.set_defaults(func=run)


def run(args):
    import csv

    from keras_iqa.scoring import load_scorer, score_paths, write_rows

    if args.scores and not args.scores.lower().endswith((".csv", ".tsv", ".txt", ".jsonl", ".json", ".ndjson")):
        raise ValueError(f"--scores {args.scores}: use a .csv or .jsonl file name")
    scorer = load_scorer(args.model)
    rows, bad = score_paths(scorer, args.paths, recursive=args.recursive, batch_size=args.batch_size,
                            progress=not args.quiet and sys.stderr.isatty(), workers=args.workers)
    if args.scores:
        write_rows(rows, args.scores)
    else:
        w = csv.DictWriter(sys.stdout, fieldnames=["path", "score", "score_normalized", "crops"])
        w.writeheader()
        w.writerows(rows)
    for path, reason in bad:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    lo, hi = scorer.score_range
    print(f"scored {len(rows)} image(s) with {scorer.kind} model {scorer.source} (score {lo:g}..{hi:g}, "
          f"{'higher' if scorer.higher_better else 'lower'} = better); {len(bad)} skipped"
          + (f"; wrote {args.scores}" if args.scores else ""), file=sys.stderr)
    if not rows:
        print("keras-iqa score: error: nothing could be scored", file=sys.stderr)
        return 1
    return 0
