"""`keras-iqa report`: side-by-side table of several evaluated runs."""

from pathlib import Path

from keras_iqa.commands import formatter

DESCRIPTION = """\
Build one table from the results.json of several evaluations (a run dir, a report dir written by `keras-iqa evaluate --out`,
or any folder holding them one level down): protocol, dataset, summary SROCC / PLCC / KROCC / logistic PLCC / RMSE / MAE
(median over splits by default) and the per-range SROCC of the fine-grained report.
"""

EPILOG = """\
Examples:
  keras-iqa report reports/reqa-koniq reports/metaiqa-koniq reports/hcl-koniq
  keras-iqa report runs/*/eval --stat mean --md comparison.md
  keras-iqa report reports/* --csv comparison.csv
"""


def register(sub):
    p = sub.add_parser("report", help="side-by-side table of several runs", description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=formatter())
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run or report directories (or results.json files)")
    p.add_argument("--stat", default="median", choices=("median", "mean"), help="summary over splits (default median)")
    p.add_argument("--md", metavar="FILE.md", help="also write the markdown table to this file")
    p.add_argument("--csv", metavar="FILE.csv", help="also write the table to this CSV file")
    p.set_defaults(func=run)


def run(args):
    from keras_iqa.evaluation import reports as R

    table = R.compare_table(args.runs, stat=args.stat)
    md = R.table_markdown(table)
    print(md)
    if args.md:
        Path(args.md).write_text(md, encoding="utf-8")
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0
