"""GPU check: on whatever GPU is present, each family's full-size training images/s with and without XLA, batch-scoring
images/s through the SavedModel, and the PyTorch peers' training images/s on the same GPU; one table.

    python -m bench.gpu_check            # about 10 timed steps per row
    python -m bench.gpu_check --quick    # 3 timed steps per row: a few minutes on one H100

Writes bench/results/gpu_check.{json,md} (`--quick`: gpu_check_quick.*). Without a GPU it says so and exits 0.

- Training: `train_on_batch` at 224 px on random images and labels, random weights (`backbone_weights=None`: nothing
  downloads), in the precision `--precision auto` picks on this GPU (`keras_iqa.training.cpu.resolve_precision`), once as
  compiled by Keras and once with `jit_compile=True` (XLA). REQA: `model.compile()` (two Adam, batch 15 = 3 groups of 5);
  HCL: the fine-tune stage's compile (two Adam, batch 8); MetaIQA: Adam + MSE, batch 32 (the fine-tune step; the bi-level
  meta step is `bench/metaiqa.py`).
- Scoring: the full-size card exported in float32 (`export_savedmodel`), its `serving_default` on a batch of JPEGs (decode,
  the card's test-time crops, model): images/s.
- Peers: bench/peers' PyTorch networks (REQA `REQANet`, MetaIQA `Net`; HCL has none) trained the same way (Adam, MSE,
  autocast in the same precision, `GradScaler` for float16). Skipped with a note where torch or its CUDA is missing.

Each family and each peer runs in its own process (`bench.common.run_model_process`): TensorFlow and PyTorch never share
the GPU's memory.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import RESULTS, measure, run_model_process, write_results

FAMILIES = ("reqa", "metaiqa", "hcl")
PEERS = {"reqa": ("bench.peers.reqa_torch", "REQANet"), "metaiqa": ("bench.peers.metaiqa_torch", "Net")}
BATCH = {"reqa": 15, "metaiqa": 32, "hcl": 8}
CROP = 224
NO_GPU = "gpu_check: no GPU visible to TensorFlow (none present, CUDA_VISIBLE_DEVICES or drivers): nothing measured"


def _steps(quick: bool) -> tuple:
    """(timed steps, warm-up steps) per row."""
    return (3, 2) if quick else (10, 3)


def gpu_info() -> Optional[dict]:
    """{"name", "compute_capability"} of the first GPU TensorFlow sees, or None."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    cc = details.get("compute_capability")
    return {"name": details.get("device_name", gpus[0].name), "compute_capability": ".".join(map(str, cc)) if cc else None}


def _compile(family: str, model, b: int, rng):
    """Compiles `model` as its training does; returns labels for a batch of `b`."""
    import numpy as np

    if family == "reqa":
        model.compile()
        return np.tile(np.linspace(10, 90, 5, dtype="float32"), b // 5)
    if family == "hcl":
        from keras_iqa.training.hcl import FinetuneStageConfig, compile_finetune

        compile_finetune(model, FinetuneStageConfig())
        return 100 * rng.uniform(size=b).astype("float32")
    from keras_iqa.optimizers import FusedAdam

    model.compile(optimizer=FusedAdam(1e-4), loss="mse")
    return rng.uniform(size=b).astype("float32")


def keras_rows(family: str, quick: bool) -> list:
    """Training images/s without and with XLA, then SavedModel scoring images/s, for one full-size family."""
    from keras_iqa.training.cpu import configure_cpu

    applied = configure_cpu("auto", loss_scaling=family != "metaiqa")  # what `keras-iqa train` picks on this GPU
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_iqa
    from keras_iqa.export.samples import synthetic_images
    from keras_iqa.export.savedmodel import export_savedmodel
    from PIL import Image

    for g in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(g, True)
    repeats, warmup = _steps(quick)
    b, rng = BATCH[family], np.random.default_rng(0)
    x = rng.uniform(0, 255, (b, CROP, CROP, 3)).astype("float32")
    common = dict(family=family, framework="keras", batch=b, crop=CROP, policy=applied["policy"], kind="train")
    rows = []
    for xla in (False, True):
        keras.utils.set_random_seed(0)
        model = keras_iqa.create_model(family, backbone_weights=None)
        y = _compile(family, model, b, rng)
        model.jit_compile = xla  # explicit both ways: Keras's default "auto" is XLA on a GPU
        rows.append(measure(lambda: model.train_on_batch(x, y), repeats=repeats, warmup=warmup, items=b,
                            name=f"{family} train{' XLA' if xla else ''}", xla=bool(model.jit_compile), **common))
        del model
        keras.backend.clear_session()
        gc.collect()

    keras.mixed_precision.set_global_policy("float32")  # exports are float32
    keras.utils.set_random_seed(0)
    model = keras_iqa.create_model(family, backbone_weights=None)
    with tempfile.TemporaryDirectory() as tmp:
        sm = export_savedmodel(model, Path(tmp) / family, version=1, overwrite=True)
        serve = tf.saved_model.load(str(sm)).signatures["serving_default"]
        n = 32 if family == "metaiqa" else 8  # 25-crop families: 8 images = 200 crops per call
        jpegs = []
        for im in synthetic_images(n, size=(384, 512), seed=3):
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="JPEG", quality=90)
            jpegs.append(buf.getvalue())
        batch = tf.constant(jpegs)
        rows.append(measure(lambda: [v.numpy() for v in serve(images=batch).values()], repeats=repeats, warmup=warmup,
                            items=n, name=f"{family} SavedModel scoring", family=family, framework="keras", batch=n,
                            kind="score", policy="float32", image_size="384x512 JPEG"))
    return rows


