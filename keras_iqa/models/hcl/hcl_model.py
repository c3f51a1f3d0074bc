"""The HCL models (reconstruction): "Hierarchical Curriculum Learning for No-Reference IQA" (Wang et al., IJCV 2023), three curricula.

The paper's body is not available: this is OUR reconstruction from its abstract (three curricula: restoration on
distorted-reference pairs; lightweight per-dataset subnetworks tied by a CQAC module on synthetic IQA datasets; fine-tuning on
an authentic dataset), with curriculum 1 built on the same authors' public TeacherIQA restoration network and a CQAC module of
our own design (docs/methods/hcl.md, Design (ours)). Every number produced with it is "HCL (reconstruction)".

- `RestorationNet` (curriculum 1, `hcl_restoration.py`): ResNet-50 v1.5 encoder + U-Net decoder restoring the distorted
  image; its quality-knowledge vector q(x) (3840-d at full size) feeds the two models below.
- `HCLSynthetic` (curriculum 2): q(x) -> K subnetworks -> CQAC -> K per-dataset scores [B, K]; trained with the
  correlation-consistency loss on batches tagged with their dataset id (`keras_iqa.layers.cqac`).
- `HCL` (curriculum 3, the deployable `IQAModel`): concat of the K refined embeddings -> Dense(128) + ReLU -> Dense(1).

Both trainable stage models take two learning rates (`compile(optimizer=heads, backbone_optimizer=restoration net)`): Keras
has one optimizer per model, and Adam is invariant to gradient scaling, so a second optimizer is the only faithful way to give
the restoration network 1/10 of the head learning rate (or 0 while frozen).

Registry cards (`hcl_presets.py`): "hcl" (full size, 224 px) and "hcl-tiny" (tiny encoder/decoder, 64 px, for tests
and smoke runs).

The parts it is built from live in their own modules: `RestorationNet` in `hcl_restoration.py`, the config in
`hcl_config.py`, the decoder blocks in `keras_iqa.layers.decoder_blocks`, `RestorationLoss` / `restoration_l1` in
`keras_iqa.losses`, the `HeadCorrelation` metric in `keras_iqa.metrics`, the two optimizers in
`keras_iqa.models.two_optimizer` (the family's `__init__` re-exports the old names).

Example:
>>> import numpy as np
>>> import keras_iqa
>>> model = keras_iqa.create_model("hcl-tiny", num_datasets=2)
>>> tuple(model.score(np.zeros((2, 64, 64, 3), "float32")).shape)
(2,)
"""

from __future__ import annotations

import keras
from keras import ops

from keras_iqa.layers.cqac import CQAC, DatasetSubnetworks, cqac_loss
from keras_iqa.metrics import HeadCorrelation
from keras_iqa.models.base import IQAModel, without_layer_keys
from keras_iqa.models.hcl.hcl_config import (CONTRACT_FIELDS, HEAD_FIELDS, HCLModelConfig, head_kwargs, restoration_kwargs,
                                             take)
from keras_iqa.models.hcl.hcl_restoration import RestorationNet, plain
from keras_iqa.models.two_optimizer import TwoOptimizerModel
from keras_iqa.optimizers import scale_for_replicas


class _Heads:
    """The K subnetworks + CQAC arguments (`HEAD_FIELDS`, defaults from `HCLModelConfig`) that `HCLSynthetic` and `HCL`
    share: taken from the model's arguments, kept as attributes and saved by `head_config()`."""

    def _take_heads(self, kwargs):
        head = take(kwargs, head_kwargs(HCLModelConfig()))
        self.num_datasets = int(head["num_datasets"])
        self.subnet_units, self.subnet_dropout = tuple(int(u) for u in head["subnet_units"]), float(head["subnet_dropout"])
        self.use_cqac, self.cqac_heads, self.cqac_key_dim = bool(head["cqac"]), int(head["cqac_heads"]), int(head["cqac_key_dim"])

    def head_config(self) -> dict:
        """The subnetwork / CQAC arguments as `get_config` saves them."""
        return {"num_datasets": self.num_datasets, "subnet_units": list(self.subnet_units),
                "subnet_dropout": self.subnet_dropout, "cqac": self.use_cqac, "cqac_heads": self.cqac_heads,
                "cqac_key_dim": self.cqac_key_dim}

    def backbone_variables(self):
        """The restoration network's trainable variables (the backbone optimizer's group)."""
        return self.restoration.trainable_variables


