"""CPU training defaults: precision policy, thread pools and oneDNN, applied once before TensorFlow builds anything.

`configure_cpu()` is what `keras-iqa train` calls on a machine without a GPU (settings chosen with `bench/backbones.py`, see
README, Benchmarks):

- precision: "auto" picks `mixed_bfloat16` (bf16 compute, fp32 variables; no loss scaling needed, bf16 has fp32's exponent
  range) when the CPU has native bf16 dot products (`avx512_bf16` or `amx_bf16` in /proc/cpuinfo), else fp32. "fp32" and
  "bf16" force one. On a GPU, "auto" picks by its compute capability: `mixed_bfloat16` from 8.0 (Ampere and later have bf16
  tensor cores), `mixed_float16` before (float16 tensor cores; Keras wraps the optimizers in `LossScaleOptimizer`, and
  `keras_iqa.optimizers.apply_optimizer_groups` scales the backward pass of the two-optimizer step). A training loop that
  applies gradients without loss scaling (MetaIQA's bi-level loop) passes `loss_scaling=False`: fp32 there before 8.0.
- threads: intra-op pool = `threads` (default: the CPUs this process may use), inter-op pool = 2: two independent ops (e.g.
  a convolution's input and filter gradients) may run at once and fill each other's idle threads. Measured on 2 cores
  (README, Benchmarks): inter-op 2 vs 1 gave +8 % (ResNet-18) and +10 % (ResNet-50) bf16 training images/s at batch 16
  and -6 % ResNet-18 batch-1 latency; 4 was no better than 2.
- oneDNN: `TF_ENABLE_ONEDNN_OPTS=1` (the default of TF's x86 Linux builds; set explicitly so that a stray `=0` in the
  environment is reported). It only acts if set before TensorFlow is imported, so the CLI calls this first thing in `run()`.

Example:
>>> from keras_iqa.training.cpu import configure_cpu, resolve_precision
>>> resolve_precision("auto", flags={"avx512_bf16"}), resolve_precision("auto", flags=set())  # this CPU: flags=None
('bf16', 'fp32')
>>> resolve_precision("auto", gpu=True, capability=(7, 0)), resolve_precision("auto", gpu=True, capability=(9, 0))
('fp16', 'bf16')
>>> applied = configure_cpu("fp32")      # before building models; "auto" picks by the CPU flags as above
>>> applied["policy"], applied["precision"]
('float32', 'fp32')
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Optional

PRECISIONS = ("auto", "fp32", "bf16")
_POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}  # "fp16": only "auto" on a GPU


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where it cannot be read, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_native_bf16(flags: Optional[set] = None) -> bool:
    """True when the CPU computes bf16 dot products natively (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def available_cpus() -> int:
    """CPUs this process may run on (respects taskset / cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gpu_capability(gpu=None) -> Optional[tuple]:
    """(major, minor) compute capability of `gpu` (a `tf.config` physical device; default: the first GPU), or None."""
    import tensorflow as tf

    if gpu is None:
        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        gpu = gpus[0]
    cc = tf.config.experimental.get_device_details(gpu).get("compute_capability")
    return tuple(int(x) for x in cc) if cc else None


def resolve_precision(precision: str = "auto", flags: Optional[set] = None, gpu: bool = False,
                      capability: Optional[tuple] = None, loss_scaling: bool = True) -> str:
    """"fp32", "bf16" or "fp16" for a requested precision. "auto": on a GPU with a known compute `capability` (major, minor),
    bf16 from 8.0, else fp16 (float16 needs loss scaling: fp32 when the training loop has none, `loss_scaling=False`); on
    a GPU of unknown capability fp32; on CPU bf16 where it has native bf16 dot products, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if gpu:
        if capability is None:
            return "fp32"
        if tuple(capability) >= (8, 0):
            return "bf16"
        return "fp16" if loss_scaling else "fp32"
    return "bf16" if has_native_bf16(flags) else "fp32"


def configure_cpu(precision: str = "auto", threads: Optional[int] = None, inter_op_threads: Optional[int] = None,
                  onednn: bool = True, verbose: bool = False, loss_scaling: bool = True) -> dict:
    """Applies the CPU defaults; returns what was applied (store it in the run's config.json).

    Args:
        precision: "auto" | "fp32" | "bf16" (Keras dtype policy "float32" / "mixed_bfloat16").
        threads: intra-op threads (default: available CPUs).
        inter_op_threads: inter-op threads (default 2).
        onednn: set TF_ENABLE_ONEDNN_OPTS=1 (only effective before TensorFlow is imported).
        verbose: print the applied settings.
        loss_scaling: the training loop applies Keras's loss scaling (False: "auto" never picks float16 on a GPU).

    Thread pools can only be sized before TensorFlow's runtime starts; if it already has, the pools are left as they are and
    `applied["threads_applied"]` is False (a warning says so). The dtype policy is global and applies to models built after.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"configure_cpu: precision must be one of {PRECISIONS}, got {precision!r}")
    if threads is not None and int(threads) < 1:
        raise ValueError(f"configure_cpu: threads must be >= 1, got {threads!r}")
    ncpu = available_cpus()
    applied = {"cpus": ncpu, "native_bf16": has_native_bf16()}
    tf_loaded = "tensorflow" in sys.modules
    if onednn:
        if tf_loaded and os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
            warnings.warn("TF_ENABLE_ONEDNN_OPTS=0 was set before TensorFlow was imported: oneDNN stays off for this process")
        elif not tf_loaded:
            os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    applied["onednn_env"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default(1 on x86 Linux)")

    import keras  # late on purpose: TensorFlow reads TF_ENABLE_ONEDNN_OPTS (set above) when it is first imported
    import tensorflow as tf

    gpu = bool(tf.config.list_physical_devices("GPU"))
    applied["gpu"] = gpu
    capability = gpu_capability() if gpu else None
    if gpu:
        applied["gpu_capability"] = ".".join(map(str, capability)) if capability else "unknown"
    resolved = resolve_precision(precision, gpu=gpu, capability=capability, loss_scaling=loss_scaling)
    keras.mixed_precision.set_global_policy(_POLICY[resolved])
    applied["policy"] = _POLICY[resolved]
    applied["precision"] = resolved

    intra = int(threads) if threads else ncpu
    inter = int(inter_op_threads) if inter_op_threads else 2
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
        applied["threads_applied"] = True
    except RuntimeError:  # the runtime already started: pools are fixed for this process
        applied["threads_applied"] = (tf.config.threading.get_intra_op_parallelism_threads() in (0, intra)
                                      and tf.config.threading.get_inter_op_parallelism_threads() in (0, inter))
        if not applied["threads_applied"]:
            warnings.warn("configure_cpu: TensorFlow's runtime already started; thread pools left unchanged. "
                          "Call configure_cpu() before building models or running ops.")
    applied["intra_op_threads"] = intra
    applied["inter_op_threads"] = inter
    if verbose:
        print("CPU settings: " + ", ".join(f"{k}={v}" for k, v in applied.items()))
    return applied


def add_cpu_args(parser) -> None:
    """Adds `--cpu-precision` and `--threads` to an argparse parser (the train commands use it)."""
    parser.add_argument("--cpu-precision", choices=PRECISIONS, default="auto",
                        help="compute precision on CPU: auto = mixed_bfloat16 on CPUs with AVX512-BF16/AMX, else fp32 "
                             "(default: %(default)s; on a GPU auto = mixed_bfloat16 from compute capability 8.0, "
                             "mixed_float16 with loss scaling before)")
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow intra-op threads (default: all CPUs this process may use)")


def configure_from_args(args, verbose: bool = True) -> dict:
    """`configure_cpu` from the arguments `add_cpu_args` added (missing attributes mean the defaults)."""
    return configure_cpu(getattr(args, "cpu_precision", "auto") or "auto", getattr(args, "threads", None), verbose=verbose)
