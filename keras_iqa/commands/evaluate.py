"""`keras-iqa evaluate`: metrics under the field's protocols (splits, official, cross, lodo), significance tests and gMAD."""

import glob
import warnings
from pathlib import Path

from keras_iqa.commands import formatter

DESCRIPTION = """\
Evaluate trained models on prepared datasets and write a report (results.json, results.csv, predictions.csv, summary.md,
scatter / per-range / error-histogram / confusion PNGs).

SOURCE is a run directory (holding model.keras and config.json), a .keras file, a CSV of predictions (image_id,pred),
or a classical baseline: niqe, or a folder holding brisque.json (keras-iqa baseline fit brisque).
Protocols never train. A protocol that retrains per split takes one SOURCE per split:
  splits    N random splits: SOURCE i is scored on the TEST subset of its split (its config.json `split`, else --split,
            else split_00, split_01, ... in order); summary = median and mean +- std over splits. One SOURCE with several
            --split columns scores that one model on each split's test subset (only valid for a model never trained on this data).
  official  the dataset's official split (splits.csv column `official`), --subset test|validation.
  cross     SOURCE (trained on dataset A) on ALL images of each --data dataset (repeat --data per dataset).
  lodo      leave-one-distortion-out: SOURCE i was trained without type --held-out[i] (or its config's held_out_distortion)
            and is scored on every image of that type.
  gmad      gMAD competition between SOURCE and --against on an unlabeled --pool folder; writes a contact sheet.
Test-time crops follow each model (test_crops, crop_policy) unless --num-crops / --mode say otherwise.
"""

EPILOG = """\
Examples:
  # REQA over 10 splits, one run per split (runs/reqa_split_00 .. runs/reqa_split_09):
  keras-iqa evaluate runs/reqa_split_* --data records/koniq10k --protocol splits --out reports/reqa-koniq
  # official split, paper test protocol forced (25 random crops):
  keras-iqa evaluate runs/reqa-koniq --data records/koniq10k --protocol official --num-crops 25 --mode random
  # cross-dataset: trained on KonIQ, tested on all of CLIVE and BID:
  keras-iqa evaluate runs/reqa-koniq --data records/clive --data records/bid --protocol cross --out reports/cross
  # significance against a baseline (F-test per split + Wilcoxon over per-split SROCCs):
  keras-iqa evaluate runs/reqa_split_* --compare 'runs/metaiqa_split_*' --data records/clive --protocol splits
  # range-effect bins (0-100 scale; other scales are mapped from the dataset's score_range):
  keras-iqa evaluate runs/reqa-koniq --data records/koniq10k --protocol official --bins 0,25,50,75,100
  # gMAD on unlabeled photos:
  keras-iqa evaluate runs/reqa-koniq --protocol gmad --against runs/hcl-koniq --pool photos/ --out reports/gmad
Then compare runs side by side:  keras-iqa report reports/reqa-koniq reports/cross
"""


