"""The REQA model (Li & Huo, "Coarse-to-fine Assessment of Image Quality to Alleviate the Range Effect").

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

import dataclasses

import keras
import tensorflow as tf
from keras import ops

from keras_iqa import losses as L
from keras_iqa.backbones import resnet_features
from keras_iqa.layers.feedback import FeedbackBlock
from keras_iqa.layers.preprocessing import ImageNetNormalization
from keras_iqa.layers.transformer import QualityTransformer
from keras_iqa.models.base import IQAModel, config_json, split_config
from keras_iqa.models.reqa.reqa_config import COARSE_MODES, REQAConfig
from keras_iqa.models.two_optimizer import TwoOptimizerModel
from keras_iqa.optimizers import FusedAdam, scale_for_replicas


@keras.saving.register_keras_serializable(package="keras_iqa")
class REQA(TwoOptimizerModel, IQAModel):
    """REQA model (see the module docstring). Arguments: the fields of `REQAConfig` (plus `IQAModel`'s); the fields are
    also attributes (`model.steps`, `model.hidden`, ...) and `model.model_config` is the config itself."""

    def __init__(self, **kwargs):
        cfg, kwargs = split_config(REQAConfig, kwargs)
        kwargs.setdefault("name", "reqa")
        super().__init__(**kwargs)
        self.use_model_config(cfg)

        self.normalize = ImageNetNormalization(name="imagenet_norm")
        self.backbone = resnet_features(depth=cfg.depth, weights=cfg.backbone_weights, width=cfg.width, blocks=cfg.blocks,
                                        name="backbone")
        self.feedback_blocks = [FeedbackBlock(h, cfg.steps, cfg.pool_size, cfg.proj_dim, name=f"feedback{d + 1}")
                                for d, h in enumerate(cfg.hidden)] if cfg.feedback else []
        self.quality_transformer = QualityTransformer(cfg.dim, cfg.heads, cfg.depth_te, cfg.mlp_dim, cfg.context_dim,
                                                      cfg.dropout, norm_first=cfg.norm_first,
                                                      name="transformer") if cfg.transformer else None
        self.gap = None if (cfg.feedback or cfg.transformer) else keras.layers.GlobalAveragePooling2D(name="gap")
        he = keras.initializers.HeNormal()
        self.head_layers = [keras.layers.Dense(u, activation="relu", kernel_initializer=he, name=f"mlp3_fc{k + 1}")
                            for k, u in enumerate(cfg.head_units)]
        # the score layer (ours, docs/heads.md): float32 under mixed precision (bf16 would quantise scores to 0.25-0.5 MOS);
        # bias at the score-range midpoint / score_scale (5 on 0-100) and a small kernel, so a fresh model starts mid-range
        # with a small spread and the official final ReLU is alive from the first step (bias 0 kills it at random init)
        lo, hi = self.score_range
        self.head_layers.append(keras.layers.Dense(
            1, activation="relu" if cfg.final_relu else None, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer=keras.initializers.Constant((lo + hi) / 2.0 / cfg.score_scale),
            name=f"mlp3_fc{len(cfg.head_units) + 1}", dtype="float32"))
        self.curriculum_weights = self.add_weight(shape=(cfg.steps,), initializer="zeros", trainable=False,
                                                  name="curriculum_weights", dtype="float32")
        self.curriculum_weights.assign(L.reqa_step_weights(L.REQA_OFFICIAL_WEIGHTS, cfg.steps))
        self._coarse, self._group_size, self._weight_decay = "paper", 5, 5e-4
        self.loss_trackers = [keras.metrics.Mean(name=k) for k in self.loss_names()]

    @property
    def use_feedback(self) -> bool:
        """Whether the feedback network is on (`REQAConfig.feedback`)."""
        return self.model_config.feedback

    @property
    def use_transformer(self) -> bool:
        """Whether the quality transformer is on (`REQAConfig.transformer`)."""
        return self.model_config.transformer

    @classmethod
    def from_model_config(cls, cfg: REQAConfig, **kwargs) -> "REQA":
        """A REQA model of the config `cfg` (kwargs: `IQAModel` / Keras arguments such as `name`)."""
        return cls(**dataclasses.asdict(cfg), **kwargs)

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

    def crop_scores(self, crops):
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
        self._coarse, self._group_size, self._weight_decay = coarse, int(group_size), float(weight_decay)
        kwargs.pop("loss", None)
        super().compile(optimizer=optimizer if optimizer is not None else FusedAdam(lr),
                        backbone_optimizer=backbone_optimizer if backbone_optimizer is not None else FusedAdam(backbone_lr),
                        **kwargs)

    def loss_names(self):
        return ["loss", "coarse"] + [f"fine_{t}" for t in range(2, self.steps + 1)]

    @property
    def metrics(self):
        return list(self.loss_trackers)

    def backbone_variables(self):
        """The ResNet backbone's trainable variables (the backbone optimizer's group)."""
        return self.backbone.trainable_variables

    def extra_gradient(self):
        """Coupled L2 (torch `Adam(weight_decay=...)`): `weight_decay * w` added to each gradient."""
        wd = self._weight_decay
        return None if wd == 0 else (lambda g, v: ops.cast(wd, g.dtype) * ops.cast(v, g.dtype))

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

    def train_step(self, data):
        """One step on this replica's share of the batch: whole micro-batches of `group_size` (the input pipeline keeps
        them intact, `keras-iqa train reqa` checks it); the loss is scaled by 1/replicas (Keras's rule, the optimizers SUM
        the replicas' gradients), the coupled L2 term too, so N replicas take the same step as one device on the global batch."""
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            preds = self(x, training=True)
            values = self.compute_loss_terms(y, preds)
            scaled = scale_for_replicas(values[0])
        self.apply_optimizers(tape, scaled)
        logs = self._logs(values)
        logs["lr"] = ops.convert_to_tensor(self.optimizer.learning_rate)
        logs["lr_backbone"] = ops.convert_to_tensor(self.backbone_optimizer.learning_rate)
        return logs

    def test_step(self, data):
        x, y = data[0], data[1]
        values = self.compute_loss_terms(y, self(x, training=False))
        return self._logs(values)

    def get_config(self):
        return {**super().get_config(), **config_json(self.model_config)}

    def get_compile_config(self):
        return {**super().get_compile_config(), "coarse": self._coarse, "group_size": self._group_size,
                "weight_decay": self._weight_decay}


def build_reqa(cfg: REQAConfig) -> REQA:
    """Builds (and builds the variables of) a REQA model from its config."""
    model = REQA.from_model_config(cfg)
    model(ops.zeros((1, cfg.crop_size, cfg.crop_size, 3)))
    return model
