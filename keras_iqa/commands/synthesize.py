"""`keras-iqa synthesize`: pristine photos -> the 25 KADID/KADIS distortions x 5 levels as TFRecords (Beam), or a contact sheet."""

from __future__ import annotations

import os
import sys

from keras_iqa.commands import formatter

DESCRIPTION = """\
Distort pristine (reference) photos with the 25 KADID-10k / KADIS-700k distortion types at 5 levels (the MATLAB
generator's level table) and write two prepared datasets with a Beam pipeline:
  OUT/NAME        kind "synthetic": distorted image (lossless PNG), distortion type/name/level, reference id;
                  score/mos is NaN (no human score exists); --pseudo-label adds a full-reference score under score/pseudo
  OUT/NAME_pairs  kind "pair": the same plus the reference image (for HCL's reconstruction stage)
Each with sharded TFRecords, manifest.json and splits.csv (split by reference: all versions of a photo on one side).
With --preview, draws one reference through all types x levels into a PNG contact sheet instead (or as well, with --out).
"""

EPILOG = """\
Examples:
  keras-iqa synthesize --pristine embedded --out records/ --name demo_synth          # photos bundled with scikit-image
  keras-iqa synthesize --pristine photos/ --out records/ --types 1,3,10 --levels 1-5 --pseudo-label ms-ssim
  keras-iqa synthesize --pristine photos/ --out records/ --per-image-types 5 --seed 7 --max-long-side 512
  keras-iqa synthesize --pristine photos/ --out records/ --num-workers 2              # DirectRunner, 2 processes
  keras-iqa synthesize --pristine gs://bucket/photos --out gs://bucket/records --runner DataflowRunner \\
      --pipeline-arg=--project=my-project --pipeline-arg=--region=europe-west1 \\
      --pipeline-arg=--temp_location=gs://bucket/tmp --pipeline-arg=--setup_file=./setup.py
      (run in a keras-iqa checkout after pip install -e '.[gcp]'; or --pipeline-arg=--sdk_container_image=IMAGE)
  keras-iqa synthesize --preview contact_sheet.png --preview-reference chelsea --preview-size 64
Types (KADID ids): 1 GBLUR 2 Lens_Blur 3 Motion_Blur 4 Color_Diffusion 5 Color_Shift 6 Color_Quantization
  7 Saturation_Dist._HSV 8 Saturation_Dist._Lab 9 JP2K 10 JPEG 11 AWGN 12 AWGN_YCbCr 13 Impulse_Noise
  14 Multiplicative_Noise 15 Denoising 16 Brighten 17 Darken 18 Mean_Shift 19 Jitter 20 Non-eccentricity_patch
  21 Pixelate 22 Quantization 23 Color_Block 24 High_Sharpen 25 Contrast Dist.
Re-running with the same arguments skips complete shards; a killed or interrupted run resumes without duplicates, and a
finished one says "already complete". OUT/NAME and OUT/NAME_pairs are locked while they are written: a second run on them
stops at once. NAME is a plain folder name under OUT.
"""