def register(sub):
    p = sub.add_parser("evaluate", help="metrics under the field's protocols (splits, official, cross, lodo), gMAD",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter())
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="run dir(s), .keras file(s), predictions CSV(s) or baselines")
    p.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="prepared dataset (repeatable: several only for --protocol cross)")
    p.add_argument("--protocol", default="splits", choices=("splits", "official", "cross", "lodo", "gmad"),
                   help="evaluation protocol (default splits; see above)")
    p.add_argument("--out", metavar="DIR", help="report folder (default: <first run>/eval/<protocol>-<dataset>)")
    p.add_argument("--split", metavar="COL[,COL]",
                   help="split column(s) of splits.csv, comma-separated, one per SOURCE (default: from config.json)")
    p.add_argument("--subset", default="test", choices=("test", "validation"), help="official protocol subset (default test)")
    p.add_argument("--held-out", action="append", metavar="TYPE[,TYPE]",
                   help="lodo: held-out distortion type id or name, one per SOURCE in order (comma-separated or repeatable)")
    p.add_argument("--lodo-split", metavar="COL", help="lodo: also restrict to this split's test subset (unseen content)")
    p.add_argument("--compare", action="append", metavar="SOURCE",
                   help="baseline source, same protocol; adds significance tests (repeatable, one per split; a quoted glob "
                        "such as 'runs/meta_split_*' is expanded)")
    p.add_argument("--num-crops", type=int, help="test crops per image (default: the model's test_crops)")
    p.add_argument("--mode", choices=("random", "grid", "resize"), help="test crop policy (default: the model's crop_policy)")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="images per forward pass, all their test crops together (default: as many images as make about "
                        "32 crops, at least 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of random test crops (default 0)")
    p.add_argument("--bins", default="0,20,40,60,80,100", help="range bin edges on 0-100 (default: the five ACR bins)")
    p.add_argument("--labels", help="comma-separated bin labels (default Bad,Poor,Fair,Good,Excellent for the ACR bins)")
    p.add_argument("--pred-mapping", choices=("range", "logistic", "none"),
                   help="how predictions reach 0-100 for the range report (default: the model's score_range; CSVs: logistic)")
    p.add_argument("--best-epoch", action="store_true",
                   help="also report REQA's official-code numbers: best test SROCC / PLCC over epochs from each run's "
                        "history.csv (test-set model selection, reported beside the final-model numbers)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--against", metavar="SOURCE", help="gmad: the second model")
    p.add_argument("--pool", metavar="DIR", help="gmad: folder of unlabeled images (searched recursively)")
    p.add_argument("--gmad-levels", type=int, default=5, metavar="N", help="gmad: defender quality levels (default 5)")
    p.add_argument("--tol", type=float, default=0.02,
                   help="gmad: equal-quality window, fraction of the pool's ranks (default 0.02)")
    p.set_defaults(func=run)


def _expand(values) -> list:
    """Values as given; a value with glob characters that matches paths is replaced by its sorted matches."""
    out = []
    for v in values:
        hits = sorted(glob.glob(v)) if any(c in v for c in "*?[") else []
        out.extend(hits or [v])
    return out


def _default_report(args, dataset: str) -> str:
    first = Path(args.sources[0])
    base = first / "eval" if first.is_dir() else Path("reports") / first.stem
    return str(base / f"{args.protocol}-{dataset}")


def _run_protocol(P, sources, args, fine_kw, predict_kw):
    splits = args.split.split(",") if args.split else None
    held_out = [t for v in args.held_out for t in v.split(",") if t] if args.held_out else None
    if args.protocol == "splits":
        return P.evaluate_splits(sources, args.data[0], splits=splits, fine_kw=fine_kw, **predict_kw)
    if args.protocol == "official":
        if len(sources) != 1:
            raise ValueError(f"the official protocol takes one SOURCE, got {len(sources)}")
        return P.evaluate_official(sources[0], args.data[0], subset=args.subset, fine_kw=fine_kw, **predict_kw)
    if args.protocol == "cross":
        if len(sources) != 1:
            raise ValueError(f"the cross protocol takes one SOURCE (the model trained on A), got {len(sources)}")
        return P.evaluate_cross(sources[0], args.data, fine_kw=fine_kw, **predict_kw)
    return P.evaluate_lodo(sources, args.data[0], held_out=held_out, split=args.lodo_split, fine=True, fine_kw=fine_kw,
                           **predict_kw)


