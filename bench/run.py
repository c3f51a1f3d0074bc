"""`make bench`: runs every `bench/<area>.py` benchmark and writes `bench/results/summary.md`.

    python -m bench.run                         # every area, full size (long: run it on a quiet machine)
    python -m bench.run --quick                 # smoke pass of the machinery, numbers meaningless
    python -m bench.run --only backbones,roofline

Each area is a module with `main(quick=False) -> dict` (the document `bench.common.write_results` wrote to
`bench/results/<area>.json`). Every area runs in its own Python process: a crash, an out-of-memory kill or a hang (per-area
`--timeout`) is recorded as that area's failure and the run goes on; TensorFlow settings of one area (thread pools, dtype
policy) cannot leak into the next. Benchmarks measure, they never fail the build: this command exits 0 whatever the areas
did (2 only for a usage error, e.g. an unknown `--only` name).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Optional

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
NOT_AREAS = {"__init__", "common", "run"}
# roofline reads the backbone results, so it runs after them; other areas run in this order, then alphabetically.
ORDER = ["data_pipeline", "synthesize", "reqa", "metaiqa", "hcl", "deploy", "scoring", "backbones", "roofline"]


def discover(bench_dir: Path = BENCH_DIR) -> list[str]:
    """Area names: the `*.py` modules of bench/ other than helpers (`common`, `run`, `_private`)."""
    names = [p.stem for p in Path(bench_dir).glob("*.py") if p.stem not in NOT_AREAS and not p.stem.startswith("_")]
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(ORDER)), n))


def run_area(module: str, quick: bool = False, timeout: Optional[float] = None, env: Optional[dict] = None,
             cwd: Optional[Path] = None) -> dict:
    """Runs `module.main(quick)` in a child process; returns a record {area, status, seconds, error, doc}."""
    area = module.rsplit(".", 1)[-1]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "doc.json"
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        root = str(BENCH_DIR.parent)
        child_env["PYTHONPATH"] = root + os.pathsep + child_env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "bench.run", "--child", module, "--child-out", str(out)] + (["--quick"] if quick else [])
        record = {"area": area, "module": module, "quick": quick}
        try:
            proc = subprocess.run(cmd, env=child_env, cwd=str(cwd or root), timeout=timeout, capture_output=True, text=True)
            record["seconds"] = time.perf_counter() - t0
            if proc.returncode == 0 and out.exists():
                record.update(status="ok", doc=json.loads(out.read_text()))
            else:
                tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-15:]
                record.update(status="failed", error=f"exit status {proc.returncode}: " + "\n".join(tail)[-1500:])
        except subprocess.TimeoutExpired:
            record.update(status="timeout", seconds=time.perf_counter() - t0, error=f"no result within {timeout:.0f} s")
    return record


def _child(module: str, out: str, quick: bool) -> int:
    import importlib

    mod = importlib.import_module(module)
    if not hasattr(mod, "main"):
        raise SystemExit(f"{module} has no main(quick=False) -> dict")
    doc = mod.main(quick=quick)
    if not isinstance(doc, dict):
        raise SystemExit(f"{module}.main returned {type(doc).__name__}, expected the dict of bench.common.write_results")
    Path(out).write_text(json.dumps(doc, default=str))
    return 0


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 0.01 or v == 0 else f"{v:.2e}"
    return str(v)


_SKIP = {"name", "median_s", "min_s", "max_s", "repeats", "items", "items_per_s", "ms_per_item", "selection", "ours_info",
         "torch_info"}


def _notes(entry: dict) -> str:
    parts = []
    for k, v in entry.items():
        if k in _SKIP or isinstance(v, (dict, list)):
            continue
        parts.append(f"{k}={_fmt(v)}")
    return "; ".join(parts)[:160].replace("|", "/")


def summarize(records: Iterable[dict], quick: bool = False) -> str:
    """The markdown summary: one status table over areas, then each area's entries (and its own table if it made one)."""
    records = list(records)
    machine = next((r["doc"].get("machine") for r in records if r.get("doc") and r["doc"].get("machine")), None)
    lines = ["# Benchmark results", ""]
    if quick:
        lines += ["**Quick smoke pass (`--quick`): tiny sizes, the numbers below only show that the harness works.**", ""]
    lines.append(f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `python -m bench.run`"
                 f"{' --quick' if quick else ''}. Medians over repeated runs after warm-up; min and max in the JSON files.")
    if machine:
        lines.append("Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()) + ".")
    lines += ["", "| area | status | seconds | entries | peak RSS MiB |", "|---|---|---|---|---|"]
    for r in records:
        doc = r.get("doc") or {}
        status = r["status"] if r["status"] == "ok" else f"**{r['status']}**"
        lines.append(f"| {r['area']} | {status} | {_fmt(r.get('seconds'), 1)} | {len(doc.get('results', []))} | "
                     f"{_fmt(doc.get('peak_rss_mib'), 0)} |")
    for r in records:
        lines += ["", f"## {r['area']}", ""]
        if r["status"] != "ok":
            lines += ["Failed (recorded, not fatal):", "", "```", r.get("error", "").strip(), "```"]
            continue
        doc = r["doc"]
        if doc.get("table_md"):  # the area's own table says it best; every entry stays in the JSON
            lines += [doc["table_md"], "", f"All entries: `bench/results/{r['area']}.json`."]
            continue
        entries = [e for e in doc.get("results", []) if isinstance(e, dict)]
        if entries:
            lines += ["| name | items/s | ms/item | median s | min s | max s | notes |", "|---|---|---|---|---|---|---|"]
            for e in entries:
                lines.append(f"| {e.get('name', '')} | {_fmt(e.get('items_per_s'))} | {_fmt(e.get('ms_per_item'))} | "
                             f"{_fmt(e.get('median_s'), 4)} | {_fmt(e.get('min_s'), 4)} | {_fmt(e.get('max_s'), 4)} | "
                             f"{_notes(e)} |")
    return "\n".join(lines) + "\n"


def run_all(modules: list[str], quick: bool = False, timeout: Optional[float] = None,
            results_dir: Path = RESULTS, env: Optional[dict] = None, log=print) -> list[dict]:
    """Runs the given area modules one after the other and writes `<results_dir>/summary.md` (and `runs.json`)."""
    records = []
    for module in modules:
        log(f"[bench] {module} ({'quick' if quick else 'full'}) ...")
        rec = run_area(module, quick=quick, timeout=timeout, env=env)
        log(f"[bench] {module}: {rec['status']} in {rec.get('seconds', 0):.1f} s"
            + (f"\n{rec['error']}" if rec["status"] != "ok" else ""))
        records.append(rec)
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "summary.md").write_text(summarize(records, quick=quick))
    (results_dir / "runs.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "doc"} for r in records], indent=2, default=str))
    return records


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Run the benchmarks of bench/ (each bench/<area>.py main(quick)), each in its own process; a failing "
                    "area is recorded and the run goes on. Writes bench/results/<area>.json and bench/results/summary.md "
                    "(the markdown table the README includes). Exits 0 even when areas fail: benchmarks measure, they "
                    "do not gate the build.",
        epilog="Examples:\n  python -m bench.run                    # everything, full size (quiet machine!)\n"
               "  python -m bench.run --quick            # smoke pass of every area\n"
               "  python -m bench.run --only backbones,roofline --timeout 3600\n"
               "  python -m bench.run --list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness, numbers are meaningless")
    p.add_argument("--only", default="", help="comma-separated area names (default: all found in bench/)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per area before it is recorded as 'timeout'")
    p.add_argument("--results", default=str(RESULTS), help="where summary.md and runs.json go (default: %(default)s)")
    p.add_argument("--list", action="store_true", help="list the areas found and exit")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    return p


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        return _child(args.child, args.child_out, args.quick)
    areas = discover()
    if args.list:
        print("\n".join(areas))
        return 0
    if args.only:
        wanted = [a.strip() for a in args.only.split(",") if a.strip()]
        unknown = [a for a in wanted if a not in areas]
        if unknown:
            print(f"error: unknown area(s) {unknown}; found in {BENCH_DIR}: {areas}", file=sys.stderr)
            return 2
        areas = [a for a in areas if a in wanted]
    records = run_all([f"bench.{a}" for a in areas], quick=args.quick, timeout=args.timeout, results_dir=Path(args.results))
    failed = [r["area"] for r in records if r["status"] != "ok"]
    print(f"[bench] wrote {Path(args.results) / 'summary.md'}; {len(records) - len(failed)} ok"
          + (f", failed (recorded): {', '.join(failed)}" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
