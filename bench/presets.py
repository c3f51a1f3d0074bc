"""Preset benchmark: `keras-iqa models` wall time (the listing must stay under a second and free of TensorFlow), and per
model the preset's size, `save_to_preset`, SHA-256 speed, `from_preset` from a local folder (verify + build + load:
the build dominates), and `fetch_preset` from a 127.0.0.1 HTTP server into an empty cache (download + verify) and
from the cache (verify). Weights are random (time does not depend on them).

    python -c "import bench.presets as b; b.main(quick=True)"    # tiny model, seconds
    python -m bench.run --only presets                           # full-size models, each in its own process
    python -m bench.presets --model reqa --out reqa.json          # one model (what main() runs per model)
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.common import measure, run_model_process, write_results

FULL_MODELS = ("metaiqa", "reqa", "hcl")
QUICK_MODELS = ("metaiqa-tiny",)
_PROBE = ("import sys, time; t = time.perf_counter(); from keras_iqa import cli; rc = cli.main(['models']); "
          "print('HEAVY=' + ','.join(m for m in ('tensorflow', 'keras') if m in sys.modules), file=sys.stderr); "
          "sys.exit(rc)")


def bench_listing(cached: int, repeats: int) -> dict:
    """`keras-iqa models` in a fresh interpreter (start-up included) with `cached` presets in the cache."""
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(cached):  # what the listing reads: three files per folder and metadata.json
            d = Path(tmp) / f"https_example.org_p{i}"
            d.mkdir()
            for f in ("config.json", "model.weights.h5"):
                (d / f).write_text("{}")
            (d / "metadata.json").write_text(json.dumps({"name": f"p{i}", "card": "reqa", "metrics": {"srocc": 0.9}}))
        env = {**os.environ, "KERAS_IQA_CACHE": tmp}
        heavy = []

        def run():
            out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=120)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-1000:])
            heavy[:] = [ln for ln in out.stderr.splitlines() if ln.startswith("HEAVY=")]

        row = measure(run, repeats=repeats, warmup=1, name="keras-iqa models (fresh process)", cached_presets=cached)
        row["imports_tensorflow"] = heavy != ["HEAVY="]
    return row


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def bench_model(name: str, quick: bool) -> list:
    import keras
    import numpy as np

    import keras_iqa
    from keras_iqa import presets

    keras.utils.set_random_seed(0)
    model = keras_iqa.create_model(name)
    repeats = 2 if quick else 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "serve" / name
        rows.append(measure(lambda: presets.save_to_preset(model, folder), repeats=repeats, warmup=0,
                            name="save_to_preset", model=name))
        size = {f: (folder / f).stat().st_size for f in presets.PRESET_FILES}
        rows[-1]["bytes"] = size
        mib = size[presets.WEIGHTS_FILE] / 2 ** 20
        rows.append(measure(lambda: presets.sha256_file(folder / presets.WEIGHTS_FILE), repeats=repeats, warmup=1,
                            items=mib, name="sha256 of model.weights.h5 (items = MiB)", model=name))
        c = int(model.crop_size)
        x = np.random.default_rng(0).uniform(0, 255, (2, c, c, 3)).astype("float32")
        ref = np.asarray(model.score(x))
        loaded = [None]  # only the latest model is kept (a full-size HCL is large)

        def load_local():
            loaded[-1] = None
            loaded[-1] = presets.from_preset(str(folder))

        rows.append(measure(load_local, repeats=repeats, warmup=0,
                            name="from_preset (local folder: verify + build + load)", model=name))
        rows[-1]["same_scores"] = bool(np.array_equal(np.asarray(loaded[-1].score(x)), ref))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root / "serve")))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
        try:
            def download():
                cache = root / "cache"
                shutil.rmtree(cache, ignore_errors=True)
                presets.fetch_preset(url, cache=cache)

            rows.append(measure(download, repeats=repeats, warmup=0, model=name,
                                name="fetch_preset (127.0.0.1 HTTP into an empty cache: download + SHA-256)"))
            rows.append(measure(lambda: presets.fetch_preset(url, cache=root / "cache"), repeats=repeats, warmup=0,
                                model=name, name="fetch_preset (cached: SHA-256 only)"))
        finally:
            server.shutdown()
            server.server_close()
    return rows


def _model_main(name: str, quick: bool, out: str) -> None:
    Path(out).write_text(json.dumps(bench_model(name, quick), default=str))


def main(quick: bool = False) -> dict:
    rows = [bench_listing(cached=0, repeats=3 if quick else 10), bench_listing(cached=50, repeats=3 if quick else 10)]
    for name in (QUICK_MODELS if quick else FULL_MODELS):
        rows += run_model_process("bench.presets", name, quick)  # one process per model (memory back to the OS)
    return write_results("presets", rows, quick=quick)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="Preset benchmark (all models, or one with --model).")
    p.add_argument("--model", help="one model name (e.g. reqa); with --out, the child mode main() uses")
    p.add_argument("--out", help="where --model writes its rows (JSON)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the machinery, numbers mean nothing")
    a = p.parse_args()
    if a.model:
        _model_main(a.model, a.quick, a.out or f"presets_{a.model}.json")
    else:
        print(json.dumps(main(quick=a.quick), indent=2, default=str))