def torch_rows(family: str, quick: bool) -> list:
    """The PyTorch peer's training images/s, in the precision the Keras family trains in on this GPU."""
    base = dict(name=f"{family} train (PyTorch peer)", family=family, framework="pytorch", kind="train")
    try:
        import torch
    except ImportError:
        return [{**base, "skipped": "torch is not installed"}]
    if not torch.cuda.is_available():
        return [{**base, "skipped": "torch sees no CUDA GPU (CPU-only build?)"}]
    import importlib

    from keras_iqa.training.cpu import resolve_precision

    precision = resolve_precision("auto", gpu=True, capability=torch.cuda.get_device_capability(),
                                  loss_scaling=family != "metaiqa")
    module, cls = PEERS[family]
    torch.manual_seed(0)
    net = getattr(importlib.import_module(module), cls)().cuda().train()
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    b = BATCH[family]
    x, y = torch.rand(b, 3, CROP, CROP, device="cuda"), torch.rand(b, device="cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.mse_loss(net(x).float().reshape(b, -1).mean(1), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        torch.cuda.synchronize()

    repeats, warmup = _steps(quick)
    return [measure(step, repeats=repeats, warmup=warmup, items=b, batch=b, crop=CROP, xla=False,
                    policy={"bf16": "autocast bfloat16", "fp16": "autocast float16 + GradScaler"}.get(precision, "float32"),
                    torch=torch.__version__, **base)]


def table(rows: list, gpu: dict) -> str:
    """The markdown table: one line per family, images/s per column."""
    def cell(family, name):
        r = next((r for r in rows if r.get("family") == family and r.get("name") == name), None)
        if r is None:
            return "-"
        if r.get("items_per_s"):
            return f"{r['items_per_s']:.1f}"
        return r.get("skipped") or (r.get("error") or "error").strip().splitlines()[-1][:60]

    lines = [f"GPU: {gpu['name']} (compute capability {gpu['compute_capability']}); images/s, 224 px, random weights.", "",
             "| family | precision | train | train XLA | SavedModel scoring | PyTorch peer train |", "|---|---|---|---|---|---|"]
    for f in FAMILIES:
        policy = next((r.get("policy") for r in rows if r.get("family") == f and r.get("name") == f"{f} train"), "-")
        peer = cell(f, f"{f} train (PyTorch peer)") if f in PEERS else "no peer in bench/peers"
        lines.append(f"| {f} (batch {BATCH[f]}) | {policy} | {cell(f, f'{f} train')} | {cell(f, f'{f} train XLA')} | "
                     f"{cell(f, f'{f} SavedModel scoring')} | {peer} |")
    return "\n".join(lines)


def main(quick: bool = False) -> dict:
    """Measures every family and peer, each in its own process; writes the JSON and the markdown table."""
    gpu = gpu_info()
    if gpu is None:
        print(NO_GPU)
        return {"area": "gpu_check", "results": [], "table_md": NO_GPU}
    rows = []
    for family in FAMILIES:
        for row in run_model_process("bench.gpu_check", family, quick=quick, timeout=1800):
            rows.append({"family": family, **row})
        if family in PEERS:
            for row in run_model_process("bench.gpu_check", f"torch-{family}", quick=quick, timeout=900):
                rows.append({"family": family, "name": f"{family} train (PyTorch peer)", **row})
    md = table(rows, gpu)
    doc = write_results("gpu_check", rows, quick=quick, gpu=gpu, table_md=md)
    (RESULTS / f"gpu_check{'_quick' if quick else ''}.md").write_text(md + "\n")
    print(md)
    return doc


def _cli(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 timed steps per row (default 10)")
    p.add_argument("--model", help=argparse.SUPPRESS)  # one family (or torch-FAMILY) in this process, for main()
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.model:
        main(quick=args.quick)
        return 0
    name = args.model
    rows = torch_rows(name[len("torch-"):], args.quick) if name.startswith("torch-") else keras_rows(name, args.quick)
    Path(args.out).write_text(json.dumps(rows, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
