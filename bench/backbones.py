"""Our ResNet-18 / ResNet-50 backbones (keras-hub, via `keras_iqa.backbones.resnet_features`) against a PyTorch reference.

What is measured (224x224 inputs, random weights, random data resident in memory, same work on both sides):
- training step images/s: backbone + global average pooling + Dense(1), MSE loss, Adam (ours: `FusedAdam`, TF's fused
  kernel; PyTorch: `torch.optim.Adam`, its default multi-tensor implementation), batch 16 and 32;
- batch-1 inference latency (ms): the same network in inference mode.

How (see README, Benchmarks):
1. Each side runs in its OWN process (`python -m bench.backbones --worker SPEC`): TensorFlow and PyTorch in one process fight
   over the cores with two thread pools, and TF settings (oneDNN, thread pools) must be fixed before TF starts. A worker builds
   its model, warms up (graph tracing / XLA compilation / oneDNN primitive caches), then blocks on stdin; the parent sends
   `run N` and reads back the N step times. An idle worker sleeps on stdin, so only one side computes at any time.
2. Best configuration per side, per model and mode: each candidate (TF: fp32 / mixed_bfloat16, graph / XLA jit_compile;
   PyTorch: fp32 / bf16 autocast, contiguous / channels_last) runs a short block; the fastest is kept.
3. Interleaved comparison: rounds alternate TF and PyTorch blocks (the order flips every round), so slow drifts of a shared
   machine hit both sides alike; the ratio ours/PyTorch is taken per round and reported as the median (min, max) over rounds.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

from bench.common import write_results

TF_CANDIDATES = ("fp32-graph", "bf16-graph", "fp32-xla", "bf16-xla")
# XLA on CPU compiles convolutions without oneDNN: its training step took 2.4x the CPU time of the graph step (ResNet-18,
# bf16, batch 16), so for training only its bf16 variant is tried; inference tries all four.
TF_TRAIN_CANDIDATES = ("fp32-graph", "bf16-graph", "bf16-xla")
TORCH_CANDIDATES = ("fp32", "fp32-channels_last", "bf16", "bf16-channels_last")
# inference also tries frozen graphs on both sides (TF: variables -> constants; PyTorch: torch.jit.trace + freeze), and on
# ours the frozen graph of the BN-folded copy (`fold_batch_norm`: TF's optimiser folds BN itself only in float32)
TF_INFER_CANDIDATES = TF_CANDIDATES + ("fp32-frozen", "bf16-frozen", "fp32-folded", "bf16-folded")
TORCH_INFER_CANDIDATES = TORCH_CANDIDATES + ("fp32-channels_last-frozen", "bf16-channels_last-frozen")


# ----------------------------------------------------------------------------------------------------------- worker side
def _emit(obj) -> None:
    sys.stdout.write("@@" + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _tf_worker(spec: dict):
    from keras_iqa.training.cpu import configure_cpu

    precision, variant = spec["config"].split("-", 1)
    applied = configure_cpu(precision, threads=spec.get("threads"))
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_iqa.backbones import resnet_features

    size, batch = spec["size"], spec["batch"]
    feats = resnet_features(spec["depth"], width=spec.get("width", 1.0), blocks=spec.get("blocks"))
    inp = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(feats(inp)["stage4"])
    out = keras.layers.Dense(1, dtype="float32")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    xs = tf.constant(rng.uniform(0, 1, (batch, size, size, 3)).astype("float32"))
    ys = tf.constant(rng.uniform(0, 1, (batch,)).astype("float32"))
    jit = variant == "xla"
    if spec["mode"] == "train":
        from keras_iqa.training.optimizers import FusedAdam  # what our trainers use (one fused kernel per variable)

        opt = FusedAdam(1e-4)
        opt.build(model.trainable_variables)

        @tf.function(jit_compile=jit)
        def step(x, y):
            with tf.GradientTape() as tape:
                pred = model(x, training=True)
                loss = tf.reduce_mean(tf.square(tf.cast(pred[:, 0], tf.float32) - y))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        def run_one():
            step(xs, ys).numpy()
    elif variant in ("frozen", "folded"):  # variables -> constants (fp32: grappler folds BN into the convolutions)
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        from keras_iqa.layers import fold_batch_norm

        if variant == "folded":  # BN folded into the convolutions by us: conv + bias (+ add) fuse in bf16 too
            model = fold_batch_norm(model)

        fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec(xs.shape, tf.float32))
        infer = convert_variables_to_constants_v2(fn)

        def run_one():
            infer(xs)[0].numpy()
    else:
        infer = tf.function(lambda x: model(x, training=False), jit_compile=jit)

        def run_one():
            infer(xs).numpy()

    return run_one, {"policy": applied["policy"], "intra_op_threads": applied["intra_op_threads"],
                     "inter_op_threads": applied["inter_op_threads"], "jit_compile": jit,
                     "params": int(model.count_params())}


def _torch_worker(spec: dict):
    import torch

    from bench.peers.resnet_torch import count_params, resnet

    torch.set_num_threads(int(spec.get("threads") or _cpus()))
    torch.manual_seed(0)
    config = spec["config"]
    bf16 = config.startswith("bf16")
    fmt = torch.channels_last if "channels_last" in config else torch.contiguous_format
    size, batch = spec["size"], spec["batch"]
    model = resnet(spec["depth"], 1, width=spec.get("width", 1.0), blocks=spec.get("blocks")).to(memory_format=fmt)
    xs = torch.rand(batch, 3, size, size).contiguous(memory_format=fmt)
    ys = torch.rand(batch)
    if spec["mode"] == "train":
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def run_one():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                pred = model(xs)
            loss = torch.mean((pred[:, 0].float() - ys) ** 2)
            loss.backward()
            opt.step()
            loss.item()
    else:
        model.eval()
        if config.endswith("frozen"):  # TorchScript trace + freeze: folds BN into the convolutions (oneDNN fusions)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model = torch.jit.freeze(torch.jit.trace(model, xs, check_trace=False))

        def run_one():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(xs).float().sum().item()

    return run_one, {"threads": torch.get_num_threads(), "bf16_autocast": bf16,
                     "channels_last": fmt is torch.channels_last, "params": count_params(model),
                     "onednn": bool(torch.backends.mkldnn.is_available())}


def worker_main(spec: dict) -> None:
    """Builds one side, warms up, then serves `run N` / `quit` commands on stdin (results as `@@{json}` lines)."""
    t0 = time.perf_counter()
    run_one, info = (_tf_worker if spec["framework"] == "tf" else _torch_worker)(spec)
    build_s = time.perf_counter() - t0
    warm = []
    for _ in range(int(spec.get("warmup", 2))):
        t = time.perf_counter()
        run_one()
        warm.append(time.perf_counter() - t)
    _emit({"ready": True, "build_s": build_s, "warmup_s": warm, "info": info})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        times, c0 = [], time.process_time()
        for _ in range(int(cmd[1])):
            t = time.perf_counter()
            run_one()
            times.append(time.perf_counter() - t)
        _emit({"times": times, "cpu_s": time.process_time() - c0})
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except Exception:
        rss = None
    _emit({"bye": True, "peak_rss_mib": rss})


# ----------------------------------------------------------------------------------------------------------- parent side
def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Worker:
    """A benchmark side in its own process (see module docstring)."""

    def __init__(self, spec: dict, timeout: float = 1800):
        self.spec = spec
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                   TF_ENABLE_ONEDNN_OPTS=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"), PYTHONUNBUFFERED="1")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would block the worker
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.backbones", "--worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, env=env, cwd=root)
        self.ready = self._read()
        self.step_s = statistics.median(self.ready["warmup_s"][-1:]) if self.ready["warmup_s"] else None

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        self.proc.wait(timeout=60)
        self.stderr.seek(0)
        err = self.stderr.read()[-2000:]
        raise RuntimeError(f"benchmark worker {self.spec['framework']}/{self.spec['config']} died: {err}")

    def run(self, steps: int) -> list:
        """Step times (wall seconds) of `steps` steps; `self.last_cpu_s` holds the process CPU seconds they took."""
        self.proc.stdin.write(f"run {int(steps)}\n")
        self.proc.stdin.flush()
        msg = self._read()
        self.last_cpu_s = msg["cpu_s"]
        return msg["times"]

    def close(self) -> Optional[float]:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            bye = self._read()
            self.proc.wait(timeout=60)
            return bye.get("peak_rss_mib")
        except Exception:
            self.proc.kill()
            return None


def _steps_for(worker: Worker, block_s: float, max_steps: int = 50) -> int:
    """Steps in one timed block: enough for about `block_s` seconds."""
    if not worker.step_s:
        return 1
    return max(1, min(max_steps, math.ceil(block_s / worker.step_s)))


def _rate(times: list, batch: int, mode: str) -> float:
    """images/s (train) or ms per batch-1 call (infer) of one block, from its median step time."""
    med = statistics.median(times)
    return batch / med if mode == "train" else 1000 * med


def _select(framework: str, candidates, base: dict, block_s: float, log) -> tuple:
    """Runs each candidate for one block; returns (best live Worker, per-candidate results)."""
    best, best_val, results = None, None, []
    for cfg in candidates:
        spec = dict(base, framework=framework, config=cfg)
        try:
            w = Worker(spec)
            times = w.run(_steps_for(w, block_s))
        except Exception as e:  # a candidate that fails (e.g. XLA unsupported op) is recorded, not fatal
            results.append({"config": cfg, "error": f"{type(e).__name__}: {str(e)[-300:]}"})
            log(f"  {framework} {cfg}: FAILED {e}")
            continue
        val = _rate([min(times)], base["batch"], base["mode"])  # best step: least sensitive to other processes
        better = best_val is None or (val > best_val if base["mode"] == "train" else val < best_val)
        results.append({"config": cfg, "value": val, "build_s": w.ready["build_s"], "info": w.ready["info"]})
        log(f"  {framework} {cfg}: {val:.2f} {'img/s' if base['mode'] == 'train' else 'ms'}")
        if better:
            if best is not None:
                best.close()
            best, best_val = w, val
        else:
            w.close()
    if best is None:
        raise RuntimeError(f"no {framework} configuration ran: {results}")
    return best, results


def compare(depth: int, mode: str, batch: int, size: int = 224, rounds: int = 5, block_s: float = 5.0,
            tf_candidates=None, torch_candidates=None, width: float = 1.0, blocks=None,
            threads: Optional[int] = None, log=print) -> dict:
    """Best TF vs best PyTorch configuration for one (model, mode, batch), measured in interleaved rounds."""
    if tf_candidates is None:
        tf_candidates = TF_TRAIN_CANDIDATES if mode == "train" else TF_INFER_CANDIDATES
    if torch_candidates is None:
        torch_candidates = TORCH_CANDIDATES if mode == "train" else TORCH_INFER_CANDIDATES
    base = dict(depth=depth, mode=mode, batch=batch, size=size, width=width, blocks=blocks,
                threads=threads or _cpus(), warmup=2 if mode == "train" else 5)
    log(f"ResNet-{depth} {mode} batch {batch} at {size}px: choosing configurations")
    tfw, tf_sel = _select("tf", tf_candidates, base, block_s / 2, log)
    thw, th_sel = _select("torch", torch_candidates, base, block_s / 2, log)
    ours, peer, ratios, cpu = [], [], [], {"tf": [], "torch": []}
    try:
        for r in range(rounds):
            pair = [(tfw, ours, "tf"), (thw, peer, "torch")]
            for w, acc, side in (pair if r % 2 == 0 else pair[::-1]):
                times = w.run(_steps_for(w, block_s))
                acc.append(_rate(times, batch, mode))
                # CPU seconds per image: robust to other processes on a shared machine (they take cores, not CPU time)
                cpu[side].append(w.last_cpu_s / (len(times) * batch))
            ratios.append(ours[-1] / peer[-1])
    finally:
        rss_tf, rss_torch = tfw.close(), thw.close()
    unit = "images/s" if mode == "train" else "ms"
    row = {
        "name": f"resnet{depth}-{mode}-b{batch}", "model": f"ResNet-{depth}", "mode": mode, "batch": batch, "size": size,
        "unit": unit, "ours_config": tfw.spec["config"], "torch_config": thw.spec["config"],
        "ours": statistics.median(ours), "ours_min": min(ours), "ours_max": max(ours),
        "torch": statistics.median(peer), "torch_min": min(peer), "torch_max": max(peer),
        "ratio_ours_over_torch": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
"cpu_ms_per_image": {k: 1000 * statistics.median(v) for k, v in cpu.items()},
        "cpu_ratio_ours_over_torch": statistics.median(
            (b / a if mode == "train" else a / b) for a, b in zip(cpu["tf"], cpu["torch"])),
        "rounds": rounds, "target": ">= 1.1" if mode == "train" else "<= 1.0",
        "ours_info": tfw.ready["info"], "torch_info": thw.ready["info"],
        "peak_rss_mib": {"tf": rss_tf, "torch": rss_torch}, "selection": {"tf": tf_sel, "torch": th_sel},
    }
    row["target_met"] = row["ratio_ours_over_torch"] >= 1.1 if mode == "train" else row["ratio_ours_over_torch"] <= 1.0
    # common.measure-compatible keys, so generic tables can show this entry too
    if mode == "train":
        row.update(items_per_s=row["ours"], ms_per_item=1000 / row["ours"])
    else:
        row.update(items_per_s=1000 / row["ours"], ms_per_item=row["ours"])
    log(f"  -> ours {row['ours']:.2f} {unit} ({row['ours_config']}), torch {row['torch']:.2f} {unit} "
        f"({row['torch_config']}), ratio {row['ratio_ours_over_torch']:.3f} [{row['ratio_min']:.3f}, {row['ratio_max']:.3f}], "
        f"CPU-time ratio {row['cpu_ratio_ours_over_torch']:.3f}")
    return row


def table(rows: list) -> str:
    """Markdown table of the comparisons."""
    out = ["| model | measure | batch | ours (config) | PyTorch (config) | ours/PyTorch median [min, max] | CPU-time ratio | target |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r.get('model', '?')} | {r.get('mode', '?')} | {r.get('batch', '?')} | failed: {r['error'][:80]} | | | | |")
            continue
        what = "train images/s" if r["mode"] == "train" else "batch-1 latency ms"
        met = "met" if r["target_met"] else "NOT met"
        out.append(f"| {r['model']} | {what} | {r['batch']} | {r['ours']:.2f} ({r['ours_config']}) | "
                   f"{r['torch']:.2f} ({r['torch_config']}) | {r['ratio_ours_over_torch']:.3f} "
                   f"[{r['ratio_min']:.3f}, {r['ratio_max']:.3f}] | {r['cpu_ratio_ours_over_torch']:.3f} | {r['target']}: {met} |")
    return "\n".join(out)


def main(quick: bool = False) -> dict:
    """Full run: ResNet-50 and ResNet-18, training at batch 16 and 32, batch-1 latency, 224 px, 5 interleaved rounds.

    quick=True is a smoke pass of the machinery (tiny ResNet-18 at 64 px, 2 candidates per side, 2 rounds): its numbers mean nothing.
    """
    if quick:
        cases = [(18, "train", 4), (18, "infer", 1)]
        kw = dict(size=64, rounds=2, block_s=0.5, width=0.125, blocks=(1, 1, 1, 1),
                  torch_candidates=("fp32", "bf16-channels_last"))
        quick_tf = {"train": ("fp32-graph", "bf16-graph"), "infer": ("bf16-graph", "bf16-folded")}
    else:
        cases = [(d, m, b) for d in (50, 18) for m, b in (("train", 16), ("train", 32), ("infer", 1))]
        kw = dict(size=224, rounds=5, block_s=5.0)
    rows = []
    for depth, mode, batch in cases:
        try:
            rows.append(compare(depth, mode, batch, tf_candidates=quick_tf[mode] if quick else None, **kw))
        except Exception as e:
            rows.append({"name": f"resnet{depth}-{mode}-b{batch}", "model": f"ResNet-{depth}", "mode": mode,
                         "batch": batch, "error": f"{type(e).__name__}: {e}"[-1000:]})
    return write_results("backbones", rows, quick=quick, table_md=table(rows),
                         method="separate processes per side, best configuration per side, interleaved rounds")


def latency_ab(rounds: int = 9, log=print) -> dict:
    """Batch-1 latency of our frozen bf16 graph with and without `fold_batch_norm`, each against PyTorch's best frozen /
    eager bf16 channels-last configuration, in interleaved rounds (`python -m bench.backbones --latency-ab`).

    The full run picks one TF candidate from a single short block; this runs both folded and unfolded through all rounds,
    so the effect of the fold is measured against the same peer rather than inferred from a selection.
    """
    rows = []
    for depth in (18, 50):
        for tf_cfg in ("bf16-frozen", "bf16-folded"):
            rows.append(compare(depth, "infer", 1, rounds=rounds, tf_candidates=(tf_cfg,),
                                torch_candidates=("bf16-channels_last", "bf16-channels_last-frozen"), log=log))
    return write_results("backbones_latency_ab", rows, table_md=table(rows),
                         method="one TF configuration per row vs PyTorch's best of two, interleaved rounds")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker_main(json.loads(sys.argv[2]))
    elif "--latency-ab" in sys.argv:
        print(latency_ab()["table_md"])
    else:
        print(json.dumps(main(quick="--quick" in sys.argv), indent=2, default=str)[-3000:])
