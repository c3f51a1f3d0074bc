"""MetaIQA's training task (Zhu et al., CVPR 2020): its config, model, inputs and the three protocols it trains with.

- `MetaIQATrainConfig` / `PRESETS`: every knob of `keras-iqa train metaiqa` (paper defaults; "official" = the released code).
- `TASK.build_model(cfg)`: the registry card, "auto" backbone weights (ImageNet for full-size cards), the test-time contract.
- `TASK.build_inputs(cfg, meta_data, data)`: one meta-training task per distortion type of each synthetic dataset, and the
  target dataset's fine-tuning stream and test reader.
- `TASK.train(cfg, meta_data, data, out)`: the protocol of `cfg.protocol` into a run directory: "meta" (synthetic ->
  authentic, Table 3), "lodo" (leave-one-distortion-out, Table 2), "baseline" (Table 4); returns what `results.json` holds.

The learner itself is `keras_iqa.training.meta_learner.MetaLearner`; fine-tuning and the protocols over any model builder are
in `keras_iqa.tasks.metaiqa_protocols` and re-exported here.

Example:
>>> from keras_iqa.tasks.metaiqa import PRESETS, TASK, MetaIQATrainConfig
>>> cfg = TASK.validate(MetaIQATrainConfig(model="metaiqa-tiny", crop_size=32, **PRESETS["official"]))
>>> cfg.finetune_resize, cfg.batch_size  # fine-tuning crops are taken at the training scale
([256, 256], 50)
>>> model = TASK.build_model(cfg)  # random init for a tiny card; the official test: whole image at 224, one pass
>>> model.crop_policy, model.test_crops, model.test_resize
('resize', 1, (256, 256))
"""

from __future__ import annotations

from dataclasses import dataclass
import json
from typing import Optional, Sequence, Union

import keras_iqa
from keras_iqa.caller import hint, setting
from keras_iqa.registry import get_card
from keras_iqa.tasks import base
from keras_iqa.training.memory import check_step_memory

# the learner, fine-tuning and the protocols need TensorFlow: re-exported on first use (`keras-iqa --help` stays light)
_PROTOCOLS = ("FINETUNE_PRESETS", "compile_for_finetune", "finetune", "load_meta_weights", "predict_batches", "evaluate_model",
              "lodo_splits", "lodo_reference_split", "leave_one_distortion_out", "synthetic_to_authentic",
              "baseline_then_finetune", "tasks_to_dataset")
_LEARNER = ("MetaLearner", "lr_factor")
__all__ = ["MetaIQATrainConfig", "PRESETS", "MetaIQATask", "TASK", "validate", "build_model", "build_inputs", "train",
           "set_test_contract", *_LEARNER, *_PROTOCOLS]


def __getattr__(name: str):
    if name in _PROTOCOLS:
        from keras_iqa.tasks import metaiqa_protocols

        return getattr(metaiqa_protocols, name)
    if name in _LEARNER:
        from keras_iqa.training import meta_learner

        return getattr(meta_learner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_PROTOCOLS) | set(_LEARNER))


