"""REQA (Li & Huo, "Coarse-to-fine Assessment of Image Quality to Alleviate the Range Effect").

Forward pass (docs/methods/reqa.md, Model): ImageNet normalisation -> ResNet-50 v1.5 taps stage1..stage4 ->
- feedback network (FN): one `FeedbackBlock` (ConvLSTM, 1x1 conv+BN gates) per scale d = 1, 2, 3 with hidden 16 / 32 / 64, run T
  steps on the same tap; each step's hidden state pooled (7/7) and projected to 32 -> v_{d,t};
- transformer encoder (TE): `QualityTransformer` on stage 4 -> v_m (128), shared by all steps;
- for each t: MLP-III 224-112-56-28-14-1 (ReLU after every layer, final ReLU included, He-normal) on [v_{1,t}, v_{2,t}, v_{3,t}, v_m],
  times 10 (targets on 0-100).
`call` returns [B, T] (every step's score); `score()` returns the last step (the official code's `preds[2]` for T = 4).

Ablations (paper Table V): `feedback=False` (w/o FN: the head sees v_m only; every step gives the same score),
`transformer=False` (w/o TE: the head sees the three v_{d,t}), both False (ResNet-50 + GAP of stage 4 -> head), `steps` = 2..5.

Training (`compile` + `fit`): a custom `train_step` for (images [5M], targets [5M]) micro-batches
(`RecordReader.reqa_microbatches`): total loss Eq. 14 = Σ w_t L_t with the coarse loss (Eq. 9-12, or the official whole-batch
`RankLoss1`) on step 1 and the fine tolerance losses (Eq. 13) on steps 2..T; the weights w live in the non-trainable variable
`curriculum_weights` (switched by `keras_iqa.training.curriculum.CurriculumSchedule`); two Adam optimizers (backbone 2e-5, rest
2e-4) with coupled L2 weight decay (5e-4 · w added to each gradient, as torch `Adam(weight_decay=...)`).

Example:
>>> import tempfile
>>> import keras_iqa
>>> from data_pipeline.fixtures import write_tiny_records
>>> from data_pipeline.input import RecordReader
>>> from keras_iqa.training.curriculum import CurriculumSchedule
>>> data_dir = tempfile.mkdtemp()  # a tiny prepared dataset; a real one comes from `keras-iqa prepare`
>>> write_tiny_records(data_dir, kind="authentic", n=20)["count"]
20
>>> reader = RecordReader(data_dir, split="split_00", subset="train", target="normalized100")
>>> model = keras_iqa.create_model("reqa-tiny")
>>> model.compile()
>>> history = model.fit(reader.reqa_microbatches(3, crop_size=64), steps_per_epoch=2, epochs=2, verbose=0,
...                     callbacks=[CurriculumSchedule.preset("paper", stage_epochs=1)])
>>> len(history.history["loss"]), sorted(k for k in history.history if k.startswith("w_"))
(2, ['w_1', 'w_2', 'w_3', 'w_4'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import keras
import tensorflow as tf
from keras import ops

from keras_iqa import losses as L
from keras_iqa.backbones import resnet_features
from keras_iqa.layers.feedback import FeedbackBlock
from keras_iqa.layers.preprocessing import ImageNetNormalization
from keras_iqa.layers.transformer import QualityTransformer
from keras_iqa.models.base import IQAModel
from keras_iqa.registry import InputContract, ModelCard, register
from keras_iqa.optimizers import FusedAdam, apply_optimizer_groups, build_optimizer_groups, scale_for_replicas

PAPER = ("C. Li, J. Huo (and co-authors). Coarse-to-fine Assessment of Image Quality to Alleviate the Range Effect "
         "(REQA), IEEE TMM / arXiv")
COARSE_MODES = ("paper", "official")


@dataclass
class REQAConfig:
    """Model config of REQA (defaults = paper / official architecture, docs/methods/reqa.md, Model).

    Args:
        depth, backbone_weights, width, blocks: ResNet backbone (`keras_iqa.backbones.resnet_features`); width/blocks shrink it
            for tests. backbone_weights: None (random), "imagenet" or a preset directory.
        steps: T, recurrent steps of the feedback blocks (4).
        hidden: ConvLSTM hidden channels per scale (16, 32, 64).
        pool_size: average pool on h_t (7 at 224 px; use crop_size // 32 for other sizes).
        proj_dim: v_{d,t} size (32).
        feedback, transformer: Table V ablations (False = without FN / without TE).
        dim, heads, depth_te, mlp_dim, context_dim, dropout, norm_first: the quality transformer (224, 14, 1, 176, 128, 0.1, pre-LN).
        head_units: MLP-III hidden widths (112, 56, 28, 14); final ReLU and `score_scale` (10) as in the code.
        crop_size, score_range, test_crops, crop_policy: test-time contract (224, 0-100, 25 random crops).
    """

    depth: int = 50
    backbone_weights: Optional[str] = None
    width: float = 1.0
    blocks: Optional[tuple] = None
    steps: int = 4
    hidden: tuple = (16, 32, 64)
    pool_size: int = 7
    proj_dim: int = 32
    feedback: bool = True
    transformer: bool = True
    dim: int = 224
    heads: int = 14
    depth_te: int = 1
    mlp_dim: int = 176
    context_dim: int = 128
    dropout: float = 0.1
    norm_first: bool = True
    head_units: tuple = (112, 56, 28, 14)
    final_relu: bool = True
    score_scale: float = 10.0
    crop_size: int = 224
    score_range: tuple = (0.0, 100.0)
    test_crops: int = 25
    crop_policy: str = "random"


@keras.saving.register_keras_serializable(package="keras_iqa")
class REQA(IQAModel):
    """REQA model (see the module docstring). Arguments: the fields of `REQAConfig` (plus `IQAModel`'s)."""

    def __init__(self, depth=50, backbone_weights=None, width=1.0, blocks=None, steps=4, hidden=(16, 32, 64), pool_size=7,
                 proj_dim=32, feedback=True, transformer=True, dim=224, heads=14, depth_te=1, mlp_dim=176, context_dim=128,
                 dropout=0.1, norm_first=True, head_units=(112, 56, 28, 14), final_relu=True, score_scale=10.0,
                 score_range=(0.0, 100.0), crop_size=224, test_crops=25, crop_policy="random", **kwargs):
        kwargs.setdefault("name", "reqa")
        super().__init__(score_range=score_range, crop_size=crop_size, test_crops=test_crops, crop_policy=crop_policy,
                         higher_better=kwargs.pop("higher_better", True), **kwargs)
        if int(steps) < 1:
            raise ValueError(f"REQA steps (T) must be >= 1, got {steps!r}")
        if len(tuple(hidden)) != 3:
            raise ValueError(f"REQA hidden must hold 3 sizes (scales 1-3), got {hidden!r}")
        self.depth, self.backbone_weights, self.width = int(depth), backbone_weights, float(width)
        self.blocks = tuple(int(b) for b in blocks) if blocks is not None else None
        self.steps, self.hidden = int(steps), tuple(int(h) for h in hidden)
        self.pool_size, self.proj_dim = int(pool_size), int(proj_dim)
        self.use_feedback, self.use_transformer = bool(feedback), bool(transformer)
        self.dim, self.heads, self.depth_te, self.mlp_dim = int(dim), int(heads), int(depth_te), int(mlp_dim)
        self.context_dim, self.dropout, self.norm_first = int(context_dim), float(dropout), bool(norm_first)
        self.head_units, self.final_relu, self.score_scale = tuple(int(u) for u in head_units), bool(final_relu), float(score_scale)

        self.normalize = ImageNetNormalization(name="imagenet_norm")
        self.backbone = resnet_features(depth=self.depth, weights=backbone_weights, width=self.width, blocks=self.blocks,
                                        name="backbone")
        self.feedback_blocks = [FeedbackBlock(h, self.steps, self.pool_size, self.proj_dim, name=f"feedback{d + 1}")
                                for d, h in enumerate(self.hidden)] if self.use_feedback else []
        self.quality_transformer = QualityTransformer(self.dim, self.heads, self.depth_te, self.mlp_dim, self.context_dim,
                                                      self.dropout, norm_first=self.norm_first,
                                                      name="transformer") if self.use_transformer else None
        self.gap = None if (self.use_feedback or self.use_transformer) else keras.layers.GlobalAveragePooling2D(name="gap")
        he = keras.initializers.HeNormal()
        self.head_layers = [keras.layers.Dense(u, activation="relu", kernel_initializer=he, name=f"mlp3_fc{k + 1}")
                            for k, u in enumerate(self.head_units)]
        # the score layer (ours, docs/heads.md): float32 under mixed precision (bf16 would quantise scores to 0.25-0.5 MOS);
        # bias at the score-range midpoint / score_scale (5 on 0-100) and a small kernel, so a fresh model starts mid-range
        # with a small spread and the official final ReLU is alive from the first step (bias 0 kills it at random init)
        lo, hi = self.score_range
        self.head_layers.append(keras.layers.Dense(
            1, activation="relu" if self.final_relu else None, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer=keras.initializers.Constant((lo + hi) / 2.0 / self.score_scale),
            name=f"mlp3_fc{len(self.head_units) + 1}", dtype="float32"))
        self.curriculum_weights = self.add_weight(shape=(self.steps,), initializer="zeros", trainable=False,
                                                  name="curriculum_weights", dtype="float32")
        self.curriculum_weights.assign(L.reqa_step_weights(L.REQA_OFFICIAL_WEIGHTS, self.steps))
        self._coarse, self._group_size, self._weight_decay = "paper", 5, 5e-4
        self.backbone_optimizer = None
        self.loss_trackers = [keras.metrics.Mean(name=k) for k in self.loss_names()]

    # ------------------------------------------------------------------------------------------------------------ forward
    def _head(self, v):
        for layer in self.head_layers[:-1]:
            v = layer(v)
        v = self.head_layers[-1](ops.cast(v, "float32"))  # the score layer and its x score_scale in float32
        return v[..., 0] * self.score_scale

    def call(self, images, training=None):
        feats = self.backbone(self.normalize(images), training=training)
        parts = []  # each [B, T, k]
        if self.use_feedback:
            vs = [blk(feats[f"stage{d + 1}"], training=training) for d, blk in enumerate(self.feedback_blocks)]
            parts.extend(vs)
        if self.use_transformer:
            vm = self.quality_transformer(feats["stage4"], training=training)
            parts.append(ops.repeat(ops.expand_dims(vm, 1), self.steps, axis=1) if self.use_feedback else vm[:, None])
        if not parts:
            parts = [self.gap(feats["stage4"])[:, None]]
        v = ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        s = self._head(v)  # [B, T] or [B, 1]
        if s.shape[-1] != self.steps:  # without FN every step is the same prediction
            s = ops.repeat(s, self.steps, axis=1)
        return ops.cast(s, "float32")

    def score(self, crops):
        """Final (last-step) score per crop, [B], on 0-100."""
        return self(crops, training=False)[:, -1]

    # ------------------------------------------------------------------------------------------------------------ training
    def compile(self, optimizer=None, backbone_optimizer=None, coarse="paper", group_size=5, weight_decay=5e-4,
                lr=2e-4, backbone_lr=2e-5, **kwargs):
        """Two Adam optimizers (rest: `optimizer` or Adam(lr); backbone: `backbone_optimizer` or Adam(backbone_lr)),
        the coarse loss mode ("paper" Eq. 9-12 on micro-batches of `group_size`, or "official" whole-batch `RankLoss1`)
        and the coupled L2 `weight_decay` (added to gradients). Curriculum weights: `curriculum_weights` / `CurriculumSchedule`."""
        if coarse not in COARSE_MODES:
            raise ValueError(f"coarse must be one of {COARSE_MODES}, got {coarse!r}")
        optimizer = optimizer if optimizer is not None else FusedAdam(lr)
        self.backbone_optimizer = backbone_optimizer if backbone_optimizer is not None else FusedAdam(backbone_lr)
        self._coarse, self._group_size, self._weight_decay = coarse, int(group_size), float(weight_decay)
        kwargs.pop("loss", None)
        super().compile(optimizer=optimizer, **kwargs)
        if self.built:  # each optimizer on its own group, now (under the strategy scope when there is one)
            build_optimizer_groups(self.optimizer_groups())

    def loss_names(self):
        return ["loss", "coarse"] + [f"fine_{t}" for t in range(2, self.steps + 1)]

    @property
    def metrics(self):
        return list(self.loss_trackers)

    def _split_vars(self):
        bb = {id(v) for v in self.backbone.trainable_variables}
        return ([v for v in self.trainable_variables if id(v) in bb],
                [v for v in self.trainable_variables if id(v) not in bb])

    def compute_loss_terms(self, y, preds):
        """[total, coarse, fine_2, ..., fine_T] for targets [B] and step predictions [B, T]."""
        steps = ops.transpose(ops.cast(preds, "float32"))
        terms = L.reqa_loss_terms(y, [steps[t] for t in range(self.steps)], coarse=self._coarse, group_size=self._group_size)
        w = self.curriculum_weights
        total = L.reqa_total_loss(terms, [w[t] for t in range(self.steps)])
        return [total] + terms

    def _logs(self, values):
        for m, v in zip(self.loss_trackers, values):
            m.update_state(v)
        logs = {m.name: m.result() for m in self.loss_trackers}
        for t in range(self.steps):
            logs[f"w_{t + 1}"] = self.curriculum_weights[t]
        return logs

    def optimizer_groups(self):
        """[(backbone optimizer, backbone variables), (optimizer, the rest)]: what each optimizer updates and is built on."""
        bb_vars, rest_vars = self._split_vars()
        return [(self.backbone_optimizer, bb_vars), (self.optimizer, rest_vars)]

    def train_step(self, data):
        """One step on this replica's share of the batch: whole micro-batches of `group_size` (the input pipeline keeps
        them intact, `keras-iqa train reqa` checks it); the loss is scaled by 1/replicas (Keras's rule, the optimizers SUM
        the replicas' gradients), the coupled L2 term too, so N replicas take the same step as one device on the global batch."""
        x, y = data[0], data[1]
        groups = self.optimizer_groups()
        with tf.GradientTape() as tape:
            preds = self(x, training=True)
            values = self.compute_loss_terms(y, preds)
            scaled = scale_for_replicas(values[0])
        wd = self._weight_decay
        extra = None if wd == 0 else (lambda g, v: ops.cast(wd, g.dtype) * ops.cast(v, g.dtype))
        apply_optimizer_groups(tape, scaled, groups, extra_gradient=extra)
        logs = self._logs(values)
        logs["lr"] = ops.convert_to_tensor(self.optimizer.learning_rate)
        logs["lr_backbone"] = ops.convert_to_tensor(self.backbone_optimizer.learning_rate)
        return logs

    def test_step(self, data):
        x, y = data[0], data[1]
        values = self.compute_loss_terms(y, self(x, training=False))
        return self._logs(values)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(depth=self.depth, backbone_weights=None, width=self.width,
                   blocks=list(self.blocks) if self.blocks else None, steps=self.steps, hidden=list(self.hidden),
                   pool_size=self.pool_size, proj_dim=self.proj_dim, feedback=self.use_feedback,
                   transformer=self.use_transformer, dim=self.dim, heads=self.heads, depth_te=self.depth_te,
                   mlp_dim=self.mlp_dim, context_dim=self.context_dim, dropout=self.dropout, norm_first=self.norm_first,
                   head_units=list(self.head_units), final_relu=self.final_relu, score_scale=self.score_scale)
        return cfg  # weights come from the saved file, so the backbone is rebuilt without downloading a preset

    def get_compile_config(self):
        cfg = super().get_compile_config() or {}
        bo = self.backbone_optimizer
        return {**cfg, "coarse": self._coarse, "group_size": self._group_size, "weight_decay": self._weight_decay,
                "backbone_optimizer": keras.optimizers.serialize(bo) if bo is not None else None}

    def compile_from_config(self, config):
        """Re-compiles a loaded model: both optimizers are rebuilt so `load_model` restores their slot variables."""
        cfg = dict(config or {})
        opt, bopt = cfg.pop("optimizer", None), cfg.pop("backbone_optimizer", None)
        self.compile(optimizer=keras.optimizers.deserialize(opt) if opt else None,
                     backbone_optimizer=keras.optimizers.deserialize(bopt) if bopt else None,
                     coarse=cfg.get("coarse", "paper"), group_size=cfg.get("group_size", 5),
                     weight_decay=cfg.get("weight_decay", 5e-4))
        if self.built:
            build_optimizer_groups(self.optimizer_groups())


def build_reqa(cfg: REQAConfig) -> REQA:
    """Builds (and builds the variables of) a REQA model from its config."""
    model = REQA(depth=cfg.depth, backbone_weights=cfg.backbone_weights, width=cfg.width, blocks=cfg.blocks, steps=cfg.steps,
                 hidden=cfg.hidden, pool_size=cfg.pool_size, proj_dim=cfg.proj_dim, feedback=cfg.feedback,
                 transformer=cfg.transformer, dim=cfg.dim, heads=cfg.heads, depth_te=cfg.depth_te, mlp_dim=cfg.mlp_dim,
                 context_dim=cfg.context_dim, dropout=cfg.dropout, norm_first=cfg.norm_first, head_units=cfg.head_units,
                 final_relu=cfg.final_relu, score_scale=cfg.score_scale, score_range=cfg.score_range,
                 crop_size=cfg.crop_size, test_crops=cfg.test_crops, crop_policy=cfg.crop_policy)
    model(ops.zeros((1, cfg.crop_size, cfg.crop_size, 3)))
    return model


_INPUT = InputContract(crop_size=224, test_crops="25 random 224x224 crops averaged (official protocol)")
TINY = {"width": 0.125, "blocks": (1, 1, 1, 1), "pool_size": 2, "hidden": (4, 4, 4), "proj_dim": 8, "dim": 16, "heads": 2,
        "mlp_dim": 16, "context_dim": 8, "head_units": (16, 8), "crop_size": 64, "test_crops": 2}

register(ModelCard(
    name="reqa", builder=build_reqa, config_cls=REQAConfig, paper=PAPER, input=_INPUT,
    description="REQA: ResNet-50 + ConvLSTM feedback (T=4) + quality transformer, coarse-to-fine; `keras-iqa train reqa` "
                "(paper protocol: micro-batches of 5, 4-stage curriculum)",
))
register(ModelCard(
    name="reqa-official", builder=build_reqa, config_cls=REQAConfig, paper=PAPER, input=_INPUT,
    description="REQA with the official-code training preset (same network; train with `keras-iqa train reqa --preset "
                "official`: batches of 16, whole-batch RankLoss1, constant weights 0.25/0.125/0.25/0.375)",
))
register(ModelCard(
    name="reqa-tiny", builder=build_reqa, config_cls=REQAConfig, defaults=TINY, paper=PAPER,
    input=InputContract(crop_size=64, test_crops="2 random 64x64 crops averaged"),
    description="a tiny REQA (64 px, 1/8-width ResNet) for tests and smoke runs",
))
