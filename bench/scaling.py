"""Benchmark: `prepare` throughput on Beam's DirectRunner with 1 vs 2 worker processes (docs/scaling.md).

Images: generated 1024x768 JPEGs (KonIQ-10k size, quality 92) in a folder + scores.csv (the `csv` adapter). Both settings run
in multi_processing mode (separate worker processes that unpickle the work, as on a cluster), so both pay the same kind of
start-up (a Python process per worker importing TensorFlow and Beam). Each setting is timed on N images and on a small
dataset; the difference separates the per-image rate from the fixed cost:

    rate = (N - small) / (t(N) - t(small))      fixed cost = t(small) - small / rate

Medians of `repeats` runs, 4 shards (so 2 workers have work to share). The machine's 1-minute load average is recorded
before and after every setting: on a shared machine, read the numbers with it.

`python -m bench.scaling [--quick]` writes bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from bench.common import measure, write_results

OPTIONS = {"csv": "scores.csv", "image_dir": "photos", "image_column": "file", "score_column": "score", "score_range": "1,5"}


def _make_folder(root: str, n: int, size) -> None:
    import numpy as np
    from PIL import Image

    from data_pipeline import fixtures

    os.makedirs(os.path.join(root, "photos"), exist_ok=True)
    rng = np.random.default_rng(0)
    with open(os.path.join(root, "scores.csv"), "w") as f:
        f.write("file,score\n")
        for i in range(n):
            small = fixtures.content_image(i, (size[0] // 4, size[1] // 4))
            img = np.asarray(Image.fromarray(small).resize((size[1], size[0]), Image.Resampling.BICUBIC), np.float32)
            img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)  # photo-like entropy
            Image.fromarray(img).save(os.path.join(root, "photos", f"p{i:05d}.jpg"), quality=92)
            f.write(f"p{i:05d}.jpg,{1 + 4 * ((i % 10 + 0.5) / 10):.3f}\n")


def main(quick: bool = False) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from data_pipeline.beam.prepare import prepare

    n, small, size, repeats = (12, 4, (96, 128), 1) if quick else (200, 8, (768, 1024), 3)
    work = tempfile.mkdtemp(prefix="bench_scaling_")
    entries, summary = [], {}
    try:
        t0 = time.perf_counter()
        _make_folder(work, n, size)
        gen_s = time.perf_counter() - t0
        for workers in (1, 2):
            args = [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
            load_before = os.getloadavg()[0]
            timed = {}
            for count in (small, n):
                def run(count=count, args=args):
                    out = tempfile.mkdtemp(prefix="out_", dir=work)
                    try:
                        m = prepare("csv", work, out, options=OPTIONS, num_splits=1, runner="DirectRunner",
                                    pipeline_args=args, num_shards=4, limit=count)
                        assert m["count"] == count, m["count"]
                    finally:
                        shutil.rmtree(out, ignore_errors=True)

                r = measure(run, repeats=repeats, warmup=0, items=count, unit="images/s",
                            name=f"prepare DirectRunner {workers} worker process{'es' if workers > 1 else ''}, {count} images",
                            workers=workers, images=count, image_size_hw=list(size), shards=4,
                            note="wall time of prepare(): worker start-up, index, decode + validate, write, manifest")
                timed[count] = r["median_s"]
                entries.append(r)
            load_after = os.getloadavg()[0]
            rate = (n - small) / (timed[n] - timed[small]) if timed[n] > timed[small] else None
            summary[f"workers_{workers}"] = {
                "images_per_s_end_to_end": n / timed[n],
                "images_per_s_marginal": rate,
                "fixed_cost_s": (timed[small] - small / rate) if rate else None,
                "load_avg_1min_before": load_before, "load_avg_1min_after": load_after,
            }
        r1, r2 = summary["workers_1"]["images_per_s_marginal"], summary["workers_2"]["images_per_s_marginal"]
        summary["speedup_2_over_1_marginal"] = r2 / r1 if r1 and r2 else None
        summary["speedup_2_over_1_end_to_end"] = (summary["workers_2"]["images_per_s_end_to_end"]
                                                  / summary["workers_1"]["images_per_s_end_to_end"])
        return write_results("scaling", entries, summary=summary, quick=quick, images=n, small=small,
                             image_size_hw=list(size), generate_s=gen_s, cpus=os.cpu_count())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (12 small images, one repeat)")
    res = main(quick=ap.parse_args().quick)
    print(json.dumps({"results": res["results"], "summary": res["summary"]}, indent=1, default=str))