def register(sub):
    p = sub.add_parser("synthesize", help="25 KADID/KADIS distortions x 5 levels on pristine photos (Beam), contact sheet",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter())
    p.add_argument("--pristine", default="embedded", metavar="DIR",
                   help="folder of reference photos (searched recursively; local or a URI: gs://, s3://, ...), or "
                        "'embedded' / 'embedded:astronaut,coffee' "
                        "for the photos bundled with scikit-image (default: embedded)")
    p.add_argument("--out", metavar="DIR", help="parent folder of the two datasets (required unless only --preview)")
    p.add_argument("--name", default="synthetic", help="dataset name; the pairs go to NAME_pairs (default: synthetic)")
    p.add_argument("--types", default="all", help="'all' or KADID ids / names, e.g. '1,3,10' or '1-9' (default: all)")
    p.add_argument("--levels", default="1-5", help="levels 1 (mildest) .. 5, e.g. '1-5' or '1,3,5' (default: 1-5)")
    p.add_argument("--per-image-types", type=int, default=0, metavar="K",
                   help="K random types per reference (KADIS-700k style); 0 = all selected types (default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the distortion randomness, type choice and splits (default 0)")
    p.add_argument("--pseudo-label", choices=("ssim", "ms-ssim"), default=None,
                   help="add a full-reference pseudo-label (distorted vs reference) under score/pseudo; score/mos stays NaN")
    p.add_argument("--no-pairs", action="store_true", help="do not write the NAME_pairs dataset")
    p.add_argument("--max-long-side", type=int, default=0, metavar="PX",
                   help="downscale references to this long side before distorting (0 = keep; KADIS used 512x384)")
    p.add_argument("--restretch", action="store_true",
                   help="apply the MATLAB generator's min-max stretch (mapmm) to input and output, as the official code does")
    p.add_argument("--num-splits", type=int, default=10, metavar="N",
                   help="random reference-grouped split columns split_00.. (default 10)")
    p.add_argument("--train-ratio", type=float, default=0.8, help="train fraction of the references (default 0.8)")
    g = p.add_argument_group("Beam runner")
    g.add_argument("--runner", default="DirectRunner",
                   help="Beam runner: DirectRunner (default), DataflowRunner, FlinkRunner, SparkRunner, ...; 'inline' for no Beam")
    g.add_argument("--num-workers", type=int, default=1,
                   help="DirectRunner worker processes (multi_processing mode when > 1; default 1)")
    g.add_argument("--num-shards", type=int, default=None,
                   help="TFRecord shards per dataset (default: ~500 images per shard, at least --num-workers)")
    g.add_argument("--pipeline-arg", "--beam-arg", dest="pipeline_arg", action="append", default=[], metavar="ARG",
                   help="Beam pipeline option passed through, also used for the driver's own reads and writes "
                        "(repeatable; write --pipeline-arg=--flag=value; --beam-arg is an alias)")
    g = p.add_argument_group("contact sheet")
    g.add_argument("--preview", metavar="OUT.png", help="draw one reference through all types x levels into this PNG")
    g.add_argument("--preview-reference", default="chelsea",
                   help="embedded photo name or image path for the contact sheet (default: chelsea)")
    g.add_argument("--preview-size", type=int, default=64, help="thumbnail size in px (default 64)")
    g.add_argument("--preview-work-size", type=int, default=128,
                   help="size the reference is distorted at before the thumbnail is drawn (default 128)")
    p.set_defaults(func=run)


def _runner_args(args) -> list[str]:
    extra = list(args.pipeline_arg)
    if args.runner == "DirectRunner" and args.num_workers > 1:
        extra += [f"--direct_num_workers={args.num_workers}", "--direct_running_mode=multi_processing"]
    return extra


def run(args) -> int:
    if not args.out and not args.preview:
        raise ValueError("give --out DIR to synthesize datasets, or --preview OUT.png for a contact sheet (see --help)")
    if args.preview:
        from data_pipeline import preview, pristine

        ref = args.preview_reference
        if ref in pristine.EMBEDDED:
            img = pristine.load_embedded(ref)
        elif os.path.isfile(ref):
            from data_pipeline.images import load_image

            img = load_image(ref)
        else:
            raise ValueError(f"--preview-reference {ref!r} is neither an embedded photo ({', '.join(pristine.EMBEDDED)}) "
                             "nor an image file")
        from data_pipeline import distortions as D

        preview.contact_sheet(img, args.preview, size=args.preview_size, work_size=args.preview_work_size,
                              seed=args.seed, types=D.parse_types(args.types), levels=D.parse_levels(args.levels),
                              restretch=args.restretch)
        print(f"contact sheet: {args.preview}")
    if not args.out:
        return 0

    from data_pipeline.beam.synthesize import synthesize

    result = synthesize(
        args.pristine, args.out, name=args.name, types=args.types, levels=args.levels,
        per_image_types=args.per_image_types, seed=args.seed, pseudo_label=args.pseudo_label, pairs=not args.no_pairs,
        runner=None if args.runner.lower() in ("inline", "none") else args.runner, pipeline_args=_runner_args(args), num_shards=args.num_shards,
        max_long_side=args.max_long_side, restretch=args.restretch, num_splits=args.num_splits,
        train_ratio=args.train_ratio, progress=not getattr(args, "quiet", False))
    failed = False
    for kind, manifest in result.items():
        if manifest is None:
            continue
        rejects = manifest.get("rejects", [])
        name = manifest.get("dataset", kind)
        if manifest.get("already_complete"):
            print(f"{kind}: already complete: {os.path.join(args.out, name)} ({manifest.get('count', 0)} records, "
                  f"{len(rejects)} rejected); nothing to do")
        else:
            print(f"{kind}: {manifest.get('count', 0)} records -> {os.path.join(args.out, name)}"
                  f" ({len(rejects)} rejected)")
        for r in rejects:
            print(f"  rejected {r.get('path')}: {r.get('reason')}", file=sys.stderr)
        if not manifest.get("count"):
            failed = True
    if failed:
        print("keras-iqa synthesize: error: no image could be synthesized (see the rejects above)", file=sys.stderr)
        return 1
    return 0
