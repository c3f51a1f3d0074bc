"""HCL's stage hand-off: each curriculum starts from the previous one's `model.keras` (docs/methods/hcl.md, Stages and
hand-off).

`load_stage_model` opens a stage's run directory (or `.keras` file), `transfer_weights` copies the parts two stage models
share (the restoration network; the subnetworks and CQAC when K matches), `model_cfg_from` makes a stage's model config
follow the previous stage's architecture so the weights fit; `init_synthetic` / `init_finetune` build the model of
curriculum 2 / 3 (from a `keras_iqa.tasks.hcl.HCLTrainConfig`, its ablations applied) and load what the previous stage
hands over.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import keras

from data_pipeline.layout import HCL_STAGE_DIRS, find_model_file
from keras_iqa.models.hcl import HCLModelConfig, RestorationNet, build_synthetic, build_hcl

__all__ = ["STAGES", "STAGE_DIRS", "init_finetune", "init_synthetic", "load_stage_model", "model_cfg_from",
           "transfer_weights"]

STAGES = ("restoration", "synthetic", "finetune")
STAGE_DIRS = HCL_STAGE_DIRS  # <out>/1-restoration, 2-synthetic, 3-finetune (the names live in data_pipeline.layout)


def load_stage_model(init):
    """A stage's model from a run directory (its `model.keras`), a `.keras` file, or a model object."""
    if init is None or isinstance(init, keras.Model):
        return init
    path = Path(init)
    if not path.is_file():  # a run directory (its model.keras), else a clear error
        try:
            path = find_model_file(init)
        except FileNotFoundError as e:
            raise type(e)(f"--init: {e}; give the run directory of the previous HCL stage (it holds model.keras once "
                          "that stage finished) or a .keras file") from None
    return keras.models.load_model(path, compile=False, safe_mode=True)


def transfer_weights(src, dst) -> list:
    """Copies the parts `src` and `dst` share (restoration network always; subnetworks and CQAC when K matches) and returns
    their names. Fails clearly when the architectures differ."""
    def part(model, name):
        if name == "restoration" and isinstance(model, RestorationNet):
            return model  # a stage-1 model is the restoration network itself
        return getattr(model, name, None)

    parts = []
    for name in ("restoration", "subnets", "cqac"):
        a, b = part(src, name), part(dst, name)
        if a is None or b is None:
            continue
        wa, wb = a.get_weights(), b.get_weights()
        if name != "restoration" and getattr(a, "num_datasets", None) != getattr(b, "num_datasets", None):
            continue
        if len(wa) != len(wb) or any(x.shape != y.shape for x, y in zip(wa, wb)):
            raise ValueError(f"cannot hand over '{name}' weights: the previous stage's architecture differs "
                             f"({len(wa)} vs {len(wb)} arrays); use the same model config (model.*) in every stage")
        b.set_weights(wa)
        parts.append(name)
    return parts


def model_cfg_from(cfg: HCLModelConfig, src) -> HCLModelConfig:
    """Model config whose restoration / head architecture follows the previous stage's model (so weights fit)."""
    changes = {}
    if src is not None:
        rc = dict(getattr(src, "restoration_config", None) or {})
        keys = ("depth", "width", "blocks", "decoder_filters", "decoder_block", "input_norm", "output", "input_skip")
        if not rc and src.__class__.__name__ == "RestorationNet":
            rc = {k: v for k, v in src.get_config().items() if k in keys}
        renamed = {"output": "restoration_output", "input_skip": "restoration_input_skip"}
        for k in keys:
            if k in rc:
                changes[renamed.get(k, k)] = tuple(rc[k]) if isinstance(rc[k], list) else rc[k]
        changes["backbone_weights"] = None  # weights come from the previous stage
        if hasattr(src, "subnets"):
            changes.update(num_datasets=src.num_datasets, cqac=src.use_cqac, subnet_units=tuple(src.subnet_units))
    return dataclasses.replace(cfg, **changes)


def init_synthetic(cfg, init=None, num_datasets: Optional[int] = None):
    """Builds `HCLSynthetic` (K = `num_datasets`) and loads the restoration network from `init` (stage-1 run, unless
    `ablation.skip_restoration`); returns (model, transferred parts)."""
    ab = cfg.ablation
    src = None if ab.skip_restoration else load_stage_model(init)
    mcfg = model_cfg_from(cfg.model, src)
    k = 1 if ab.single_head else int(num_datasets or mcfg.num_datasets)
    mcfg = dataclasses.replace(mcfg, num_datasets=k, cqac=bool(ab.cqac and cfg.model.cqac))
    model = build_synthetic(mcfg, lambda_corr=cfg.synthetic.lambda_corr if mcfg.cqac else 0.0)
    parts = transfer_weights(src, model)[:1] if src is not None else []  # only the restoration network from stage 1
    return model, parts


def init_finetune(cfg, init=None, score_range=None, higher_better=True):
    """Builds `HCL` and loads what `init` holds (stage-2 run: restoration + subnetworks + CQAC; stage-1 run when
    `ablation.skip_synthetic`: restoration only); returns (model, transferred parts)."""
    src = None if init is None else load_stage_model(init)
    mcfg = model_cfg_from(cfg.model, src)
    if src is None or not hasattr(src, "subnets"):
        mcfg = dataclasses.replace(mcfg, num_datasets=1 if cfg.ablation.single_head else mcfg.num_datasets,
                                   cqac=bool(cfg.ablation.cqac and mcfg.cqac))
    changes = {"test_crops": cfg.finetune.test_crops}
    if score_range is not None:
        changes.update(score_range=tuple(score_range), higher_better=bool(higher_better))
    model = build_hcl(dataclasses.replace(mcfg, **changes))
    parts = transfer_weights(src, model) if src is not None else []
    return model, parts
