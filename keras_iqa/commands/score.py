"""`keras-iqa score`: score files and folders of images with a trained or exported model, a preset or a card (the command
line twin of `keras_iqa.score`; both run `keras_iqa.scoring`)."""

import sys

from keras_iqa.commands import add_precision_arg, formatter

EPILOG = """\
MODEL is any of: a run directory (runs/NAME with model.keras), a .keras file, a SavedModel (saved_models/NAME/1 or
saved_models/NAME for the latest version), a .tflite (contract in its metadata or sidecar .json), a preset (a preset
folder, a registered name, kaggle://, hf:// or https:// handle) or a model card name from `keras-iqa models` (a freshly
built, untrained model: its scores mean nothing, a warning says so; for trying the command out).
Every format the decode policy reads is scored (JPEG, PNG, BMP, GIF, TIFF, WebP, JPEG 2000, PNM), not only .jpg.
Each image's score is the mean over the model's deterministic test crops (docs/scoring.md, docs/test-time.md).
Images are decoded in --workers threads one batch ahead, while the previous batch is scored.

Examples:
  keras-iqa score runs/reqa-koniq photo.jpg
  keras-iqa score saved_models/reqa photos/ --recursive --scores scores.csv
  keras-iqa score exports/reqa_int8.tflite a.png b.webp --scores scores.jsonl --batch-size 8
  keras-iqa score presets/reqa-koniq photo.jpg --precision bf16      # Keras models: bf16 with batch norm folded
  keras-iqa score runs/reqa-koniq photo.jpg --crop-scores --scores crops.jsonl
  keras-iqa score reqa-tiny photo.jpg                                 # a card: random weights, tries the command
  keras-iqa score saved_models/reqa gs://bucket/photos/ --runner DataflowRunner --out gs://bucket/scores \\
      --pipeline-arg=--project=my-project --pipeline-arg=--region=europe-west1 --pipeline-arg=--setup_file=./setup.py
  keras-iqa score runs/reqa-koniq photos/ @more.txt --runner DirectRunner --num-workers 2 --out scores/
      (Beam: shards scores-*-of-*.csv with an error column, then manifest.json; the same command resumes a killed job)

Python: keras_iqa.score(["photo.jpg", pil_image, uint8_array, jpeg_bytes], model="runs/reqa-koniq").

Files that cannot be read are listed on stderr with the reason and skipped; the exit status is non-zero only when nothing
could be scored. A score outside the model's declared range is kept as given and flagged (column out_of_range, one
warning). --scores never replaces a file keras-iqa score did not write (a label sheet, say) unless --overwrite.
"""


def register(sub):
    p = sub.add_parser("score", help="score files and folders with a trained or exported model",
                       description="Score image files and folders (batched, with a progress bar) and write a CSV or JSON-lines table.",
                       epilog=EPILOG, formatter_class=formatter())
    p.add_argument("model", metavar="MODEL", help="run directory, .keras file, SavedModel directory, .tflite file, preset "
                                                  "handle or model card name")
    p.add_argument("paths", metavar="PATH", nargs="+", help="image files and/or folders")
    p.add_argument("--recursive", "-r", action="store_true", help="descend into subfolders of folder PATHs")
    p.add_argument("--scores", metavar="FILE", help="write the scores to FILE (.csv or .jsonl); default: CSV on stdout. An "
                   "existing FILE is replaced only when keras-iqa score wrote it (its header), or with --overwrite")
    p.add_argument("--overwrite", action="store_true", help="let --scores replace an existing file keras-iqa did not write")
    p.add_argument("--batch-size", "-b", type=int, default=32, metavar="N", help="images decoded and scored together (default 32)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="decoding threads (default 2)")
    add_precision_arg(p, default="fp32", note="; Keras models only (run, .keras, preset, card): default fp32, the "
                                              "scores of evaluation and the exports; bf16 also folds the backbone's "
                                              "batch norm (faster on CPUs with native bf16, scores differ by bf16 "
                                              "rounding)")
    p.add_argument("--crop-scores", action="store_true",
                   help="add every test crop's score to each row (column crop_scores: space-separated in CSV, a list in "
                        "JSON lines)")
    p.add_argument("--trust-model", action="store_true",
                   help="load a SavedModel or .tflite even when it holds ops a keras-iqa scorer does not use (file or "
                        "system operations, custom ops); only for a model you made or verified (docs/security.md)")
    b = p.add_argument_group("batch scoring on a Beam runner (docs/scaling.md)")
    b.add_argument("--runner", default=None, help="score on Beam (DirectRunner, DataflowRunner, FlinkRunner, SparkRunner, "
                   "...) into sharded tables under --out; PATHs may also be gs://, s3://, hdfs:// files or prefixes and "
                   "@FILE lists of paths; a killed job run again scores only what is missing")
    b.add_argument("--out", metavar="DIR", help="with --runner: the output folder or URI prefix (shards scores-*-of-*.csv or "
                                                   ".jsonl, then manifest.json)")
    b.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="with --runner: shard format (default csv)")
    b.add_argument("--num-shards", type=int, default=None,
                   help="with --runner: output shards (default one per 1,000 images; a resume keeps the existing count)")
    b.add_argument("--num-workers", type=int, default=1,
                   help="with --runner DirectRunner: worker processes (multi_processing mode when > 1; default 1)")
    b.add_argument("--pipeline-arg", dest="pipeline_arg", action="append", default=[], metavar="ARG",
                   help="Beam pipeline option passed through, also used for the driver's own reads and writes "
                        "(repeatable; write --pipeline-arg=--flag=value)")
    p.set_defaults(func=run)


