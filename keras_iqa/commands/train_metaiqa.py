"""`keras-iqa train metaiqa`: meta-train MetaIQA on distortion-specific tasks, fine-tune on a target set, evaluate.

Protocols: `meta` (synthetic -> authentic, Table 3: meta-train on every --meta-data set, fine-tune on --data's training split,
test on its test split), `lodo` (leave-one-distortion-out, Table 2: meta-train on the other N-1 types, test on every image
of the held-out type; `lodo_finetune=true` adds a reference-disjoint fine-tuning on it, not in the paper) and `baseline` (Table 4: plain Adam on all synthetic
images, then the same fine-tuning). Python API: `keras_iqa.training.meta`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from keras_iqa.commands import add_config_args, add_distribute_arg, add_precision_arg, formatter


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
    resize: Optional[list] = None          # [h, w] or short side before the training crops (support, query crops and
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


def register(sub):
    p = sub.add_parser(
        "metaiqa",
        help="MetaIQA (bi-level meta-learning on distortion tasks, then fine-tuning)",
        description="Meta-train MetaIQA (Zhu et al., CVPR 2020) on distortion-specific tasks of synthetic datasets, fine-tune\n"
        "the prior on a target dataset and evaluate it. Algorithm 1: k tasks per meta-batch, S Adam steps on each task's\n"
        "support set then S on its query set (fresh Adam state per phase), theta <- theta - beta * mean(theta - theta_i).\n"
        "Writes a run directory: config.json, meta/ (history.csv, checkpoints, meta_state/ for resume, meta.weights.h5),\n"
        "finetune/ (history.csv, checkpoints), model.keras and results.json. Re-running with the same --out resumes.",
        epilog="Examples:\n"
        "  # Table 3, synthetic -> authentic: TID2013 + KADID-10k tasks, fine-tune and test on CLIVE split_00\n"
        "  keras-iqa train metaiqa --meta-data records/tid2013 --meta-data records/kadid10k \\\n"
        "      --data records/clive --out runs/meta\n"
        "  # Table 2, leave-one-distortion-out on TID2013 (one held-out type)\n"
        "  keras-iqa train metaiqa --protocol lodo --meta-data records/tid2013 --held-out 'gaussian blur' --out runs/lodo\n"
        "  # Table 4 baseline: plain Adam on all synthetic images, then the same fine-tuning\n"
        "  keras-iqa train metaiqa --protocol baseline --meta-data records/kadid10k --data records/koniq10k --out runs/base\n"
        "  # the released code's settings; generated data labelled by a full-reference metric\n"
        "  keras-iqa train metaiqa --preset official --meta-data records/kadis --meta-target pseudo --out runs/off\n"
        "  # smoke run\n"
        "  keras-iqa train metaiqa --model metaiqa-tiny --crop-size 32 --meta-data tiny/syn --data tiny/auth --out /tmp/r \\\n"
        "      --set meta_epochs=1 --set finetune_epochs=1\n",
        formatter_class=formatter(),
    )
    p.add_argument("--meta-data", action="append", default=[], metavar="DIR",
                   help="prepared synthetic dataset(s) with distortion types: one task per type (repeatable)")
    p.add_argument("--data", metavar="DIR", help="prepared target dataset: fine-tune on --split train, test on --split test")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (re-run to resume)")
    p.add_argument("--model", help="registry card (metaiqa | metaiqa-official | metaiqa-tiny)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="paper defaults or the released code's")
    p.add_argument("--protocol", choices=("meta", "lodo", "baseline"), help="meta (default) | lodo | baseline")
    p.add_argument("--meta-target", choices=("normalized", "pseudo", "mos"), help="meta-training target (default normalized)")
    p.add_argument("--split", metavar="COL", help="split column of the target's splits.csv (default split_00)")
    p.add_argument("--held-out", action="append", metavar="TYPE", help="lodo: held-out distortion name or type (repeatable)")
    p.add_argument("--crop-size", type=int, metavar="PX", help="training crop size (default: the card's, 224)")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per fine-tuning / baseline step")
    p.add_argument("--meta-epochs", type=int, metavar="N", help="meta-training epochs")
    p.add_argument("--finetune-epochs", type=int, metavar="N", help="fine-tuning epochs on --data")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default 0)")
    add_precision_arg(p, note=" (default fp32 here)")
    add_distribute_arg(p, note=": each meta-batch's tasks are spread over the replicas (adam_state=fresh), the "
                       "fine-tuning's batches as in Keras fit")
    add_config_args(p)
    p.set_defaults(func=run)


def _config(args) -> MetaIQATrainConfig:
    from keras_iqa.config import load_config

    flags = {"model": args.model, "protocol": args.protocol, "meta_target": args.meta_target, "split": args.split,
             "held_out": args.held_out, "crop_size": args.crop_size, "batch_size": args.batch_size,
             "meta_epochs": args.meta_epochs, "finetune_epochs": args.finetune_epochs, "seed": args.seed,
             "precision": args.precision, "distribute": args.distribute}
    overrides = {**PRESETS[args.preset], **{k: v for k, v in flags.items() if v is not None}}
    cfg = load_config(MetaIQATrainConfig, files=args.config, sets=args.set, overrides=overrides)
    if cfg.protocol not in ("meta", "lodo", "baseline"):
        raise ValueError(f"protocol must be meta, lodo or baseline, got {cfg.protocol!r}")
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {cfg.precision!r}")
    if cfg.distribute not in ("auto", "mirrored", "multiworker"):
        raise ValueError(f"distribute must be auto, mirrored or multiworker, got {cfg.distribute!r}")
    if cfg.distribute != "auto" and cfg.adam_state != "fresh":
        raise ValueError(f"--distribute {cfg.distribute} spreads each meta-batch's tasks over the replicas, which needs "
                         "adam_state=fresh (the paper's): the persistent Adam state of the official code runs through the "
                         "tasks one after another (use --set adam_state=fresh, or one device)")
    if cfg.eval_mode not in ("random", "grid", "resize"):
        raise ValueError(f"eval_mode must be random, grid or resize, got {cfg.eval_mode!r}")
    if cfg.finetune_resize is None and cfg.resize:
        cfg.finetune_resize = cfg.resize  # fine-tuning crops are taken at the training scale too
    return cfg


def set_test_contract(model, cfg: MetaIQATrainConfig):
    """The model's test-time contract from the training config, set before training (so the meta-epoch evaluation,
    `model.keras`, `score`, the SavedModel and TFLite use it): `eval_crops` crops (`eval_mode`) after the training
    `resize`. Paper default: 25 random 224 crops at the native resolution, the scale the model trains at; official preset:
    the whole image resized to 224x224, one pass (and 256x256 resize before the training crops)."""
    from keras_iqa.models.base import _resize_value

    model.crop_policy = cfg.eval_mode
    model.test_crops = 1 if cfg.eval_mode == "resize" else int(cfg.eval_crops)
    model.test_resize = _resize_value(cfg.resize)
    return model


def _with_test_contract(build, cfg: MetaIQATrainConfig):
    """`build` whose models carry the config's test-time contract (`set_test_contract`)."""

    def wrapped():
        return set_test_contract(build(), cfg)

    wrapped.__dict__.update(getattr(build, "__dict__", {}))
    return wrapped


