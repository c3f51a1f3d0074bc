"""Shared benchmark helpers: timing with warm-up and medians, machine facts, JSON results.

Each benchmark module `bench/<area>.py` defines `main(quick: bool = False) -> dict` that calls `measure(...)` and returns
`write_results("<area>", entries)`. `python -m bench.run` runs them all and writes the markdown table.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    """Facts about the machine a result was measured on."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    for name in ("tensorflow", "keras", "keras_hub", "torch"):
        try:
            info[name] = __import__(name).__version__
        except Exception:
            pass
    return info


def measure(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, items: int = 1, unit: str = "s",
            name: str = "", budget_s: Optional[float] = None, **extra) -> dict:
    """Runs `fn` `warmup` times untimed, then `repeats` timed; returns median/min/max seconds and items/s.

    `budget_s`: stop timing once the timed runs took this long (at least 2 runs); "repeats" then says how many ran
    and the row records the budget.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if budget_s is not None and len(times) >= 2 and sum(times) >= budget_s:
            break
    repeats = len(times)
    med = statistics.median(times)
    return {
        "name": name,
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "repeats": repeats,
        "items": items,
        "items_per_s": items / med if med > 0 else None,
        "ms_per_item": 1000 * med / items,
        **({"budget_s": budget_s} if budget_s is not None else {}),
        **extra,
    }


def peak_rss_mib() -> Optional[float]:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except Exception:
        return None


def write_results(area: str, entries: list, quick: bool = False, **extra) -> dict:
    """Writes bench/results/<area>.json (a `--quick` smoke pass: <area>_quick.json, so it never replaces a full run's
    numbers) and returns its content."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"area": area, "machine": machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": entries,
           "peak_rss_mib": peak_rss_mib(), "quick": bool(quick), **extra}
    path = RESULTS / f"{area}{'_quick' if quick else ''}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    os.replace(tmp, path)
    return doc


def run_model_process(module: str, name: str, quick: bool = False, timeout: float = 3600) -> list:
    """`python -m <module> --model NAME --out F [--quick]` in a fresh process (memory returned to the OS after each model);
    the rows it wrote, or one error row."""
    import subprocess
    import sys
    import tempfile

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, "-m", module, "--model", name, "--out", str(out)] + (["--quick"] if quick else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=root, env=env)
        except subprocess.TimeoutExpired:
            return [{"name": "error", "model": name, "error": f"timed out after {timeout:.0f} s"}]
        if proc.returncode != 0 or not out.exists():
            return [{"name": "error", "model": name, "error": f"exit {proc.returncode}: {proc.stderr[-1500:]}"}]
        return json.loads(out.read_text())