def _significance(S, res, base) -> list:
    """F-test per row (same images) and, with >= 2 rows, Wilcoxon over paired per-row SROCCs."""
    names = (", ".join(s["name"] for s in res.results["sources"])[:40] or "A",
             ", ".join(s["name"] for s in base.results["sources"])[:40] or "B")
    out = []
    rows_a = {r["row"]: r for r in res.results["rows"]}
    rows_b = {r["row"]: r for r in base.results["rows"]}
    common = [k for k in rows_a if k in rows_b]
    for k in common:
        a = res.predictions[res.predictions.row == k]
        b = base.predictions[base.predictions.row == k]
        t = S.compare_predictions(a, b, names=names)
        t["row"] = k
        t["test"] = f"{t['test']} [{k}]"
        out.append(t)
    if len(common) >= 2:
        out.append(S.wilcoxon_splits([rows_a[k]["srocc"] for k in common], [rows_b[k]["srocc"] for k in common], names=names))
    return out


def _run_gmad(args):
    from data_pipeline.images import is_image_file
    from keras_iqa.evaluation import gmad as G
    from keras_iqa.evaluation import protocols as P

    if not args.against or not args.pool:
        raise ValueError("--protocol gmad needs --against SOURCE (the second model) and --pool DIR (unlabeled images)")
    a, b = P.load_source(args.sources[0]), P.load_source(args.against)
    if a.model is None or b.model is None:
        raise ValueError("gmad needs two models (run dirs or .keras files), not prediction tables")
    pool = sorted(p for p in Path(args.pool).rglob("*") if p.is_file() and is_image_file(str(p)))
    if len(pool) < 4:
        raise ValueError(f"{args.pool}: found {len(pool)} image(s); gMAD needs a pool of at least 4")
    out = args.out or str(Path("reports") / f"gmad-{a.name}-vs-{b.name}")
    res = G.gmad(a.model, b.model, pool, out, levels=args.gmad_levels, tol=args.tol, num_crops=args.num_crops, names=(a.name, b.name))
    print(f"gMAD: {len(res['pairs'])} pairs from {len(pool)} images -> {res['sheet']}")
    return 0


def run(args):
    from keras_iqa.evaluation import protocols as P
    from keras_iqa.evaluation import reports as R
    from keras_iqa.evaluation import significance as S

    if args.protocol == "gmad":
        return _run_gmad(args)
    if not args.data:
        raise ValueError("--data DIR is required (a prepared dataset: `keras-iqa prepare` writes one)")
    if len(args.data) > 1 and args.protocol != "cross":
        raise ValueError(f"several --data dirs only make sense with --protocol cross (got {len(args.data)})")
    edges = [float(v) for v in args.bins.split(",")]
    fine_kw = {"edges": edges, "labels": args.labels.split(",") if args.labels else None, "pred_mapping": args.pred_mapping}
    predict_kw = {"num_crops": args.num_crops, "mode": args.mode, "batch_images": args.batch_size, "seed": args.seed,
                  "progress": not getattr(args, "quiet", False)}
    sources = [P.load_source(s) for s in args.sources]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = _run_protocol(P, sources, args, fine_kw, predict_kw)
        if args.compare:
            base = _run_protocol(P, [P.load_source(s) for s in _expand(args.compare)], args, fine_kw, predict_kw)
            res.results["significance"] = _significance(S, res, base)
            res.results["baseline"] = {"sources": base.results["sources"], "summary": base.results["summary"],
                                       "rows": base.results["rows"]}
    if args.best_epoch:
        sel = P.best_epoch_selection(sources)
        if sel is None:
            raise ValueError("--best-epoch: no run has a history.csv with test_srocc/val_srocc or test_plcc/val_plcc columns")
        res.results["official_code_selection"] = sel
    if res.results.get("kind") in ("synthetic", "pair") and args.protocol != "lodo" and len(args.data) == 1:
        res.results["per_distortion"] = P.per_distortion(res.predictions, args.data[0])
    res.results["warnings"] = sorted({str(w.message) for w in caught})
    for w in res.results["warnings"]:
        print(f"warning: {w}")
    out = args.out or _default_report(args, res.results.get("dataset") or "data")
    files = R.write_report(res, out, plots=not args.no_plots)
    print(R.to_markdown(res.results))
    print(f"report written to {out} ({', '.join(sorted(files))})")
    return 0
