"""Benchmark: synthetic-distortion throughput.

1. per distortion type: ms per distorted image at 512x384 (KADIS reference size), all 5 levels, one process;
2. the Beam `synthesize` pipeline end to end (distort + PNG encode + TFRecord write, synthetic and pair datasets):
   distorted images/s with the DirectRunner in one process vs multi-processing with 2 workers.

`python -m bench.synthesize [--quick]` writes bench/results/synthesize.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile

import numpy as np

from bench.common import measure, write_results


def _reference(h: int, w: int) -> np.ndarray:
    from PIL import Image

    from data_pipeline import pristine

    return np.asarray(Image.fromarray(pristine.load_embedded("coffee")).resize((w, h), Image.LANCZOS))


def main(quick: bool = False) -> dict:
    from data_pipeline import distortions as D
    from data_pipeline.beam.synthesize import synthesize

    entries = []
    h, w = (96, 128) if quick else (384, 512)
    img = _reference(h, w)
    types = [1, 10, 15] if quick else sorted(D.DISTORTIONS)
    for t in types:
        def run(t=t):
            for lv in range(1, 6):
                D.distort(img, t, lv, np.random.default_rng(lv))

        r = measure(run, repeats=1 if quick else 3, warmup=0 if quick else 1, items=5,
                    name=f"distort type {t:02d} {D.NAMES[t]}", size=f"{w}x{h}")
        entries.append(r)

    # Beam pipeline: embedded references resized, a fixed set of types, both datasets written
    refs = "embedded:astronaut,chelsea" if quick else "embedded:astronaut,chelsea,coffee,rocket"
    syn_types = "1,10" if quick else "1,2,3,9,10,11,13,16,19,21"
    long_side = 96 if quick else 256
    n_images = len(refs.split(":")[1].split(",")) * len(syn_types.split(",")) * 5
    for workers in (0, 1, 2):  # 0 = the writer's inline mode (no Beam): the pipeline's own overhead is the difference
        args = [] if workers < 2 else [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]

        def run_pipeline(args=args, workers=workers):
            out = tempfile.mkdtemp(prefix="bench_synth_")
            try:
                synthesize(refs, out, name="bench", types=syn_types, levels="1-5", max_long_side=long_side,
                           pipeline_args=args, num_shards=2, runner="DirectRunner" if workers else None)
            finally:
                shutil.rmtree(out, ignore_errors=True)

        label = f"beam synthesize DirectRunner workers={workers}" if workers else "synthesize inline (no Beam)"
        r = measure(run_pipeline, repeats=1 if quick else 2, warmup=0, items=n_images,
                    name=label, references=refs, types=syn_types,
                    long_side=long_side, note="items = distorted images (each written to the synthetic and pair datasets)")
        entries.append(r)
    return write_results("synthesize", entries, quick=quick)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    a = ap.parse_args()
    doc = main(quick=a.quick)
    for e in doc["results"]:
        print(f"{e['name']:48s} {e['items_per_s']:.2f} items/s")