def _restricted_reader(data_dir: str, ids, cfg: MetaIQATrainConfig):
    """A reader over exactly `ids` of a prepared dataset (e.g. one distortion type)."""
    r = _reader_cls()(data_dir, split=cfg.split, subset=None, target=cfg.meta_target)
    r.ids, r.count, r._index_cache = [str(i) for i in ids], len(ids), None
    return r


def _lodo_data(cfg: MetaIQATrainConfig):
    """`held_out_data` of `leave_one_distortion_out`: every image of the held-out type as a reader (the model's test-time
    contract applies), or with fine-tuning a reference-disjoint fine-tune / test split of them."""
    from keras_iqa.training.meta import lodo_reference_split

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


def _reader_cls():
    try:
        from data_pipeline.input import RecordReader
    except ImportError as e:  # pragma: no cover - the data pipeline ships with the package
        raise RuntimeError(f"the data pipeline reader is not available ({e})") from e
    return RecordReader


def _builder(cfg):
    import keras_iqa
    from keras_iqa.registry import get_card

    card = get_card(cfg.model)
    base = card.config()
    over = {"crop_size": cfg.crop_size}
    if cfg.head:
        over["head"] = cfg.head
    weights = cfg.backbone_weights
    if weights == "auto":
        weights = "imagenet" if (base.width == 1.0 and base.blocks is None) else None
    over["backbone_weights"] = weights

    def build():
        return keras_iqa.create_model(cfg.model, **over)

    build.backbone_weights = weights  # read by `run` for lr=auto
    return build


def _meta_tasks(cfg, dirs):
    RecordReader = _reader_cls()
    tasks = []
    for d in dirs:
        reader = RecordReader(d, split=cfg.split, subset=None, target=cfg.meta_target)
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
        raise ValueError(f"no MetaIQA task could be built from {dirs}: they need synthetic records with distortion types")
    return tasks


def run(args) -> int:
    from keras_iqa.config import to_dict
    from keras_iqa.training.runner import RunDir

    cfg = _config(args)
    if not args.meta_data:
        raise ValueError("--meta-data DIR is required (a prepared synthetic dataset with distortion types, e.g. kadid10k)")
    if cfg.protocol == "baseline" and not args.data:
        raise ValueError("--protocol baseline needs --data (the target set to fine-tune and test on)")
    from keras_iqa.training.cpu import configure_cpu

    cpu = configure_cpu(cfg.precision)  # dtype policy (--precision) and the benchmarked CPU thread defaults
    from keras_iqa.training.runner import check_global_batch, get_strategy

    strategy = get_strategy(cfg.distribute)  # first: a multi-worker strategy must precede other TensorFlow work
    check_global_batch(cfg.batch_size, strategy)
    run_dir = RunDir.create(args.out, config={**to_dict(cfg), "meta_data": args.meta_data, "data": args.data}, seed=cfg.seed,
                            strategy=strategy)
    with strategy.scope():  # models, optimizers, meta-training and fine-tuning under --distribute
        return _run(args, cfg, cpu, run_dir, strategy)


