"""Benchmark: HCL (reconstruction) training-step throughput, images/s, for each curriculum's step.

1. restoration: `RestorationNet` (ResNet-50 + U-Net decoder) step on (distorted, reference / 255), L1 loss;
2. synthetic: `HCLSynthetic` step (q(x) -> K = 4 subnetworks -> CQAC, correlation-consistency loss, two optimizers);
3. finetune: `HCL` step (fused head, L1, two optimizers).

Full run: 224 px, batch 8, the full-size network; `quick=True`: the tiny network at 64 px (a smoke test of the harness).
`python -m bench.hcl [--quick]` writes bench/results/hcl.json.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from bench.common import measure, write_results


def main(quick: bool = False) -> dict:
    import keras

    from keras_iqa.models import hcl as M
    from keras_iqa.training.cpu import configure_cpu
    from keras_iqa.training.hcl import compile_finetune, compile_synthetic, FinetuneStageConfig, SyntheticStageConfig

    applied = configure_cpu("auto")
    cfg = M.HCLModelConfig(**M.TINY) if quick else M.HCLModelConfig()
    cfg = dataclasses.replace(cfg, num_datasets=2 if quick else 4)
    b, c = (4, cfg.crop_size) if quick else (8, 224)
    repeats, warmup = (2, 1) if quick else (5, 2)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(b, c, c, 3)).astype("float32")
    ref = np.clip(x + rng.normal(0, 10, size=x.shape), 0, 255).astype("float32") / 255.0
    y = rng.uniform(size=b).astype("float32")
    ids = np.zeros(b, "int32")
    common = dict(items=b, repeats=repeats, warmup=warmup, batch=b, crop=c, precision=applied.get("policy"),
                  network="tiny (width 0.125, 1 block/stage)" if quick else "full (ResNet-50 + U-Net)",
                  note="HCL (reconstruction)")
    entries = []

    rest = M.build_restoration(cfg)
    rest.compile(optimizer=keras.optimizers.Adam(1e-4), loss=M.RestorationLoss(0.0))
    entries.append(measure(lambda: rest.train_on_batch(x, ref), name="hcl restoration train step", **common))
    del rest

    syn = M.build_synthetic(cfg)
    head_lr, back_lr = compile_synthetic(syn, SyntheticStageConfig())
    syn.backbone_optimizer.learning_rate = back_lr(5)
    entries.append(measure(lambda: syn.train_on_batch((x, ids), y), name="hcl synthetic train step (K=%d, CQAC)"
                           % cfg.num_datasets, **common))
    del syn

    model = M.build_hcl(cfg)
    compile_finetune(model, FinetuneStageConfig())
    entries.append(measure(lambda: model.train_on_batch(x, 100 * y), name="hcl finetune train step", **common))
    return write_results("hcl", entries, config={"quick": quick, "cpu": applied})


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny network, a smoke run")
    a = p.parse_args()
    for e in main(quick=a.quick)["results"]:
        print(f"{e['name']}: {e['items_per_s']:.2f} img/s")