# ------------------------------------------------------------------------------------------------------- curriculum 2

@keras.saving.register_keras_serializable(package="keras_iqa")
class HCLSynthetic(_Heads, TwoOptimizerModel, keras.Model):
    """Curriculum 2: q(x) -> K subnetworks -> CQAC -> per-dataset scores [B, K] (docs/methods/hcl.md, Design (ours)).

    Inputs: `(images [B, H, W, 3] in [0, 255], dataset_id int32 [B])` (as `multi_dataset` yields) or images alone (scores
    only). Targets: the batch dataset's normalised scores in [0, 1]. The loss is `cqac_loss` (MSE on the own head + lambda *
    mean (1 - PLCC) of the other heads); logged metrics: `mse`, `corr` and `head_corr` (mean off-diagonal K x K head PLCC).

    Args:
        restoration: dict of `RestorationNet` arguments (`restoration_kwargs(cfg)`).
        num_datasets, subnet_units, subnet_dropout, cqac, cqac_heads, cqac_key_dim: see `HCLModelConfig`.
        lambda_corr: weight of the correlation-consistency term (0.1; forced to 0 when `cqac=False`).

    Example:
    >>> import numpy as np
    >>> m = HCLSynthetic(restoration=dict(width=0.125, blocks=(1, 1, 1, 1), decoder_filters=(32, 16, 16, 8, 8)),
    ...                  num_datasets=3)
    >>> tuple(m((np.zeros((2, 64, 64, 3)), np.zeros((2,), "int32"))).shape)
    (2, 3)
    """

    def __init__(self, restoration=None, lambda_corr=0.1, **kwargs):
        heads = {k: kwargs.pop(k) for k in HEAD_FIELDS if k in kwargs}
        kwargs.setdefault("name", "hcl_synthetic")
        super().__init__(**kwargs)
        self._take_heads(heads)
        self.restoration_config = plain(restoration)
        self.lambda_corr = float(lambda_corr) if self.use_cqac else 0.0
        self.restoration = RestorationNet(**self.restoration_config)
        self.subnets = DatasetSubnetworks(self.num_datasets, self.subnet_units, self.subnet_dropout, name="subnets")
        # per-dataset heads start at 0.5, the middle of the normalised [0, 1] targets (ours, docs/heads.md)
        self.cqac = CQAC(self.num_datasets, self.cqac_heads, self.cqac_key_dim, attention=self.use_cqac, head_bias=0.5, head_stddev=0.01,
                         name="cqac")
        self.mse_tracker = keras.metrics.Mean(name="mse")
        self.corr_tracker = keras.metrics.Mean(name="corr")
        self.head_corr = HeadCorrelation(self.num_datasets)

    def embed(self, images, training=None):
        """(refined embeddings z' [B, K, D], scores [B, K])."""
        q = self.restoration.quality_features(images, training=training)
        return self.cqac(self.subnets(q, training=training), training=training)

    def call(self, inputs, training=None):
        images = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
        return self.embed(images, training=training)[1]

    def build(self, input_shape=None):
        if not self.built:
            self.restoration.build()
            self.call(ops.zeros((1, 32, 32, 3)), training=False)
            self.built = True

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ValueError("HCLSynthetic trains on ((images, dataset_id), targets) batches as data_pipeline.input."
                             "multi_dataset yields them; got inputs without a dataset id")
        total, mse, corr = cqac_loss(y_pred, y, x[1], lam=self.lambda_corr, num_datasets=self.num_datasets)
        self.mse_tracker.update_state(mse)
        self.corr_tracker.update_state(corr)
        self.head_corr.update_state(y_pred)
        # Keras's rule for `compute_loss`: scaled by 1/replicas (the optimizer SUMs the replicas' gradients; Keras's
        # trainer logs the loss unscaled). On N replicas the correlation term is computed within each replica's share.
        return scale_for_replicas(total)

    def get_config(self):
        return {**super().get_config(), "restoration": self.restoration_config, **self.head_config(),
                "lambda_corr": self.lambda_corr}

    @classmethod
    def from_config(cls, config):
        return cls(**without_layer_keys(config))


# ------------------------------------------------------------------------------------------------------- curriculum 3

