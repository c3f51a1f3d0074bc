"""`keras-iqa prepare`: a dataset in its official on-disk layout -> sharded TFRecords + manifest.json + splits.csv (Apache Beam)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from keras_iqa.commands import formatter

DESCRIPTION = """\
Turns a dataset in its OFFICIAL on-disk layout into <OUT>/<name>/records-XXXXX-of-NNNNN-<attempt>.tfrecord + manifest.json +
splits.csv. ROOT and OUT may be local folders or URIs (gs://, s3://, hdfs://) on any Beam runner (docs/scaling.md).

Every image is decoded once to validate it; original JPEG/PNG/BMP bytes are kept, anything else is stored as lossless PNG.
Bad rows (missing file, NaN or out-of-range score, duplicate id) and undecodable images are listed in manifest.json "rejects"
with the score file and row; the command exits non-zero only if nothing could be prepared. Each shard is a new object with
its checksum in a sidecar, and manifest.json, written last, commits them: a re-run keeps complete shards, so an interrupted
run (Ctrl-C, a full disk, a kill) can simply be started again (no rename, so the same holds on object stores); a re-run of
a finished one says "already complete" and stops.

Safety (docs/security.md): a row whose image path leaves ROOT (`..`, an absolute path, a symlink out) is rejected unless
--allow-outside-root; the dataset name is a plain folder name under OUT; OUT/<name> is locked while it is written, so a
second run on it stops at once. Paths in --option (csv=, list_file=, label_file=) are relative to the current folder.

Datasets and expected layouts (docs/datasets.md; docs/data-pipeline.md has details):
  koniq10k   ROOT/1024x768/*.jpg (or 512x384/), koniq10k_scores_and_distributions.csv, koniq10k_distributions_sets.csv
             options: resolution=1024x768|512x384, score_column=MOS_zscore|MOS
  clive      ROOT/Images/, ROOT/Data/AllImages_release.mat, AllMOS_release.mat, AllStdDev_release.mat (first 7 dropped)
  bid        ROOT/DatabaseImage0001.JPG ..., ROOT/DatabaseGrades.xlsx
  spaq       ROOT/TestImage/*.jpg, ROOT/Annotations/MOS and Image attribute scores.xlsx   option: short_side=512
  cid2013    ROOT/IS1/co1/*.jpg ..., ROOT/CID2013.txt (dis_img_path,dis_type,score)      option: list_file=...
  kadid10k   ROOT/images/I01_01_01.png ..., ROOT/dmos.csv
  tid2013    ROOT/distorted_images/, ROOT/reference_images/, ROOT/mos_with_names.txt, ROOT/mos_std.txt
  live       ROOT/{jp2k,jpeg,wn,gblur,fastfading}/, ROOT/refimgs/, ROOT/dmos.mat, ROOT/refnames_all.mat
  csiq       ROOT/dst_imgs_all/ (or dst_imgs/[TYPE/]), ROOT/src_imgs/, ROOT/csiq_label.txt
  kadis700k  ROOT/ref_imgs/, ROOT/kadis700k_ref_imgs.csv (references only, no scores)
  csv        your own data: --option csv=FILE --option score_range=LO,HI [image_column=, score_column=, image_dir=,
             std_column=, split_column=, reference_column=, type_column=, level_column=, higher_better=false, name=]
"""

EPILOG = """\
examples:
  keras-iqa prepare koniq10k --root /data/koniq10k --out records/
  keras-iqa prepare koniq10k --root /data/koniq10k --out records/ --option resolution=512x384
  keras-iqa prepare kadid10k --root /data/kadid10k --out records/ --num-splits 10 --train-ratio 0.8 --seed 0
  keras-iqa prepare spaq --root /data/SPAQ --out records/ --option short_side=512
  keras-iqa prepare csv --root ~/photos --out records/ --option csv=scores.csv --option score_range=1,5 \\
      --option image_column=file --option score_column=mos
  keras-iqa prepare tid2013 --root /data/tid2013 --out records/ --num-workers 2     # DirectRunner, 2 processes
  keras-iqa prepare kadis700k --root gs://bucket/kadis --out gs://bucket/records --runner DataflowRunner \\
      --pipeline-arg=--project=my-project --pipeline-arg=--region=europe-west1 \\
      --pipeline-arg=--temp_location=gs://bucket/tmp --pipeline-arg=--setup_file=./setup.py
      (run in a keras-iqa checkout after pip install -e '.[gcp]'; --setup_file ships the package to the workers,
      or give them a container: --pipeline-arg=--sdk_container_image=IMAGE, see docs/scaling.md)
  keras-iqa prepare koniq10k --root s3://bucket/koniq10k --out s3://bucket/records \\
      --pipeline-arg=--s3_endpoint_url=http://127.0.0.1:9000 --pipeline-arg=--s3_region_name=us-east-1
Then train from the result, e.g. `keras-iqa train reqa --data records/koniq10k --split split_00`.
"""


def register(sub):
    p = sub.add_parser("prepare", help="official dataset layouts -> TFRecords + manifest + splits (Beam)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter())
    p.add_argument("dataset", help="dataset name: koniq10k, clive, bid, spaq, cid2013, kadid10k, tid2013, live, csiq, "
                                   "kadis700k or csv (aliases: koniq, livechallenge, kadid, tid, ...)")
    p.add_argument("--root", required=True, help="the dataset's root folder in its official layout")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder; the dataset goes to OUT/<name>/")
    p.add_argument("--num-splits", type=int, default=20, metavar="N",
                   help="random split columns split_00.. (default 20: REQA's 20 train-test iterations; MetaIQA uses 10)")
    p.add_argument("--train-ratio", type=float, default=0.8, help="train fraction of images, or of references for synthetic "
                                                                   "sets (default 0.8)")
    p.add_argument("--seed", type=int, default=0, help="split seed; column k uses seed+k (default 0)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option (repeatable), "
                                                                                         "e.g. resolution=512x384")
    p.add_argument("--num-shards", type=int, default=None, help="number of TFRecord shards (default ~500 images per shard)")
    p.add_argument("--runner", default="DirectRunner", help="Beam runner (DirectRunner, DataflowRunner, FlinkRunner, "
                                                            "SparkRunner, ...) or 'inline' for no Beam")
    p.add_argument("--num-workers", type=int, default=1,
                   help="DirectRunner worker processes (multi_processing mode when > 1; default 1)")
    p.add_argument("--pipeline-arg", "--beam-arg", dest="pipeline_arg", action="append", default=[], metavar="ARG",
                   help="Beam pipeline option passed through, also used for the driver's own reads and writes "
                        "(repeatable; write --pipeline-arg=--flag=value; --beam-arg is an alias)")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows (smoke runs)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="read rows whose image path leaves --root (`..`, an absolute path, a symlink out); "
                        "rejected by default")
    p.set_defaults(func=run)


def runner_args(args) -> list[str]:
    """--pipeline-arg values, plus the DirectRunner's worker processes for --num-workers > 1."""
    extra = list(args.pipeline_arg)
    if args.runner in ("DirectRunner", "direct") and args.num_workers > 1:
        extra += [f"--direct_num_workers={args.num_workers}", "--direct_running_mode=multi_processing"]
    return extra


def _parse_options(items) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--option {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        v = v.strip()
        if v.lower() in ("true", "false"):
            v = v.lower() == "true"
        elif v.lower() in ("none", "null", ""):
            v = None
        elif v.lstrip("-").isdigit():
            v = int(v)
        out[k] = v
    return out


def run(args: argparse.Namespace) -> int:
    from data_pipeline.beam.prepare import prepare

    logging.basicConfig(level=logging.WARNING)
    runner = None if args.runner.lower() in ("inline", "none") else args.runner
    m = prepare(args.dataset, args.root, args.out, options=_parse_options(args.option), num_splits=args.num_splits,
                train_ratio=args.train_ratio, seed=args.seed, runner=runner, pipeline_args=runner_args(args),
                num_shards=args.num_shards, limit=args.limit, progress=not getattr(args, "quiet", False),
                allow_outside_root=args.allow_outside_root)
    rejects = m["rejects"]
    where = os.path.join(args.out, m["dataset"])
    if m.get("already_complete"):
        print(f"already complete: {where} ({m['count']} images, {len(rejects)} rejected; the same rows and settings); "
              "nothing to do")
        return 0 if m["count"] > 0 else 1
    if not args.quiet:
        for r in rejects:
            print(f"rejected {r['path']}: {r['reason']}", file=sys.stderr)
        print(json.dumps({k: m[k] for k in ("dataset", "kind", "count", "score_range", "higher_better")}
                         | {"shards": len(m["shards"]), "shards_reused": m["writer"]["shards_reused"],
                            "rejects": len(rejects), "seconds": m.get("prepare_seconds")}))

    print(f"prepared {m['count']} images of {m['dataset']} into {where} ({len(rejects)} rejected)")
    return 0 if m["count"] > 0 else 1