def _run(args, cfg, cpu, run_dir, strategy) -> int:
    import json

    from keras_iqa.config import to_dict
    from keras_iqa.training import meta as M
    from keras_iqa.training.runner import RunDir, atomic_write, shard_by_data

    verbose = 0 if args.quiet else 1
    build = _with_test_contract(_builder(cfg), cfg)
    tasks = _meta_tasks(cfg, args.meta_data)
    print(f"{len(tasks)} meta-training tasks: {', '.join(t['name'] for t in tasks[:8])}{' ...' if len(tasks) > 8 else ''}")
    meta_kw = dict(inner_steps=cfg.inner_steps, inner_lr=cfg.inner_lr, outer_lr=cfg.outer_lr, beta_1=cfg.beta_1,
                   beta_2=cfg.beta_2, epsilon=cfg.epsilon, weight_decay=cfg.weight_decay, adam_state=cfg.adam_state)
    fit_kw = dict(epochs=cfg.meta_epochs, tasks_per_batch=cfg.tasks_per_batch, lr_schedule=cfg.lr_schedule, seed=cfg.seed,
                  verbose=verbose)
    from keras_iqa.training.lr import RANDOM_INIT, is_pretrained, resolve_lr

    ft_lr = resolve_lr(cfg.finetune_lr, M.FINETUNE_PRESETS[cfg.finetune_preset]["lr"], RANDOM_INIT["metaiqa"]["finetune_lr"],
                       is_pretrained(build.backbone_weights), "metaiqa")  # lr=auto (docs/heads.md)
    tune_kw = dict(preset=cfg.finetune_preset, epochs=cfg.finetune_epochs, lr=ft_lr, verbose=verbose)
    results = {"protocol": cfg.protocol, "config": to_dict(cfg), "cpu": cpu}

    if cfg.protocol == "lodo":
        df = M.leave_one_distortion_out(tasks, build, held_out=cfg.held_out, meta=meta_kw, fit=fit_kw, tune=tune_kw,
                                        finetune_on_held_out=cfg.lodo_finetune, held_out_data=_lodo_data(cfg))
        df.to_csv(run_dir.path / "lodo.csv", index=False)
        results.update(per_type=df.to_dict("records"), mean_srocc=float(df["srocc"].mean()),
                       mean_plcc=float(df["plcc"].mean()))  # pandas skips NaN (types with < 3 test images)
        run_dir.save_results(results)
        print(df.to_string(index=False))
        return 0

    target_train = target_test = None
    if args.data:
        RecordReader = _reader_cls()
        tr = RecordReader(args.data, split=cfg.split, subset="train", target="normalized")
        target_test = RecordReader(args.data, split=cfg.split, subset="test", target="normalized")
        # repeated, with an explicit epoch length: a one-pass reader dataset has unknown cardinality (records that fail to
        # decode are skipped), so Keras ran it dry and warned "Your input ran out of data; interrupting training"
        target_train = shard_by_data(tr.train_dataset(cfg.batch_size, crop_size=cfg.crop_size, resize=cfg.finetune_resize,
                                                      seed=cfg.seed, repeat=True, drop_remainder=False))
        tune_kw["steps_per_epoch"] = max(1, tr.steps_per_epoch(cfg.batch_size))

    if cfg.protocol == "baseline":
        out = M.baseline_then_finetune(tasks, build, target_train, target_test, pretrain_epochs=cfg.baseline_epochs,
                                       pretrain_lr=cfg.inner_lr, tune=tune_kw, verbose=verbose)
        model = out["model"]
        results.update(test=out["test"], pretrain=out["pretrain"])
    else:
        model = build()
        meta_run = RunDir.create(run_dir.shared / "meta", config=to_dict(cfg), strategy=strategy)
        learner = M.MetaLearner(model, **meta_kw)
        hist = learner.fit_meta(tasks, callbacks=meta_run.callbacks(backup=False, tensorboard=False),
                                checkpoint_dir=meta_run.shared / "meta_state", **fit_kw)
        atomic_write(meta_run.path / "meta.weights.h5", lambda p: model.save_weights(p), suffix=".weights.h5")
        results["meta_history"] = hist
        results["meta_traces"] = dict(learner.trace_counts)
        if target_train is not None:
            ft_run = RunDir.create(run_dir.shared / "finetune", config=to_dict(cfg), strategy=strategy)
            M.finetune(model, target_train, run=ft_run, **tune_kw)
            results["test"] = M.evaluate_model(model, target_test)
    run_dir.save_final(model)
    run_dir.save_results(results)
    if "test" in results:
        print("test:", json.dumps({k: v for k, v in results["test"].items() if not k.endswith("_error")}))
    print(f"run directory: {run_dir.path}")
    return 0
