"""`keras-iqa demo`: the whole chain on photos bundled with scikit-image (no download). See `keras_iqa.demo`."""

from keras_iqa.commands import formatter


def register(sub):
    p = sub.add_parser(
        "demo",
        help="run the whole chain on the embedded photos (synthesize -> train x3 -> evaluate -> export -> score)",
        description="Synthesizes distorted images from the photos bundled with scikit-image, labels them with full-reference\n"
        "pseudo-scores (MS-SSIM, SSIM), trains MetaIQA, REQA and HCL (reconstruction) for a small budget, evaluates them on\n"
        "held-out references, exports the best to a SavedModel and a TFLite int8 model, scores a few images with both and\n"
        "writes a report. Every step prints the keras-iqa command it runs, so you can repeat any of them on your data.\n"
        "The small budget is a demonstration on pseudo-labels, not a reproduction of the papers.",
        epilog="Examples:\n  keras-iqa demo                       # small budget into demo_out/\n"
        "  keras-iqa demo --out /tmp/d --budget full   # the papers' networks at 224 px, all 25 types (hours on CPU)",
        formatter_class=formatter(),
    )
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default demo_out)")
    p.add_argument("--budget", choices=("small", "full"), default="small", help="small (minutes, tiny networks) or full")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the synthesis, splits and training (default 0)")
    p.set_defaults(func=run)


def run(args):
    from keras_iqa.demo import run_demo

    run_demo(args.out, args.budget, args.seed, progress=not getattr(args, "quiet", False))
    return 0
