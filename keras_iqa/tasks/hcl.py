"""HCL's training task (reconstruction): the three curricula, their configs, the weight hand-off and the ablation switches.

Stages (docs/methods/hcl.md, Stages and hand-off; each writes its own run directory with `model.keras`, which the next stage's `init` loads):

1. `restoration`: `RestorationNet` on (distorted, reference) pair batches (same crop on both), target reference / 255, L1
   (+ optional 0.2 * (1 - SSIM)), Adam 1e-4 with cosine decay. Writes `results.json` with PSNR/SSIM of restored vs reference
   and of the distorted input vs reference (the identity) on held-out pairs.
2. `synthetic`: `HCLSynthetic` on batches from K synthetic datasets tagged with their dataset id; CQAC loss; heads at Adam 1e-4,
   the restoration network frozen (learning rate 0) for `freeze_epochs`, then at 1/10 of the head rate. Writes the K x K
   head-correlation matrix per epoch (`head_correlation.json` / `.csv`).
3. `finetune`: `HCL` on an authentic dataset's train split, L1 loss, backbone 1e-5 / rest 1e-4, x0.1 at epoch 10; evaluated on
   the test split with 25 random crops per image (`results.json`, `predictions.csv`).

`run_all` chains them in `<out>/1-restoration`, `<out>/2-synthetic`, `<out>/3-finetune` with one config; `train(cfg, out,
stage=...)` runs one of them or all (`keras-iqa train hcl` is its CLI adapter). The hand-off between stages is in
`keras_iqa.tasks.hcl_handoff`, the two-optimizer schedules and the head-correlation log in `keras_iqa.training.hcl_callbacks`.

Ablations (`HCLTrainConfig.ablation`): `skip_restoration` (stages 2/3 start from `model.backbone_weights`: ImageNet or random),
`skip_synthetic` (stage 3 starts from stage 1 with fresh subnetworks), `cqac=False` (independent heads, no attention, lambda 0),
`single_head=True` (K = 1: every synthetic dataset pooled under one subnetwork).

Example:
>>> from keras_iqa.config import load_config
>>> from keras_iqa.tasks.hcl import HCLTrainConfig, run_all
>>> cfg = load_config(HCLTrainConfig, sets=["synthetic.epochs=5"])
>>> cfg.synthetic.epochs
5
>>> # needs prepared datasets (`keras-iqa prepare`) and hours of training:
>>> run_all(cfg, pairs="records/pairs", synthetic=["records/kadid10k", "records/tid2013"], data="records/clive",
...         out="runs/hcl")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from data_pipeline.input import RecordReader, multi_dataset
from data_pipeline.layout import RESULTS_FILE
from keras_iqa.caller import hint, setting
from keras_iqa.models.hcl import HCLModelConfig, RestorationLoss, restoration_l1, PIXEL_LOSSES, build_restoration
from keras_iqa.evaluation.restoration import restoration_report, to_restoration_targets  # noqa: F401
from keras_iqa.tasks.base import Task
from keras_iqa.tasks.evaluate import evaluate
from keras_iqa.tasks.hcl_handoff import (STAGE_DIRS, STAGES, init_finetune, init_synthetic, load_stage_model,  # noqa: F401
                                         model_cfg_from, transfer_weights)
from keras_iqa.training.hcl_callbacks import GroupLRSchedule, HeadCorrelationLogger, freeze_then_low_lr, step_decay
from keras_iqa.training.lr import RANDOM_INIT, resolve_lr, is_pretrained
from keras_iqa.training.optimizers import FusedAdam
from keras_iqa.training.runner import RunDir, check_global_batch, fit, get_strategy, save_json, shard_by_data

_model_cfg_from = model_cfg_from  # the name before issue 23


@dataclass
class RestorationStageConfig:
    """Curriculum 1. `epochs` is our choice (the paper's schedule is unknown); `use_ssim` adds 0.2 * (1 - SSIM);
    `pixel_loss` "l1" (spec) or "psnr" (our option, `RestorationLoss`)."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    cosine: bool = True
    use_ssim: bool = False
    ssim_weight: float = 0.2
    pixel_loss: str = "l1"
    split: str = "split_00"
    steps_per_epoch: Optional[int] = None
    holdout_batches: Optional[int] = None


@dataclass
class SyntheticStageConfig:
    """Curriculum 2: heads at `lr`; the restoration network frozen `freeze_epochs`, then at `lr * backbone_lr_factor`."""

    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-4
    freeze_epochs: int = 2
    backbone_lr_factor: float = 0.1
    lambda_corr: float = 0.1
    sampling: str = "proportional"
    split: str = "split_00"
    steps_per_epoch: Optional[int] = None


@dataclass
class FinetuneStageConfig:
    """Curriculum 3: L1 loss; backbone (restoration network) at `backbone_lr`, the rest at `lr`; both x`decay_factor` from
    `decay_epoch`. `target`: "mos" (native scale) or "normalized" ([0, 1]). `lr` / `backbone_lr` "auto": 1e-4 / 1e-5 when
    the backbone was trained (earlier curricula or ImageNet), 1e-2 / 1e-3 from random init (`keras_iqa.training.lr`)."""

    epochs: int = 20
    batch_size: int = 16
    lr: Union[str, float] = "auto"
    backbone_lr: Union[str, float] = "auto"
    decay_epoch: int = 10
    decay_factor: float = 0.1
    target: str = "mos"
    split: str = "split_00"
    test_crops: int = 25
    steps_per_epoch: Optional[int] = None
    loss: str = "l1"  # l1 (ours, the reconstruction's default) | mse (error-proportional gradients: spreads faster from random init)


FINETUNE_LOSSES = {"l1": "mean_absolute_error", "mse": "mean_squared_error"}


@dataclass
class AblationConfig:
    """Switches that remove one ingredient (see the module docstring)."""

    skip_restoration: bool = False
    skip_synthetic: bool = False
    cqac: bool = True
    single_head: bool = False


@dataclass
class HCLTrainConfig:
    """One config for the three stages: model architecture, per-stage training, ablations, seed and distribution."""

    model: HCLModelConfig = field(default_factory=HCLModelConfig)
    restoration: RestorationStageConfig = field(default_factory=RestorationStageConfig)
    synthetic: SyntheticStageConfig = field(default_factory=SyntheticStageConfig)
    finetune: FinetuneStageConfig = field(default_factory=FinetuneStageConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    seed: int = 0
    distribute: str = "auto"
    verbose: int = 2


TARGETS = {"restoration": None, "synthetic": "normalized"}  # finetune: `finetune.target` (mos | normalized)


def build_inputs(cfg: HCLTrainConfig, stage: str, data, subset: str = "train"):
    """The `RecordReader`s of one curriculum on `<stage>.split`: the pair records (restoration; no scores), one per synthetic
    dataset (synthetic: a list, normalised scores) or the authentic dataset (finetune: `finetune.target`)."""
    s = getattr(cfg, stage)
    target = TARGETS.get(stage, getattr(s, "target", None))
    if stage == "synthetic":
        return [RecordReader(d, split=s.split, subset=subset, target=target) for d in data]
    return RecordReader(data, split=s.split, subset=subset, target=target)


# ------------------------------------------------------------------------------------------------------------ stage 1

def fit_restoration(model, train_pairs, run: RunDir, scfg: RestorationStageConfig, steps_per_epoch: int,
                    holdout_pairs=None, verbose=2):
    """Compiles (L1 or -PSNR [+ SSIM], Adam + cosine decay) and fits a `RestorationNet`; saves model.keras, results.json."""
    lr = scfg.lr
    if scfg.cosine:
        lr = keras.optimizers.schedules.CosineDecay(scfg.lr, decay_steps=max(1, scfg.epochs * steps_per_epoch))
    loss = RestorationLoss(scfg.ssim_weight if scfg.use_ssim else 0.0, pixel=scfg.pixel_loss)
    model.compile(optimizer=FusedAdam(lr), loss=loss, metrics=[restoration_l1])
    hist = fit(model, to_restoration_targets(train_pairs), epochs=scfg.epochs, run=run, steps_per_epoch=steps_per_epoch,
               verbose=verbose, tensorboard=False)
    results = {"stage": "restoration", "history": {k: [float(v) for v in vs] for k, vs in hist.history.items()}}
    if holdout_pairs is not None:
        results["holdout"] = restoration_report(model, holdout_pairs, scfg.holdout_batches)
    run.save_final(model)
    run.save_results(results)
    return results


def train_restoration(cfg: HCLTrainConfig, pairs: str, out: str) -> dict:
    """Curriculum 1 from a prepared pair dataset: train split for training, test split held out for the PSNR/SSIM report."""
    s = cfg.restoration
    if s.pixel_loss not in PIXEL_LOSSES:
        raise ValueError(f"restoration.pixel_loss must be one of {PIXEL_LOSSES}, got {s.pixel_loss!r} "
                         f"(e.g. {setting('restoration.pixel_loss', 'psnr')})")
    strategy = get_strategy(cfg.distribute)  # first: a multi-worker strategy must precede other TensorFlow work
    check_global_batch(s.batch_size, strategy, "restoration.batch_size")
    run = RunDir.create(out, config=cfg, seed=cfg.seed, extra={"stage": "restoration", "pairs": pairs}, strategy=strategy)
    train, test = build_inputs(cfg, "restoration", pairs), build_inputs(cfg, "restoration", pairs, "test")
    c = cfg.model.crop_size
    steps = s.steps_per_epoch or train.steps_per_epoch(s.batch_size)
    train_ds = shard_by_data(train.pair_dataset(s.batch_size, crop_size=c, seed=cfg.seed, repeat=True))
    hold_ds = test.pair_dataset(s.batch_size, crop_size=c, seed=cfg.seed + 1, shuffle=False, flip=False, drop_remainder=False)
    with strategy.scope():
        model = build_restoration(cfg.model)
        res = fit_restoration(model, train_ds, run, s, steps, holdout_pairs=hold_ds, verbose=cfg.verbose)
    res["bad_records"] = train.bad_records + test.bad_records
    run.save_results(res)
    return res


# ------------------------------------------------------------------------------------------------------------ stage 2

def compile_synthetic(model, scfg: SyntheticStageConfig):
    model.compile(optimizer=FusedAdam(scfg.lr), backbone_optimizer=FusedAdam(0.0))
    return freeze_then_low_lr(scfg.lr, scfg.freeze_epochs, scfg.backbone_lr_factor)


def fit_synthetic(model, train_ds, run: RunDir, scfg: SyntheticStageConfig, steps_per_epoch: int,
                  dataset_names: Optional[Sequence[str]] = None, verbose=2, extra_results: Optional[dict] = None):
    """Curriculum 2 on ((images, dataset_id), targets) batches; saves model.keras, results.json, head_correlation.*."""
    head_lr, back_lr = compile_synthetic(model, scfg)
    cbs = [GroupLRSchedule(head_lr, back_lr), HeadCorrelationLogger(run.path, dataset_names)]
    hist = fit(model, train_ds, epochs=scfg.epochs, run=run, steps_per_epoch=steps_per_epoch, callbacks=cbs, verbose=verbose,
               tensorboard=False)
    run.save_final(model)
    res = {"stage": "synthetic", "datasets": list(dataset_names or []), "num_datasets": model.num_datasets,
           "cqac": model.use_cqac, "lambda_corr": model.lambda_corr,
           "head_correlation_last_epoch": np.round(model.head_corr.matrix(), 6).tolist(),
           "history": {k: [float(v) for v in vs] for k, vs in hist.history.items()}, **(extra_results or {})}
    run.save_results(res)
    return res


def train_synthetic(cfg: HCLTrainConfig, data: Sequence[str], out: str, init=None) -> dict:
    """Curriculum 2 from K prepared synthetic datasets (train split of each, normalised scores), initialised from `init`."""
    if not data:
        raise ValueError(f"the synthetic stage needs at least one synthetic dataset ({setting('data', 'DIR')}, repeatable)")
    if not cfg.ablation.skip_restoration and init is None:
        raise ValueError(f"the synthetic stage starts from curriculum 1: pass {setting('init', 'RUN_OF_STAGE_1')} "
                         f"(or {setting('ablation.skip_restoration', True)} to start from model.backbone_weights)")
    s = cfg.synthetic
    strategy = get_strategy(cfg.distribute)
    check_global_batch(s.batch_size, strategy, "synthetic.batch_size")
    run = RunDir.create(out, config=cfg, seed=cfg.seed, extra={"stage": "synthetic", "data": list(data), "init": str(init)},
                        strategy=strategy)
    readers = build_inputs(cfg, "synthetic", data)
    names = [r.manifest.get("dataset", os.path.basename(os.path.normpath(d))) for r, d in zip(readers, data)]
    ds = multi_dataset(readers, s.batch_size, crop_size=cfg.model.crop_size, sampling=s.sampling, seed=cfg.seed)
    if cfg.ablation.single_head:
        ds = ds.map(lambda x, y: ((x[0], tf.zeros_like(x[1])), y))
        names = ["+".join(names)]
    steps = s.steps_per_epoch or sum(r.steps_per_epoch(s.batch_size) for r in readers)
    ds = shard_by_data(ds)
    with strategy.scope():
        model, parts = init_synthetic(cfg, init, num_datasets=len(readers))
        res = fit_synthetic(model, ds, run, s, steps, names, verbose=cfg.verbose,
                            extra_results={"init": str(init), "transferred": parts})
    res["bad_records"] = sum(r.bad_records for r in readers)
    run.save_results(res)
    return res


# ------------------------------------------------------------------------------------------------------------ stage 3

def finetune_lrs(fcfg: FinetuneStageConfig, pretrained: bool) -> tuple:
    """(lr, backbone_lr) of curriculum 3: "auto" = 1e-4 / 1e-5 with a trained backbone, the random-init defaults otherwise."""
    return (resolve_lr(fcfg.lr, 1e-4, RANDOM_INIT["hcl"]["lr"], pretrained, "hcl"),
            resolve_lr(fcfg.backbone_lr, 1e-5, RANDOM_INIT["hcl"]["backbone_lr"], pretrained, "hcl"))


def compile_finetune(model, fcfg: FinetuneStageConfig, pretrained: Optional[bool] = None):
    """Compiles curriculum 3 (`fcfg.loss`: L1 by default, or MSE; two Adams). `pretrained`: whether the restoration network was trained (previous stages or
    ImageNet); None = judged from `model.restoration.backbone_weights`."""
    if pretrained is None:
        pretrained = is_pretrained(getattr(model.restoration, "backbone_weights", None))
    if fcfg.loss not in FINETUNE_LOSSES:
        raise ValueError(f"finetune.loss must be one of {sorted(FINETUNE_LOSSES)}, got {fcfg.loss!r}")
    lr, backbone_lr = finetune_lrs(fcfg, pretrained)
    model.compile(optimizer=FusedAdam(lr), backbone_optimizer=FusedAdam(backbone_lr), loss=FINETUNE_LOSSES[fcfg.loss])
    return step_decay(lr, backbone_lr, fcfg.decay_epoch, fcfg.decay_factor)


def fit_finetune(model, train_ds, run: RunDir, fcfg: FinetuneStageConfig, steps_per_epoch: int, verbose=2,
                 pretrained: Optional[bool] = None):
    """Curriculum 3 on (images, targets) batches; saves model.keras. Returns the history dict."""
    head_lr, back_lr = compile_finetune(model, fcfg, pretrained)
    hist = fit(model, train_ds, epochs=fcfg.epochs, run=run, steps_per_epoch=steps_per_epoch,
               callbacks=[GroupLRSchedule(head_lr, back_lr)], verbose=verbose, tensorboard=False)
    run.save_final(model)
    return {k: [float(v) for v in vs] for k, vs in hist.history.items()}


def evaluate_hcl(model, reader, num_crops: Optional[int] = None, run: Optional[RunDir] = None) -> dict:
    """results.json `test` of curriculum 3: `keras_iqa.tasks.evaluate.evaluate` under the model's test-time contract (25
    random crops by default; `num_crops` overrides the count), with the crops it used; predictions.csv in `run`."""
    ev = evaluate(model, reader, num_crops=num_crops, predictions_csv=None if run is None else run.path / "predictions.csv")
    return {"n_images": int(ev["metrics"]["n"]), "num_crops": int(num_crops or model.test_crops),
            "crop_policy": model.crop_policy, **ev["metrics"]}


def train_finetune(cfg: HCLTrainConfig, data: str, out: str, init=None) -> dict:
    """Curriculum 3 on an authentic dataset (train subset of `finetune.split`), evaluated on its test subset."""
    f = cfg.finetune
    if f.target not in ("mos", "normalized"):
        raise ValueError(f"finetune.target must be 'mos' or 'normalized', got {f.target!r}")
    strategy = get_strategy(cfg.distribute)
    check_global_batch(f.batch_size, strategy, "finetune.batch_size")
    run = RunDir.create(out, config=cfg, seed=cfg.seed, extra={"stage": "finetune", "data": data, "init": str(init)},
                        strategy=strategy)
    train, test = build_inputs(cfg, "finetune", data), build_inputs(cfg, "finetune", data, "test")
    rng = train.score_range if f.target == "mos" else (0.0, 1.0)
    hb = train.higher_better if f.target == "mos" else True
    ds = shard_by_data(train.train_dataset(f.batch_size, crop_size=cfg.model.crop_size, seed=cfg.seed, repeat=True))
    steps = f.steps_per_epoch or train.steps_per_epoch(f.batch_size)
    with strategy.scope():
        model, parts = init_finetune(cfg, init, score_range=rng, higher_better=hb)

        trained = bool(parts) or is_pretrained(cfg.model.backbone_weights)  # a handed-over or ImageNet backbone
        history = fit_finetune(model, ds, run, f, steps, verbose=cfg.verbose, pretrained=trained)
    res = {"stage": "finetune", "model": "HCL (reconstruction)", "dataset": train.manifest.get("dataset"),
           "split": f.split, "init": str(init), "transferred": parts, "num_datasets": model.num_datasets,
           "cqac": model.use_cqac, "history": history, "test": evaluate_hcl(model, test, f.test_crops, run)}
    res["bad_records"] = train.bad_records + test.bad_records
    run.save_results(res)
    return res


# ------------------------------------------------------------------------------------------------------------ all

def run_all(cfg: HCLTrainConfig, pairs: Optional[str], synthetic: Sequence[str], data: str, out: str,
            init: Optional[str] = None) -> dict:
    """The three curricula in sequence (minus the ablated ones), each in `<out>/<n>-<stage>`; returns every stage's results."""
    ab, results, prev = cfg.ablation, {}, init
    if not ab.skip_restoration:
        if not pairs:
            raise ValueError(f"curriculum 1 needs pair records: {setting('pairs', 'DIR')} (or "
                             f"{setting('ablation.skip_restoration', True)})")
        d = os.path.join(out, STAGE_DIRS["restoration"])
        results["restoration"] = train_restoration(cfg, pairs, d)
        prev = d
    if not ab.skip_synthetic:
        if not synthetic:
            raise ValueError(f"curriculum 2 needs synthetic datasets: {setting('synthetic', 'DIR')} (repeatable) "
                             f"(or {setting('ablation.skip_synthetic', True)})")
        d = os.path.join(out, STAGE_DIRS["synthetic"])
        results["synthetic"] = train_synthetic(cfg, synthetic, d, init=prev)
        prev = d
    if not data:
        raise ValueError(f"curriculum 3 needs an authentic dataset: {setting('data', 'DIR')}")
    d = os.path.join(out, STAGE_DIRS["finetune"])
    results["finetune"] = train_finetune(cfg, data, d, init=prev)
    save_json({"stages": results, "ablation": dataclasses.asdict(ab)}, os.path.join(out, RESULTS_FILE))
    return results


def train(cfg: HCLTrainConfig, out: str, stage: str = "all", pairs: Optional[str] = None, data: Sequence[str] = (),
          synthetic: Sequence[str] = (), init: Optional[str] = None) -> dict:
    """One curriculum (`stage` "restoration" | "synthetic" | "finetune") or "all" of them (`run_all`); returns the
    results (for "all": {stage: results}). `data`: the synthetic datasets of stage 2 (with `synthetic`) or the one authentic
    dataset of stage 3 / "all"."""
    data = list(data)
    if stage == "all":
        if len(data) > 1:
            stages = hint("stage='all'", "--stages all")
            raise ValueError(f"{stages} takes ONE authentic {setting('data', 'DIR')}; give the "
                             f"synthetic datasets with {hint('synthetic=[DIR, ...]', '--synthetic DIR')}")
        return run_all(cfg, pairs, list(synthetic), data[0] if data else None, out, init=init)
    if stage == "restoration":
        if not pairs:
            raise ValueError(f"{setting('stage', 'restoration')} needs {setting('pairs', 'DIR')} (prepared pair records)")
        return train_restoration(cfg, pairs, out)
    if stage == "synthetic":
        return train_synthetic(cfg, list(synthetic) + data, out, init=init)
    if stage == "finetune":
        if len(data) != 1:
            raise ValueError(f"{setting('stage', 'finetune')} needs exactly one {setting('data', 'DIR')} (the authentic "
                             f"dataset), got {len(data)}")
        return train_finetune(cfg, data[0], out, init=init)
    raise ValueError(f"unknown HCL stage {stage!r}; one of {STAGES + ('all',)}")


def stage_summary(stage: str, results: dict):
    """The headline of a stage's results: held-out restoration check, test metrics, or the last head-correlation matrix."""
    if stage == "all":
        return {k: stage_summary(k, v) for k, v in results.items()}
    return results.get("holdout") or results.get("test") or results.get("head_correlation_last_epoch")


class HCLTask(Task):
    name = "hcl"
    config_cls = HCLTrainConfig
    description = "HCL (reconstruction): three curricula"

    def build_model(self, cfg, stage: str = "finetune", init=None, **kwargs):
        """The model of one curriculum: `RestorationNet`, `HCLSynthetic` or `HCL` (with what `init` hands over)."""
        if stage == "restoration":
            return build_restoration(cfg.model)
        return (init_synthetic if stage == "synthetic" else init_finetune)(cfg, init, **kwargs)[0]

    def build_inputs(self, cfg, stage: str, data, subset: str = "train"):
        return build_inputs(cfg, stage, data, subset)

    def train(self, cfg, out, stage: str = "all", **kwargs):
        return train(cfg, out, stage=stage, **kwargs)


TASK = HCLTask()