@keras.saving.register_keras_serializable(package="keras_iqa")
class HCL(_Heads, TwoOptimizerModel, IQAModel):
    """HCL (reconstruction), the deployable model: q(x) -> K subnetworks -> CQAC -> concat z'_1..z'_K -> Dense(128) + ReLU
    -> Dense(1) = the target dataset's score on `score_range` (docs/methods/hcl.md, Curriculum 3). `call` returns [B, 1].

    Args:
        restoration: dict of `RestorationNet` arguments.
        num_datasets, subnet_units, subnet_dropout, cqac, cqac_heads, cqac_key_dim, head_units: see `HCLModelConfig`.
        **kwargs: `IQAModel` arguments (score_range, higher_better, crop_size, test_crops, crop_policy, name).

    Example:
    >>> import numpy as np
    >>> m = HCL(restoration=dict(width=0.125, blocks=(1, 1, 1, 1), decoder_filters=(32, 16, 16, 8, 8)), num_datasets=2,
    ...         crop_size=64)
    >>> tuple(m(np.zeros((2, 64, 64, 3))).shape)
    (2, 1)
    """

    def __init__(self, restoration=None, head_units=HCLModelConfig.head_units, **kwargs):
        heads = {k: kwargs.pop(k) for k in HEAD_FIELDS if k in kwargs}
        kwargs.setdefault("name", "hcl")
        super().__init__(**kwargs)
        if self.crop_size % 32:
            raise ValueError(f"HCL's U-Net needs crop_size divisible by 32, got {self.crop_size}")
        self._take_heads(heads)
        self.restoration_config = plain(restoration)
        self.head_units = int(head_units)
        self.restoration = RestorationNet(**self.restoration_config)
        self.subnets = DatasetSubnetworks(self.num_datasets, self.subnet_units, self.subnet_dropout, name="subnets")
        self.cqac = CQAC(self.num_datasets, self.cqac_heads, self.cqac_key_dim, attention=self.use_cqac, name="cqac")
        self.flatten = keras.layers.Flatten(name="concat_embeddings")
        self.fuse = keras.layers.Dense(self.head_units, activation="relu", name="fuse")
        # the score layer (ours, docs/heads.md): float32 (MOS resolution under mixed precision); bias at the midpoint of
        # `score_range` and a small kernel, so a fresh head starts mid-range instead of at 0 (far below a MOS scale)
        lo, hi = self.score_range
        self.out = keras.layers.Dense(1, name="score", dtype="float32",
                                      kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                                      bias_initializer=keras.initializers.Constant((lo + hi) / 2.0))

    def build(self, input_shape=None):
        if not self.built:
            self.restoration.build()
            self.call(ops.zeros((1, 32, 32, 3)), training=False)
            self.built = True

    def call(self, images, training=None):
        q = self.restoration.quality_features(images, training=training)
        z, _ = self.cqac(self.subnets(q, training=training), training=training)
        return self.out(ops.cast(self.fuse(self.flatten(z)), "float32"))

    def get_config(self):
        return {**super().get_config(), "restoration": {**self.restoration_config, "backbone_weights": None},
                **self.head_config(), "head_units": self.head_units}


# ------------------------------------------------------------------------------------------------------------ builders

def _build(model, crop_size, *inputs_extra):
    x = ops.zeros((1, crop_size, crop_size, 3))
    model((x,) + inputs_extra if inputs_extra else x)
    return model


def build_restoration(cfg: HCLModelConfig) -> RestorationNet:
    """Curriculum-1 model, variables built."""
    return _build(RestorationNet(**restoration_kwargs(cfg)), cfg.crop_size)


def build_synthetic(cfg: HCLModelConfig, lambda_corr: float = 0.1) -> HCLSynthetic:
    """Curriculum-2 model, variables built."""
    m = HCLSynthetic(restoration=restoration_kwargs(cfg), lambda_corr=lambda_corr, **head_kwargs(cfg))
    return _build(m, cfg.crop_size, ops.zeros((1,), "int32"))


def build_hcl(cfg: HCLModelConfig) -> HCL:
    """The deployable HCL model (curriculum 3), variables built."""
    m = HCL(restoration=restoration_kwargs(cfg), head_units=cfg.head_units, **head_kwargs(cfg),
            **{k: getattr(cfg, k) for k in CONTRACT_FIELDS})
    return _build(m, cfg.crop_size)
