"""Roofline: this machine's peak matmul GFLOP/s (fp32, bf16) in TensorFlow, and each backbone's achieved fraction of it.

- Peak: `tf.linalg.matmul` of two NxN matrices (N = 2048 and 4096, the best is kept) inside `tf.function`, 2 N^3 FLOPs a call,
  fp32 and bf16 operands (oneDNN GEMM; bf16 uses AVX512-BF16 / AMX where present), median of repeated calls after warm-up,
  TF's default thread pools (all CPUs).
- FLOPs per image of each model: TF's profiler (`float_operation`) on the frozen inference graph of our network at 224x224
  (convolutions and matmuls, 2 FLOPs per multiply-add), cross-checked with an analytic count of conv/linear multiply-adds on the
  PyTorch peer when torch is installed. A training step counts 3x the forward FLOPs (backward = input grads + weight grads).
- Achieved: from bench/results/backbones.json of the same `make bench` run (it runs before this area): images/s x FLOPs per
  image, for ours and the PyTorch peer, divided by the peak of the precision each side ran in.
"""

from __future__ import annotations

import json
import time

from bench.common import RESULTS, measure, write_results


def peak_matmul(dtype: str, sizes=(2048, 4096), repeats: int = 5) -> dict:
    """Best GFLOP/s of an NxN matmul over `sizes` (median of `repeats` calls after warm-up)."""
    import tensorflow as tf

    best = None
    for n in sizes:
        a = tf.random.uniform((n, n), dtype=tf.float32)
        b = tf.random.uniform((n, n), dtype=tf.float32)
        if dtype == "bf16":
            a, b = tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16)
        mm = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.linalg.matmul(x, y)[:1, :1], tf.float32)))
        r = measure(lambda: mm(a, b).numpy(), repeats=repeats, warmup=2, items=1, name=f"matmul-{dtype}-{n}",
                    dtype=dtype, n=n)
        r["gflops"] = 2 * n ** 3 / r["median_s"] / 1e9
        r["gflops_max"] = 2 * n ** 3 / r["min_s"] / 1e9
        if best is None or r["gflops"] > best["gflops"]:
            best = r
    return best


def model_flops(depth: int, size: int = 224) -> dict:
    """Forward FLOPs per image of our ResNet backbone + GAP + Dense(1) (TF profiler) and the analytic count on the peer."""
    import keras
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from keras_iqa.backbones import resnet_features

    feats = resnet_features(depth)
    inp = keras.Input((size, size, 3))
    model = keras.Model(inp, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(feats(inp)["stage4"])))
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec([1, size, size, 3]))
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf.compat.v1.profiler.profile(graph=convert_variables_to_constants_v2(fn).graph, options=opts)
    out = {"model": f"ResNet-{depth}", "size": size, "forward_flops_tf_profiler": int(prof.total_float_ops)}
    try:
        out["forward_flops_analytic_peer"] = analytic_flops_torch(depth, size)
    except ImportError:
        pass
    return out


def analytic_flops_torch(depth: int, size: int = 224) -> int:
    """2 x multiply-adds of every Conv2d / Linear of the PyTorch peer at `size` (forward hooks on one pass)."""
    import torch

    from bench.peers.resnet_torch import resnet

    net, total = resnet(depth, 1).eval(), [0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total[0] += 2 * out.numel() * k
        elif isinstance(mod, torch.nn.Linear):
            total[0] += 2 * mod.in_features * mod.out_features * out.shape[0]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.inference_mode():
        net(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total[0]


def _precision(config: str) -> str:
    return "bf16" if config and config.startswith("bf16") else "fp32"


def achieved(backbones: dict, flops: dict, peaks: dict) -> list:
    """Achieved GFLOP/s and fraction of peak for each row of the backbone comparison."""
    rows = []
    for r in backbones.get("results", []):
        if "error" in r or r.get("size") != 224:
            continue
        fwd = flops.get(r["model"], {}).get("forward_flops_tf_profiler")
        if not fwd:
            continue
        for side, value, cfg in (("ours", r["ours"], r["ours_config"]), ("pytorch", r["torch"], r["torch_config"])):
            if r["mode"] == "train":
                gflops = value * 3 * fwd / 1e9  # value: images/s
            else:
                gflops = r["batch"] * fwd / (value / 1000) / 1e9  # value: ms per batch
            prec = _precision(cfg)
            rows.append({"name": f"{r['name']}-{side}", "model": r["model"], "mode": r["mode"], "batch": r["batch"],
                         "side": side, "config": cfg, "achieved_gflops": gflops, "peak_gflops": peaks[prec],
                         "fraction_of_peak": gflops / peaks[prec], "peak_precision": prec})
    return rows


def table(peaks: dict, flops: dict, rows: list) -> str:
    out = [f"Peak matmul: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s (TensorFlow, all CPUs). "
           + "Forward FLOPs per 224x224 image: " + ", ".join(
               f"{k} {v['forward_flops_tf_profiler'] / 1e9:.2f} G" for k, v in flops.items()) + ".", "",
           "| model | measure | batch | side (config) | achieved GFLOP/s | fraction of peak |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['mode']} | {r['batch']} | {r['side']} ({r['config']}) | {r['achieved_gflops']:.1f} | "
                   f"{100 * r['fraction_of_peak']:.1f}% of {r['peak_precision']} |")
    return "\n".join(out)


def main(quick: bool = False) -> dict:
    """Peak matmul (quick: small matrices), FLOPs of ResNet-18/50, achieved fractions from backbones.json if present."""
    sizes, repeats = ((512,), 2) if quick else ((2048, 4096), 5)
    entries, peaks = [], {}
    for dtype in ("fp32", "bf16"):
        r = peak_matmul(dtype, sizes, repeats)
        peaks[dtype] = r["gflops"]
        entries.append(r)
    flops = {}
    for depth in (18, 50):
        f = model_flops(depth)
        flops[f["model"]] = f
        entries.append({"name": f"flops-resnet{depth}", **f})
    source = RESULTS / "backbones.json"
    extra = {"peaks_gflops": peaks, "flops": flops}
    rows = []
    if source.exists():
        bb = json.loads(source.read_text())
        rows = achieved(bb, flops, peaks)
        extra["backbones_source"] = {"time": bb.get("time"), "quick": bb.get("quick")}
    entries += rows
    extra["table_md"] = table(peaks, flops, rows) + ("" if rows else "\n\n(no 224x224 backbone results to compare: run the "
                                                        "backbones area first, e.g. `python -m bench.run --only backbones,roofline`)")
    return write_results("roofline", entries, quick=quick, measured_at=time.strftime("%H:%M:%S"), **extra)


if __name__ == "__main__":
    import sys

    print(json.dumps(main(quick="--quick" in sys.argv), indent=2, default=str)[-2500:])