@dataclass
class MetaIQATrainConfig:
    """Every knob of `keras-iqa train metaiqa` (paper defaults; `--preset official` switches to the released code's values)."""

    model: str = "metaiqa"                 # registry card: metaiqa | metaiqa-official | metaiqa-tiny
    head: Optional[str] = None             # override the card's head: paper | official
    backbone_weights: Optional[str] = "auto"  # auto: "imagenet" for full-size cards (paper), None for tiny ones
    protocol: str = "meta"                 # meta | lodo | baseline
    crop_size: int = 224
    batch_size: int = 32
    support_fraction: float = 0.8
    meta_target: str = "normalized"        # score/normalized, or pseudo for generated data (score/pseudo)
    query_mode: str = "crop"               # crop (paper: random 224 crops) | resize (official: whole image at 224)
    resize: Union[int, list, None] = None  # [h, w] or short side before the training crops (support, query crops and
                                           # fine-tuning); official: [256, 256] (aspect not kept), paper: None (native)
    eval_crops: int = 25                   # test crops averaged per image (paper default: crops at the training scale)
    eval_mode: str = "random"              # random (paper default) | grid | resize (official: whole image to 224, 1 pass)
    lodo_finetune: bool = False            # lodo: also fine-tune on a reference-disjoint part of the held-out type
                                           # (not in the paper, which tests the N-1-type model on the held-out type)
    inner_steps: int = 6                   # S
    inner_lr: float = 1e-4                 # alpha
    outer_lr: float = 1e-2                 # beta
    beta_1: float = 0.9
    beta_2: float = 0.99
    epsilon: float = 1e-8
    weight_decay: float = 1e-5
    adam_state: str = "fresh"              # fresh (paper) | persistent (official code)
    tasks_per_batch: int = 5               # k
    meta_epochs: int = 100
    lr_schedule: str = "paper"             # paper (x0.8 every 5 epochs) | official | constant
    finetune_preset: str = "paper"         # paper (Adam 1e-5, wd 1e-5) | official (1e-4, wd 0)
    finetune_epochs: Optional[int] = None  # default: the preset's
    finetune_lr: Union[str, float, None] = "auto"  # auto: the preset's (paper 1e-5) with ImageNet weights, 1e-3 from random init
    finetune_resize: Optional[int] = None  # official: 256 (resize to 256x256 before the random crop)
    split: str = "split_00"
    held_out: Optional[list] = None        # lodo: restrict to these distortion names / types
    baseline_epochs: int = 10              # baseline: epochs of plain Adam on the synthetic images
    seed: int = 0
    precision: str = "fp32"                 # auto | fp32 | bf16 (fp32 by default: the second-order meta-updates)
    distribute: str = "auto"                # auto | mirrored | multiworker: tasks of a meta-batch spread over replicas


PRESETS = {
    "paper": {},
    "official": {"beta_2": 0.999, "weight_decay": 0.0, "adam_state": "persistent", "lr_schedule": "official",
                 "meta_epochs": 50, "query_mode": "resize", "finetune_preset": "official", "head": "official",
                 "resize": [256, 256], "eval_crops": 1, "eval_mode": "resize", "batch_size": 50},
}


def set_test_contract(model, cfg: MetaIQATrainConfig):
    """The model's test-time contract from the training config, set before training (so the meta-epoch evaluation,
    `model.keras`, `score`, the SavedModel and TFLite use it): `eval_crops` crops (`eval_mode`) after the training
    `resize`. Paper default: 25 random 224 crops at the native resolution, the scale the model trains at; official preset:
    the whole image resized to 224x224, one pass (and 256x256 resize before the training crops)."""
    return base.set_test_contract(model, resize=cfg.resize, eval_crops=cfg.eval_crops, eval_mode=cfg.eval_mode)


def _reader_cls():
    try:
        from data_pipeline.input import RecordReader
    except ImportError as e:  # pragma: no cover - the data pipeline ships with the package
        raise RuntimeError(f"the data pipeline reader is not available ({e})") from e
    return RecordReader


def _restricted_reader(data_dir: str, ids, cfg: MetaIQATrainConfig):
    """A reader over exactly `ids` of a prepared dataset (e.g. one distortion type)."""
    r = _reader_cls()(data_dir, split=cfg.split, subset=None, target=cfg.meta_target, target_key="meta_target")
    r.ids, r.count, r._index_cache = [str(i) for i in ids], len(ids), None
    return r


