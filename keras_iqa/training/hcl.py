"""HCL (reconstruction) stage runner: the three curricula, the weight hand-off between them, and the ablation switches.

Stages (docs/methods/hcl.md, Stages and hand-off; each writes its own run directory with `model.keras`, which the next stage's `init` loads):

1. `restoration`: `RestorationNet` on (distorted, reference) pair batches (same crop on both), target reference / 255, L1
   (+ optional 0.2 * (1 - SSIM)), Adam 1e-4 with cosine decay. Writes `results.json` with PSNR/SSIM of restored vs reference
   and of the distorted input vs reference (the identity) on held-out pairs.
2. `synthetic`: `HCLSynthetic` on batches from K synthetic datasets tagged with their dataset id; CQAC loss; heads at Adam 1e-4,
   the restoration network frozen (learning rate 0) for `freeze_epochs`, then at 1/10 of the head rate. Writes the K x K
   head-correlation matrix per epoch (`head_correlation.json` / `.csv`).
3. `finetune`: `HCL` on an authentic dataset's train split, L1 loss, backbone 1e-5 / rest 1e-4, x0.1 at epoch 10; evaluated on
   the test split with 25 random crops per image (`results.json`, `predictions.csv`).

`run_all` chains them in `<out>/1-restoration`, `<out>/2-synthetic`, `<out>/3-finetune` with one config.

Ablations (`HCLTrainConfig.ablation`): `skip_restoration` (stages 2/3 start from `model.backbone_weights`: ImageNet or random),
`skip_synthetic` (stage 3 starts from stage 1 with fresh subnetworks), `cqac=False` (independent heads, no attention, lambda 0),
`single_head=True` (K = 1: every synthetic dataset pooled under one subnetwork).

Example:
>>> from keras_iqa.config import load_config
>>> from keras_iqa.training.hcl import HCLTrainConfig, run_all
>>> cfg = load_config(HCLTrainConfig, sets=["synthetic.epochs=5"])
>>> cfg.synthetic.epochs
5
>>> # needs prepared datasets (`keras-iqa prepare`) and hours of training:
>>> run_all(cfg, pairs="records/pairs", synthetic=["records/kadid10k", "records/tid2013"], data="records/clive",
...         out="runs/hcl")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from data_pipeline.layout import HCL_STAGE_DIRS, RESULTS_FILE, find_model_file
from keras_iqa.models.hcl import HCLModelConfig
from keras_iqa.training.runner import RunDir, check_global_batch, fit, get_strategy, save_json, shard_by_data

STAGES = ("restoration", "synthetic", "finetune")
STAGE_DIRS = HCL_STAGE_DIRS  # <out>/1-restoration, 2-synthetic, 3-finetune (the names live in data_pipeline.layout)


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


# ------------------------------------------------------------------------------------------------------------ callbacks

def _callbacks_base():
    import keras

    return keras.callbacks.Callback


class GroupLRSchedule(_callbacks_base()):
    """Sets both learning rates at each epoch start: `head_lr(epoch)` on `model.optimizer`, `backbone_lr(epoch)` on
    `model.backbone_optimizer` (the restoration network). The rates are optimizer variables: no retracing."""

    def __init__(self, head_lr, backbone_lr):
        super().__init__()
        self.head_lr, self.backbone_lr = head_lr, backbone_lr

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = float(self.head_lr(epoch))
        if self.model.backbone_optimizer is not None:
            self.model.backbone_optimizer.learning_rate = float(self.backbone_lr(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = float(self.head_lr(epoch))
            logs["backbone_lr"] = float(self.backbone_lr(epoch))


def freeze_then_low_lr(lr: float, freeze_epochs: int = 2, factor: float = 0.1):
    """(head_lr, backbone_lr) schedules of curriculum 2: heads at `lr`; backbone 0 for `freeze_epochs`, then `lr * factor`."""
    return (lambda e: lr), (lambda e: 0.0 if e < freeze_epochs else lr * factor)


def step_decay(lr: float, backbone_lr: float, decay_epoch: int = 10, factor: float = 0.1):
    """(head_lr, backbone_lr) schedules of curriculum 3: both multiplied by `factor` from `decay_epoch` on."""
    return (lambda e: lr * (factor if e >= decay_epoch else 1.0)), (lambda e: backbone_lr * (factor if e >= decay_epoch else 1.0))


class HeadCorrelationLogger(_callbacks_base()):
    """Writes the K x K head-correlation matrix of each training epoch (mean over batches of the batch PLCC between the
    heads' scores, `HCLSynthetic.head_corr`) to `<dir>/head_correlation.json` and `.csv`. Resume-safe: epochs that a
    resumed run re-does replace their old rows. The training matrix is captured before validation resets the metrics."""

    def __init__(self, directory, dataset_names: Optional[Sequence[str]] = None):
        super().__init__()
        self.dir = Path(directory)
        self.names = list(dataset_names) if dataset_names else None
        self._snap = None

    def on_epoch_begin(self, epoch, logs=None):
        self._snap = None

    def on_test_begin(self, logs=None):
        if self._snap is None:  # validation inside fit: keep the training epoch's matrix
            self._snap = self.model.head_corr.matrix()

    def on_epoch_end(self, epoch, logs=None):
        m = self._snap if self._snap is not None else self.model.head_corr.matrix()
        path = self.dir / "head_correlation.json"
        doc = {"datasets": self.names, "epochs": []}
        if path.exists():
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        doc["epochs"] = [e for e in doc.get("epochs", []) if e["epoch"] < epoch] + [
            {"epoch": int(epoch), "matrix": np.round(m, 6).tolist()}]
        save_json(doc, path)
        names = self.names or [str(i) for i in range(m.shape[0])]
        lines = ["epoch,head_i,head_j,plcc"]
        for e in doc["epochs"]:
            mat = np.asarray(e["matrix"])
            lines += [f"{e['epoch']},{names[i]},{names[j]},{mat[i, j]:.6f}" for i in range(len(mat)) for j in range(len(mat))]
        tmp = self.dir / "head_correlation.csv.tmp"
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, self.dir / "head_correlation.csv")


# ------------------------------------------------------------------------------------------------------------ hand-off

def load_stage_model(init):
    """A stage's model from a run directory (its `model.keras`), a `.keras` file, or a model object."""
    import keras

    import keras_iqa.models.hcl  # noqa: F401  (registers the classes for deserialisation)

    if init is None or isinstance(init, keras.Model):
        return init
    path = Path(init)
    if not path.is_file():  # a run directory (its model.keras), else a clear error
        try:
            path = find_model_file(init)
        except FileNotFoundError as e:
            raise type(e)(f"--init: {e}; give the run directory of the previous HCL stage (it holds model.keras once "
                          "that stage finished) or a .keras file") from None
    return keras.models.load_model(path, compile=False)


def transfer_weights(src, dst) -> list:
    """Copies the parts `src` and `dst` share (restoration network always; subnetworks and CQAC when K matches) and returns
    their names. Fails clearly when the architectures differ."""
    from keras_iqa.models.hcl import RestorationNet

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


def _model_cfg_from(cfg: HCLModelConfig, src) -> HCLModelConfig:
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


# ------------------------------------------------------------------------------------------------------------ stage 1

def restoration_report(model, pairs_ds, max_batches: Optional[int] = None, min_gain_db: float = 0.05,
                       group_by: Optional[dict] = None) -> dict:
    """PSNR / SSIM (max value 1) of restored vs reference and of the distorted input vs reference (the identity baseline)
    over (distorted, reference) batches in [0, 255]; `beats_identity` (mean PSNR gain > `min_gain_db`, so that a network
    that learned to copy its input does not pass on rounding) is the measured check of curriculum 1.

    Pairs whose distorted crop equals its reference (e.g. a flat or black region; `n_unchanged`) are left out of the means:
    there is nothing to restore, and their infinite identity PSNR (capped at 100 dB) would dominate the mean (measured: 3 %
    of held-out 64 px crops of the embedded set moved the identity's mean PSNR by 2.5 dB). Restored PSNR is capped alike.

    `group_by` = {name: one key per pair, in dataset order} (e.g. distortion types) adds `psnr_gain_by_<name>` = {key: mean
    PSNR gain over that key's changed pairs, or None if it has none}, from the same single pass over the model."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def batch_stats(d, r):
        d, r = tf.cast(d, tf.float32), tf.cast(r, tf.float32) / 255.0
        restored = tf.clip_by_value(tf.cast(model(d, training=False), tf.float32), 0.0, 1.0)
        d = d / 255.0
        unchanged = tf.cast(tf.reduce_max(tf.abs(d - r), axis=[1, 2, 3]) == 0.0, tf.float32)
        return tf.stack([tf.image.psnr(restored, r, 1.0), tf.image.psnr(d, r, 1.0),
                         tf.image.ssim(restored, r, 1.0), tf.image.ssim(d, r, 1.0), unchanged], axis=1)

    rows = []
    for i, (d, r) in enumerate(pairs_ds):
        if max_batches is not None and i >= max_batches:
            break
        rows.append(batch_stats(d, r).numpy())
    if not rows:
        raise ValueError("restoration_report: the held-out pair dataset is empty")
    a = np.concatenate(rows)
    unchanged = a[:, 4] > 0.5
    a = np.where(np.isfinite(a[:, :4]), a[:, :4], 100.0)  # identical images give PSNR inf: cap at 100 dB
    gain, groups = a[:, 0] - a[:, 1], {}
    for name, keys in (group_by or {}).items():
        keys, by_key = np.asarray(keys)[:len(a)], {}
        for k in np.unique(keys):
            sel = (keys == k) & ~unchanged
            by_key[k.item()] = float(gain[sel].mean()) if sel.any() else None
        groups[f"psnr_gain_by_{name}"] = by_key
    a = a[~unchanged]
    if not len(a):
        raise ValueError("restoration_report: every held-out distorted crop equals its reference; nothing to restore")
    m = a.mean(axis=0)
    return {**groups, "n_pairs": int(len(a)), "n_unchanged": int(unchanged.sum()),
            "psnr_restored": float(m[0]), "psnr_identity": float(m[1]), "psnr_gain": float(m[0] - m[1]),
            "ssim_restored": float(m[2]), "ssim_identity": float(m[3]), "ssim_gain": float(m[2] - m[3]),
            "beats_identity": bool(m[0] - m[1] > min_gain_db), "min_gain_db": float(min_gain_db),
            "note": "HCL (reconstruction), curriculum 1: restored vs reference compared with distorted vs reference, "
                    "over the pairs whose distorted input differs from the reference"}


def to_restoration_targets(pairs_ds):
    """(distorted, reference) in [0, 255] -> (distorted, reference / 255) for `RestorationNet.fit`."""
    return pairs_ds.map(lambda d, r: (d, r / 255.0))


def fit_restoration(model, train_pairs, run: RunDir, scfg: RestorationStageConfig, steps_per_epoch: int,
                    holdout_pairs=None, verbose=2):
    """Compiles (L1 or -PSNR [+ SSIM], Adam + cosine decay) and fits a `RestorationNet`; saves model.keras, results.json."""
    import keras

    from keras_iqa.models.hcl import RestorationLoss, restoration_l1
    from keras_iqa.training.optimizers import FusedAdam

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
    from data_pipeline.input import RecordReader
    from keras_iqa.models.hcl import PIXEL_LOSSES, build_restoration

    s = cfg.restoration
    if s.pixel_loss not in PIXEL_LOSSES:
        raise ValueError(f"restoration.pixel_loss must be one of {PIXEL_LOSSES}, got {s.pixel_loss!r} "
                         "(e.g. --set restoration.pixel_loss=psnr)")
    strategy = get_strategy(cfg.distribute)  # first: a multi-worker strategy must precede other TensorFlow work
    check_global_batch(s.batch_size, strategy, "restoration.batch_size")
    run = RunDir.create(out, config=cfg, seed=cfg.seed, extra={"stage": "restoration", "pairs": pairs}, strategy=strategy)
    train = RecordReader(pairs, split=s.split, subset="train", target=None)  # pairs need no scores
    test = RecordReader(pairs, split=s.split, subset="test", target=None)
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

def init_synthetic(cfg: HCLTrainConfig, init=None, num_datasets: Optional[int] = None):
    """Builds `HCLSynthetic` (K = `num_datasets`) and loads the restoration network from `init` (stage-1 run, unless
    `ablation.skip_restoration`); returns (model, transferred parts)."""
    from keras_iqa.models.hcl import build_synthetic

    ab = cfg.ablation
    src = None if ab.skip_restoration else load_stage_model(init)
    mcfg = _model_cfg_from(cfg.model, src)
    k = 1 if ab.single_head else int(num_datasets or mcfg.num_datasets)
    mcfg = dataclasses.replace(mcfg, num_datasets=k, cqac=bool(ab.cqac and cfg.model.cqac))
    model = build_synthetic(mcfg, lambda_corr=cfg.synthetic.lambda_corr if mcfg.cqac else 0.0)
    parts = transfer_weights(src, model)[:1] if src is not None else []  # only the restoration network from stage 1
    return model, parts


def compile_synthetic(model, scfg: SyntheticStageConfig):
    from keras_iqa.training.optimizers import FusedAdam

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
    from data_pipeline.input import RecordReader, multi_dataset

    if not data:
        raise ValueError("the synthetic stage needs at least one synthetic dataset (--data DIR, repeatable)")
    if not cfg.ablation.skip_restoration and init is None:
        raise ValueError("the synthetic stage starts from curriculum 1: pass --init RUN_OF_STAGE_1 "
                         "(or --set ablation.skip_restoration=true to start from model.backbone_weights)")
    s = cfg.synthetic
    strategy = get_strategy(cfg.distribute)
    check_global_batch(s.batch_size, strategy, "synthetic.batch_size")
    run = RunDir.create(out, config=cfg, seed=cfg.seed, extra={"stage": "synthetic", "data": list(data), "init": str(init)},
                        strategy=strategy)
    readers = [RecordReader(d, split=s.split, subset="train", target="normalized") for d in data]
    names = [r.manifest.get("dataset", os.path.basename(os.path.normpath(d))) for r, d in zip(readers, data)]
    ds = multi_dataset(readers, s.batch_size, crop_size=cfg.model.crop_size, sampling=s.sampling, seed=cfg.seed)
    if cfg.ablation.single_head:
        import tensorflow as tf

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

def init_finetune(cfg: HCLTrainConfig, init=None, score_range=None, higher_better=True):
    """Builds `HCL` and loads what `init` holds (stage-2 run: restoration + subnetworks + CQAC; stage-1 run when
    `ablation.skip_synthetic`: restoration only); returns (model, transferred parts)."""
    from keras_iqa.models.hcl import build_hcl

    src = None if init is None else load_stage_model(init)
    mcfg = _model_cfg_from(cfg.model, src)
    if src is None or not hasattr(src, "subnets"):
        mcfg = dataclasses.replace(mcfg, num_datasets=1 if cfg.ablation.single_head else mcfg.num_datasets,
                                   cqac=bool(cfg.ablation.cqac and mcfg.cqac))
    changes = {"test_crops": cfg.finetune.test_crops}
    if score_range is not None:
        changes.update(score_range=tuple(score_range), higher_better=bool(higher_better))
    model = build_hcl(dataclasses.replace(mcfg, **changes))
    parts = transfer_weights(src, model) if src is not None else []
    return model, parts


def finetune_lrs(fcfg: FinetuneStageConfig, pretrained: bool) -> tuple:
    """(lr, backbone_lr) of curriculum 3: "auto" = 1e-4 / 1e-5 with a trained backbone, the random-init defaults otherwise."""
    from keras_iqa.training.lr import RANDOM_INIT, resolve_lr

    return (resolve_lr(fcfg.lr, 1e-4, RANDOM_INIT["hcl"]["lr"], pretrained, "hcl"),
            resolve_lr(fcfg.backbone_lr, 1e-5, RANDOM_INIT["hcl"]["backbone_lr"], pretrained, "hcl"))


def compile_finetune(model, fcfg: FinetuneStageConfig, pretrained: Optional[bool] = None):
    """Compiles curriculum 3 (`fcfg.loss`: L1 by default, or MSE; two Adams). `pretrained`: whether the restoration network was trained (previous stages or
    ImageNet); None = judged from `model.restoration.backbone_weights`."""
    from keras_iqa.training.lr import is_pretrained
    from keras_iqa.training.optimizers import FusedAdam

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
    """The model's test-time contract (25 random crops by default; `num_crops` overrides the count): per-image mean of
    crop scores, then SROCC/KROCC/PLCC/RMSE (keras_iqa.metrics)."""
    from keras_iqa.evaluation import predict_reader
    from keras_iqa.metrics import evaluate_predictions

    df = predict_reader(model, reader, num_crops=num_crops)
    if run is not None:
        df.to_csv(run.path / "predictions.csv", index=False)
    out = {"n_images": int(len(df)), "num_crops": int(num_crops or model.test_crops), "crop_policy": model.crop_policy}
    if len(df) >= 3:
        out.update(evaluate_predictions(df["pred"].to_numpy(), df["target"].to_numpy()))
    return out


def train_finetune(cfg: HCLTrainConfig, data: str, out: str, init=None) -> dict:
    """Curriculum 3 on an authentic dataset (train subset of `finetune.split`), evaluated on its test subset."""
    from data_pipeline.input import RecordReader

    f = cfg.finetune
    if f.target not in ("mos", "normalized"):
        raise ValueError(f"finetune.target must be 'mos' or 'normalized', got {f.target!r}")
    strategy = get_strategy(cfg.distribute)
    check_global_batch(f.batch_size, strategy, "finetune.batch_size")
    run = RunDir.create(out, config=cfg, seed=cfg.seed, extra={"stage": "finetune", "data": data, "init": str(init)},
                        strategy=strategy)
    train = RecordReader(data, split=f.split, subset="train", target=f.target)
    test = RecordReader(data, split=f.split, subset="test", target=f.target)
    rng = train.score_range if f.target == "mos" else (0.0, 1.0)
    hb = train.higher_better if f.target == "mos" else True
    ds = shard_by_data(train.train_dataset(f.batch_size, crop_size=cfg.model.crop_size, seed=cfg.seed, repeat=True))
    steps = f.steps_per_epoch or train.steps_per_epoch(f.batch_size)
    with strategy.scope():
        model, parts = init_finetune(cfg, init, score_range=rng, higher_better=hb)
        from keras_iqa.training.lr import is_pretrained

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
            raise ValueError("curriculum 1 needs pair records: --pairs DIR (or --set ablation.skip_restoration=true)")
        d = os.path.join(out, STAGE_DIRS["restoration"])
        results["restoration"] = train_restoration(cfg, pairs, d)
        prev = d
    if not ab.skip_synthetic:
        if not synthetic:
            raise ValueError("curriculum 2 needs synthetic datasets: --synthetic DIR (repeatable) "
                             "(or --set ablation.skip_synthetic=true)")
        d = os.path.join(out, STAGE_DIRS["synthetic"])
        results["synthetic"] = train_synthetic(cfg, synthetic, d, init=prev)
        prev = d
    if not data:
        raise ValueError("curriculum 3 needs an authentic dataset: --data DIR")
    d = os.path.join(out, STAGE_DIRS["finetune"])
    results["finetune"] = train_finetune(cfg, data, d, init=prev)
    save_json({"stages": results, "ablation": dataclasses.asdict(ab)}, os.path.join(out, RESULTS_FILE))
    return results