def run_batch(args) -> int:
    """`--runner`: `keras_iqa.scoring.batch.score_pipeline`, then one summary line."""
    from keras_iqa.commands.prepare import runner_args
    from keras_iqa.scoring.batch import score_pipeline

    if not args.out:
        raise ValueError("--runner needs --out DIR (the folder or URI prefix the shards and manifest.json go to)")
    if args.scores or args.crop_scores:
        raise ValueError("--runner writes shards under --out: drop --scores / --crop-scores")
    m = score_pipeline(args.model, args.paths, args.out, args.runner, runner_args(args), fmt=args.format,
                       num_shards=args.num_shards, batch_size=args.batch_size, workers=args.workers,
                       precision=args.precision, trust=args.trust_model, recursive=args.recursive)
    for path, reason in m["skipped_inputs"]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"scored {m['rows'] - m['failed']} image(s), {m['failed']} failed (rows with an error) into "
          f"{len(m['shards'])} shard(s) under {args.out} ({m['scored_now']} scored by this run); manifest.json written",
          file=sys.stderr)
    return 0 if m["rows"] > m["failed"] else 1


def run(args):
    if args.runner:
        return run_batch(args)
    if args.out:
        raise ValueError("--out is for batch scoring on a Beam runner: add --runner DirectRunner (or write one table "
                         "with --scores FILE)")
    from keras_iqa.scoring import load_scorer, score_paths, write_csv, write_rows
    from keras_iqa.scoring.results import check_scores_target, flag_rows

    if args.scores and not args.scores.lower().endswith((".csv", ".tsv", ".txt", ".jsonl", ".json", ".ndjson")):
        raise ValueError(f"--scores {args.scores}: use a .csv or .jsonl file name")
    if args.scores:
        check_scores_target(args.scores, overwrite=args.overwrite)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    scorer = load_scorer(args.model, precision=args.precision, trust=args.trust_model)
    rows, bad = score_paths(scorer, args.paths, recursive=args.recursive, batch_size=args.batch_size,
                            progress=not args.quiet and sys.stderr.isatty(), workers=args.workers,
                            crop_scores=args.crop_scores)
    rows = flag_rows(rows, scorer.score_range, scorer.source)
    if args.scores:
        write_rows(rows, args.scores)
    else:
        write_csv(rows, sys.stdout)
    for path, reason in bad:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    lo, hi = scorer.score_range
    print(f"scored {len(rows)} image(s) with {scorer.kind} model {scorer.source} ({scorer.precision}; score {lo:g}..{hi:g}, "
          f"{'higher' if scorer.higher_better else 'lower'} = better); {len(bad)} skipped"
          + (f"; wrote {args.scores}" if args.scores else ""), file=sys.stderr)
    if not rows:
        print("keras-iqa score: error: nothing could be scored", file=sys.stderr)
        return 1
    return 0