class MetaIQATask(base.Task):
    """MetaIQA: meta-train on distortion-specific tasks (Algorithm 1), fine-tune on the target set, evaluate."""

    name = "metaiqa"
    config_cls = MetaIQATrainConfig
    description = "MetaIQA (bi-level meta-learning on distortion tasks, then fine-tuning)"

    # -- config -------------------------------------------------------------------------------------------------------
    def validate(self, cfg: MetaIQATrainConfig) -> MetaIQATrainConfig:
        """Checks the choices of `cfg` (a ValueError naming the key and its values) and fills the derived defaults:
        `finetune_resize` = `resize` (fine-tuning crops are taken at the training scale too)."""
        for key, allowed in (("protocol", ("meta", "lodo", "baseline")), ("precision", ("auto", "fp32", "bf16")),
                             ("distribute", ("auto", "mirrored", "multiworker")), ("eval_mode", ("random", "grid", "resize"))):
            if getattr(cfg, key) not in allowed:
                raise ValueError(f"{key} must be {', '.join(allowed[:-1])} or {allowed[-1]}, got {getattr(cfg, key)!r}")
        if cfg.distribute != "auto" and cfg.adam_state != "fresh":
            raise ValueError(f"{setting('distribute', cfg.distribute)} spreads each meta-batch's tasks over the replicas, "
                             "which needs adam_state=fresh (the paper's): the persistent Adam state of the official code runs "
                             f"through the tasks one after another (use {setting('adam_state', 'fresh')}, or one device)")
        if cfg.finetune_resize is None and cfg.resize:
            cfg.finetune_resize = cfg.resize
        check_step_memory(cfg.crop_size, cfg.batch_size, getattr(get_card(cfg.model).config(), "width", 1.0))
        return cfg

    def backbone_weights(self, cfg: MetaIQATrainConfig) -> Optional[str]:
        """`cfg.backbone_weights` with "auto" resolved (ImageNet for full-size cards, random init for tiny ones)."""
        return base.resolve_backbone_weights(cfg.backbone_weights, get_card(cfg.model).config())

    def finetune_lr(self, cfg: MetaIQATrainConfig) -> float:
        """`finetune_lr`, "auto" resolved: the preset's (paper 1e-5) with pretrained weights, the random-init default else."""
        from keras_iqa.training.lr import RANDOM_INIT, is_pretrained, resolve_lr

        from keras_iqa.tasks.metaiqa_protocols import FINETUNE_PRESETS

        return resolve_lr(cfg.finetune_lr, FINETUNE_PRESETS[cfg.finetune_preset]["lr"], RANDOM_INIT["metaiqa"]["finetune_lr"],
                          is_pretrained(self.backbone_weights(cfg)), "metaiqa")  # lr=auto (docs/heads.md)

    # -- model and inputs ---------------------------------------------------------------------------------------------
    def build_model(self, cfg: MetaIQATrainConfig):
        """A fresh model of the card `cfg.model` at `cfg.crop_size` (and `cfg.head`), its test-time contract set."""
        over = {"crop_size": cfg.crop_size, "backbone_weights": self.backbone_weights(cfg)}
        if cfg.head:
            over["head"] = cfg.head
        return set_test_contract(keras_iqa.create_model(cfg.model, **over), cfg)

    def meta_tasks(self, cfg: MetaIQATrainConfig, dirs: Sequence[str]) -> list:
        """One task per distortion type of every prepared synthetic dataset in `dirs` (`RecordReader.metaiqa_tasks`);
        types with too few images for a query set are skipped with a message."""
        RecordReader = _reader_cls()
        tasks = []
        for d in dirs:
            reader = RecordReader(d, split=cfg.split, subset=None, target=cfg.meta_target, target_key="meta_target")
            for t in reader.metaiqa_tasks(support_fraction=cfg.support_fraction, batch_size=cfg.batch_size,
                                          crop_size=cfg.crop_size, seed=cfg.seed, query_mode=cfg.query_mode,
                                          resize=cfg.resize):
                t["data_dir"] = d
                if t["query"] is None:
                    print(f"skipping task {t['name']!r} of {d}: too few images for a query set ({t['support_count']})")
                    continue
                if len(dirs) > 1:
                    t = {**t, "name": f"{reader.manifest.get('dataset', d)}/{t['name']}"}
                tasks.append(t)
        if not tasks:
            raise ValueError(f"no MetaIQA task could be built from {list(dirs)}: they need synthetic records with distortion "
                             "types")
        return tasks

    def target_inputs(self, cfg: MetaIQATrainConfig, data: str) -> tuple:
        """(fine-tuning dataset, its steps per epoch, test reader) of the target dataset `data` (split `cfg.split`)."""
        from keras_iqa.training.runner import shard_by_data

        RecordReader = _reader_cls()
        tr = RecordReader(data, split=cfg.split, subset="train", target="normalized")
        test = RecordReader(data, split=cfg.split, subset="test", target="normalized")
        # repeated, with an explicit epoch length: a one-pass reader dataset has unknown cardinality (records that fail to
        # decode are skipped), so Keras ran it dry and warned "Your input ran out of data; interrupting training"
        train = shard_by_data(tr.train_dataset(cfg.batch_size, crop_size=cfg.crop_size, resize=cfg.finetune_resize,
                                               seed=cfg.seed, repeat=True, drop_remainder=False))
        return train, max(1, tr.steps_per_epoch(cfg.batch_size)), test

    def build_inputs(self, cfg: MetaIQATrainConfig, meta_data: Sequence[str], data: Optional[str] = None) -> dict:
        """{"tasks": meta-training tasks, "train": fine-tuning dataset or None, "finetune_steps", "test": reader or None}."""
        out = {"tasks": self.meta_tasks(cfg, meta_data), "train": None, "finetune_steps": None, "test": None}
        if data:
            out["train"], out["finetune_steps"], out["test"] = self.target_inputs(cfg, data)
        return out

    def lodo_data(self, cfg: MetaIQATrainConfig):
        """`held_out_data` of `leave_one_distortion_out`: every image of the held-out type as a reader (the model's
        test-time contract applies), or with fine-tuning a reference-disjoint fine-tune / test split of them."""

        from keras_iqa.tasks.metaiqa_protocols import lodo_reference_split

        def data(task, finetune):
            ids = list(task["support_ids"]) + list(task["query_ids"])
            if not finetune:
                return {"test": _restricted_reader(task["data_dir"], ids, cfg), "n_finetune": 0}
            idx = _restricted_reader(task["data_dir"], ids, cfg).index()
            ref = dict(zip(idx["id"].tolist(), idx["reference"].tolist()))
            ft_ids, test_ids = lodo_reference_split(ids, [ref[i] for i in ids], cfg.support_fraction, cfg.seed)
            ft_reader = _restricted_reader(task["data_dir"], ft_ids, cfg)
            ft = ft_reader.train_dataset(cfg.batch_size, crop_size=cfg.crop_size, resize=cfg.finetune_resize, seed=cfg.seed,
                                         repeat=True, drop_remainder=False)
            return {"test": _restricted_reader(task["data_dir"], test_ids, cfg), "finetune": ft,
                    "finetune_steps": max(1, -(-len(ft_ids) // cfg.batch_size)), "n_finetune": len(ft_ids),
                    "references_finetune": len({ref[i] for i in ft_ids}), "references_test": len({ref[i] for i in test_ids})}

        return data

    # -- training -----------------------------------------------------------------------------------------------------
    def train(self, cfg: MetaIQATrainConfig, meta_data: Sequence[str], data: Optional[str], out, verbose: int = 1) -> dict:
        """Runs `cfg.protocol` into the run directory `out` (re-running resumes): config.json, meta/ and finetune/ (history,
        checkpoints, resume state), model.keras and results.json ("lodo": lodo.csv, one row per held-out type). Returns
        the results."""
        from keras_iqa.config import to_dict
        from keras_iqa.training.cpu import configure_cpu
        from keras_iqa.training.runner import RunDir, check_global_batch, get_strategy

        cfg = self.validate(cfg)
        if not meta_data:
            raise ValueError(f"{hint('meta_data=[DIR, ...]', '--meta-data DIR')} is required (a prepared synthetic dataset "
                             "with distortion types, e.g. kadid10k)")
        if cfg.protocol == "baseline" and not data:
            raise ValueError(f"{setting('protocol', 'baseline')} needs {setting('data', 'DIR')} (the target set to "
                             "fine-tune and test on)")
        # dtype policy (--precision) and the CPU thread defaults; the bi-level loop applies gradients itself, without loss
        # scaling, so "auto" never picks float16 on a GPU (keras_iqa.training.cpu)
        cpu = configure_cpu(cfg.precision, loss_scaling=False)
        strategy = get_strategy(cfg.distribute)  # first: a multi-worker strategy must precede other TensorFlow work
        check_global_batch(cfg.batch_size, strategy)
        run_dir = RunDir.create(out, config={**to_dict(cfg), "meta_data": list(meta_data), "data": data}, seed=cfg.seed,
                                strategy=strategy)
        with strategy.scope():  # models, optimizers, meta-training and fine-tuning under --distribute
            return self._train(cfg, meta_data, data, run_dir, cpu, verbose)

    def _train(self, cfg, meta_data, data, run_dir, cpu, verbose) -> dict:
        from keras_iqa.config import to_dict
        from keras_iqa.tasks.metaiqa_protocols import baseline_then_finetune, leave_one_distortion_out, synthetic_to_authentic

        inputs = self.build_inputs(cfg, meta_data, None if cfg.protocol == "lodo" else data)  # lodo: no target set
        tasks = inputs["tasks"]
        print(f"{len(tasks)} meta-training tasks: {', '.join(t['name'] for t in tasks[:8])}{' ...' if len(tasks) > 8 else ''}")
        meta_kw = dict(inner_steps=cfg.inner_steps, inner_lr=cfg.inner_lr, outer_lr=cfg.outer_lr, beta_1=cfg.beta_1,
                       beta_2=cfg.beta_2, epsilon=cfg.epsilon, weight_decay=cfg.weight_decay, adam_state=cfg.adam_state)
        fit_kw = dict(epochs=cfg.meta_epochs, tasks_per_batch=cfg.tasks_per_batch, lr_schedule=cfg.lr_schedule,
                      seed=cfg.seed, verbose=verbose)
        tune_kw = dict(preset=cfg.finetune_preset, epochs=cfg.finetune_epochs, lr=self.finetune_lr(cfg), verbose=verbose)
        if inputs["finetune_steps"]:
            tune_kw["steps_per_epoch"] = inputs["finetune_steps"]
        results = {"protocol": cfg.protocol, "config": to_dict(cfg), "cpu": cpu}

        def build():
            return self.build_model(cfg)

        if cfg.protocol == "lodo":
            df = leave_one_distortion_out(tasks, build, held_out=cfg.held_out, meta=meta_kw, fit=fit_kw, tune=tune_kw,
                                          finetune_on_held_out=cfg.lodo_finetune, held_out_data=self.lodo_data(cfg))
            df.to_csv(run_dir.path / "lodo.csv", index=False)
            results.update(per_type=df.to_dict("records"), mean_srocc=float(df["srocc"].mean()),
                           mean_plcc=float(df["plcc"].mean()))  # pandas skips NaN (types with < 3 test images)
            run_dir.save_results(results)
            print(df.to_string(index=False))
            return results
        if cfg.protocol == "baseline":
            out = baseline_then_finetune(tasks, build, inputs["train"], inputs["test"], pretrain_epochs=cfg.baseline_epochs,
                                         pretrain_lr=cfg.inner_lr, tune=tune_kw, verbose=verbose)
            results.update(test=out["test"], pretrain=out["pretrain"])
        else:
            out = synthetic_to_authentic(tasks, build, inputs["train"], inputs["test"], meta=meta_kw, fit=fit_kw,
                                         tune=tune_kw, run=run_dir, run_config=to_dict(cfg))
            results.update(meta_history=out["meta"], meta_traces=out["meta_traces"])
            if "test" in out:
                results["test"] = out["test"]
        run_dir.save_final(out["model"])
        run_dir.save_results(results)
        if "test" in results:
            print("test:", _metrics_line(results["test"]))
        print(f"run directory: {run_dir.path}")
        return results


def _metrics_line(metrics: dict) -> str:
    """The scalar metrics as one JSON line (the fitted logistic parameters and the error text left out)."""
    return json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (dict, str)) and not k.endswith("_error")})


TASK = MetaIQATask()
# the task's steps as functions too (the same as `tasks.reqa` / `tasks.hcl` offer)
validate, build_model, build_inputs, train = TASK.validate, TASK.build_model, TASK.build_inputs, TASK.train
