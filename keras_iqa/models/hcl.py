"""HCL (reconstruction): "Hierarchical Curriculum Learning for No-Reference IQA" (Wang et al., IJCV 2023), three curricula.

The paper's body is not available: this is OUR reconstruction from its abstract (three curricula: restoration on
distorted-reference pairs; lightweight per-dataset subnetworks tied by a CQAC module on synthetic IQA datasets; fine-tuning on
an authentic dataset), with curriculum 1 built on the same authors' public TeacherIQA restoration network and a CQAC module of
our own design (docs/methods/hcl.md, Design (ours)). Every number produced with it is "HCL (reconstruction)".

- `RestorationNet` (curriculum 1): ResNet-50 v1.5 encoder (taps e0 = stem 112x112x64 before max-pool, e1..e3 = stages 1-3,
  bottom = stage 4 7x7x2048) + U-Net decoder: 5 up-steps Conv2DTranspose(k2, s2) 2048->1024->512->256->64->64, the first 4
  concatenated with the matching tap and followed by a conv block (two 3x3 conv + BN + ReLU, or TeacherIQA's inception block),
  then Conv 1x1 -> 3 + sigmoid = restored RGB in [0, 1]. Its quality-knowledge vector
  q(x) = concat[GAP(bottom), GAP(dec 14x14), GAP(dec 28x28), GAP(dec 56x56)] is 2048 + 1024 + 512 + 256 = 3840-d.
- `HCLSynthetic` (curriculum 2): q(x) -> K subnetworks -> CQAC -> K per-dataset scores [B, K]; trained with the
  correlation-consistency loss on batches tagged with their dataset id (`keras_iqa.layers.cqac`).
- `HCL` (curriculum 3, the deployable `IQAModel`): concat of the K refined embeddings -> Dense(128) + ReLU -> Dense(1).

Both trainable stage models take two learning rates (`compile(optimizer=heads, backbone_optimizer=restoration net)`): Keras
has one optimizer per model, and Adam is invariant to gradient scaling, so a second optimizer is the only faithful way to give
the restoration network 1/10 of the head learning rate (or 0 while frozen).

Registry cards: "hcl" (full size, 224 px) and "hcl-tiny" (tiny encoder/decoder, 64 px, for tests and smoke runs).

The parts it is built from live in their own modules (re-exported here): the decoder blocks `ConvBlock` /
`InceptionConv` in `keras_iqa.layers.decoder_blocks`, `RestorationLoss` / `restoration_l1` in `keras_iqa.losses`,
the `HeadCorrelation` metric in `keras_iqa.metrics`, the two-optimizer update in `keras_iqa.optimizers`.

Example:
>>> import numpy as np
>>> import keras_iqa
>>> model = keras_iqa.create_model("hcl-tiny", num_datasets=2)
>>> tuple(model.score(np.zeros((2, 64, 64, 3), "float32")).shape)
(2,)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import keras
from keras import ops

from keras_iqa.backbones import resnet_features, tap_channels
from keras_iqa.layers.cqac import CQAC, DatasetSubnetworks, cqac_loss
from keras_iqa.layers.decoder_blocks import DECODER_BLOCKS, ConvBlock, InceptionConv
from keras_iqa.layers.preprocessing import ImageNetNormalization
from keras_iqa.losses import PIXEL_LOSSES, RestorationLoss, restoration_l1
from keras_iqa.metrics import HeadCorrelation
from keras_iqa.models.base import IQAModel
from keras_iqa.optimizers import apply_optimizer_groups, build_optimizer_groups, replicas_in_sync, scale_for_replicas
from keras_iqa.registry import InputContract, ModelCard, register

# re-exported: their homes are keras_iqa.layers.decoder_blocks, keras_iqa.losses and keras_iqa.metrics
__all__ = ["HCLModelConfig", "RestorationNet", "HCLSynthetic", "HCL", "build_restoration", "build_synthetic", "build_hcl",
           "restoration_kwargs", "head_kwargs", "ConvBlock", "InceptionConv", "RestorationLoss", "restoration_l1",
           "HeadCorrelation", "DECODER_BLOCKS", "PIXEL_LOSSES", "INPUT_NORMS", "OUTPUTS", "PAPER", "TINY"]

PAPER = ("J. Wang, Z. Chen, C. Yuan, B. Li, W. Ma, W. Hu. Hierarchical Curriculum Learning for No-Reference Image Quality "
         "Assessment. IJCV 131(11):3074-3093, 2023 (reconstruction: paper body unavailable)")
INPUT_NORMS = ("imagenet", "unit")
OUTPUTS = ("direct", "residual")


@dataclass
class HCLModelConfig:
    """Architecture of the three HCL stage models (one config, so the weights hand over between stages).

    Args:
        depth: encoder ResNet depth (50).
        backbone_weights: None (random), "imagenet" (keras-hub preset) or a local preset directory.
        width, blocks: shrink the encoder for tests (`width=0.125, blocks=(1, 1, 1, 1)`).
        decoder_filters: output channels of the 5 up-steps (1024, 512, 256, 64, 64).
        decoder_block: "conv" (two 3x3 conv + BN + ReLU, our design) or "inception" (TeacherIQA's InceptionConv).
        input_norm: "imagenet" (mean/std inside the model, the package contract) or "unit" (x / 255 like TeacherIQA's demo).
        restoration_output: "direct" (1x1 conv + sigmoid, TeacherIQA) or "residual" (clip(x / 255 + 1x1 conv, 0, 1), the
            conv initialised near 0 (std 1e-3) so training starts close to the identity; our option).
        restoration_input_skip: False (TeacherIQA: the last up-step sees no full-resolution input) or True (our option: the
            normalised input image is concatenated with the last up-step's 224x224 map and merged by a decoder block, so
            per-pixel detail such as noise reaches the output; a U-Net's full-resolution skip).
        num_datasets: K, the number of synthetic datasets (subnetworks); the stage runner sets it from the data given.
        subnet_units: (hidden, embedding) of each subnetwork (256, 64); subnet_dropout: 0.1.
        cqac: True = attention across the K embeddings; False = the "CQAC off" ablation (independent heads).
        cqac_heads, cqac_key_dim: attention size (4, 16).
        head_units: hidden width of the fused curriculum-3 head (128).
        crop_size, score_range, higher_better, test_crops, crop_policy: `IQAModel` test-time contract (25 random 224 crops).
    """

    depth: int = 50
    backbone_weights: Optional[str] = None
    width: float = 1.0
    blocks: Optional[tuple] = None
    decoder_filters: tuple = (1024, 512, 256, 64, 64)
    decoder_block: str = "conv"
    input_norm: str = "imagenet"
    restoration_output: str = "direct"
    restoration_input_skip: bool = False
    num_datasets: int = 4
    subnet_units: tuple = (256, 64)
    subnet_dropout: float = 0.1
    cqac: bool = True
    cqac_heads: int = 4
    cqac_key_dim: int = 16
    head_units: int = 128
    crop_size: int = 224
    score_range: tuple = (0.0, 100.0)
    higher_better: bool = True
    test_crops: int = 25
    crop_policy: str = "random"


def restoration_kwargs(cfg: HCLModelConfig) -> dict:
    """The `RestorationNet` arguments of a model config."""
    return dict(depth=cfg.depth, backbone_weights=cfg.backbone_weights, width=cfg.width, blocks=cfg.blocks,
                decoder_filters=cfg.decoder_filters, decoder_block=cfg.decoder_block, input_norm=cfg.input_norm,
                output=cfg.restoration_output, input_skip=cfg.restoration_input_skip)


def head_kwargs(cfg: HCLModelConfig) -> dict:
    """The subnetwork / CQAC arguments of a model config."""
    return dict(num_datasets=cfg.num_datasets, subnet_units=cfg.subnet_units, subnet_dropout=cfg.subnet_dropout,
                cqac=cfg.cqac, cqac_heads=cfg.cqac_heads, cqac_key_dim=cfg.cqac_key_dim)


# ------------------------------------------------------------------------------------------------------- curriculum 1

@keras.saving.register_keras_serializable(package="keras_iqa")
class RestorationNet(keras.Model):
    """Curriculum 1: ResNet encoder + U-Net decoder restoring a distorted image (see the module docstring).

    `call(images [B, H, W, 3] in [0, 255])` -> restored [B, H, W, 3] in [0, 1] (H, W multiples of 32).
    `quality_features(images)` -> q(x) [B, feature_dim] (3840 at full size). `decode(images, full=False)` gives the taps.

    Args:
        depth, backbone_weights, width, blocks, decoder_filters, decoder_block, input_norm: see `HCLModelConfig`.

    Example:
    >>> import numpy as np
    >>> net = RestorationNet(width=0.125, blocks=(1, 1, 1, 1), decoder_filters=(32, 16, 16, 8, 8))
    >>> tuple(net(np.zeros((1, 64, 64, 3))).shape)
    (1, 64, 64, 3)
    """

    def __init__(self, depth=50, backbone_weights=None, width=1.0, blocks=None, decoder_filters=(1024, 512, 256, 64, 64),
                 decoder_block="conv", input_norm="imagenet", output="direct", input_skip=False, **kwargs):
        kwargs.setdefault("name", "restoration")
        if output not in OUTPUTS:
            raise ValueError(f"restoration output must be one of {OUTPUTS}, got {output!r}")
        self.output_mode = output
        super().__init__(**kwargs)
        if decoder_block not in DECODER_BLOCKS:
            raise ValueError(f"decoder_block must be one of {DECODER_BLOCKS}, got {decoder_block!r}")
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        if len(decoder_filters) != 5:
            raise ValueError(f"decoder_filters needs 5 values (one per up-step), got {decoder_filters!r}")
        self.depth, self.backbone_weights, self.width = int(depth), backbone_weights, float(width)
        self.blocks = tuple(int(b) for b in blocks) if blocks is not None else None
        self.decoder_filters = tuple(int(f) for f in decoder_filters)
        self.decoder_block, self.input_norm, self.input_skip = decoder_block, input_norm, bool(input_skip)
        self.normalize = (ImageNetNormalization(name="imagenet_norm") if input_norm == "imagenet"
                          else keras.layers.Rescaling(1.0 / 255.0, name="unit_norm"))
        self.encoder = resnet_features(depth=self.depth, weights=backbone_weights, width=self.width, blocks=self.blocks,
                                       name="encoder")
        self.ups = [keras.layers.Conv2DTranspose(f, 2, strides=2, name=f"up{i + 1}") for i, f in enumerate(self.decoder_filters)]
        block = ConvBlock if decoder_block == "conv" else InceptionConv
        self.merges = [block(f, name=f"merge{i + 1}") for i, f in enumerate(self.decoder_filters[:4])]
        if self.input_skip:  # our option: full-resolution skip of the (normalised) input image
            self.merges.append(block(self.decoder_filters[4], name="merge5"))
        if output == "direct":
            self.out_conv = keras.layers.Conv2D(3, 1, activation="sigmoid", name="restored", dtype="float32")  # fp32 in bf16
        else:
            init = keras.initializers.RandomNormal(stddev=1e-3)  # ~identity at start, yet gradients reach the decoder
            self.out_conv = keras.layers.Conv2D(3, 1, kernel_initializer=init, name="residual", dtype="float32")
        self.gap = keras.layers.GlobalAveragePooling2D(name="gap")

    @property
    def feature_dim(self) -> int:
        """Size of q(x): bottom channels + the first three decoder widths (3840 at full size)."""
        return tap_channels(self.depth, self.width)["stage4"] + sum(self.decoder_filters[:3])

    def decode(self, images, training=None, full=True):
        """{"bottom", "decoder": [14x14, 28x28, 56x56, 112x112 maps], "restored" (when `full`)}."""
        x0 = self.normalize(images)
        taps = self.encoder(x0, training=training)
        skips = (taps["stage3"], taps["stage2"], taps["stage1"], taps["stem"])
        x, dec = taps["stage4"], []
        n_merge = 4 if full else 3
        for up, merge, skip in zip(self.ups[:n_merge], self.merges[:n_merge], skips[:n_merge]):
            x = merge(ops.concatenate([skip, up(x)], axis=-1), training=training)
            dec.append(x)
        out = {"bottom": taps["stage4"], "decoder": dec}
        if full:
            x = self.ups[4](x)
            if self.input_skip:
                x = self.merges[4](ops.concatenate([ops.cast(x0, x.dtype), x], axis=-1), training=training)
            y = self.out_conv(x)
            if self.output_mode == "residual":
                y = ops.clip(ops.cast(images, "float32") / 255.0 + y, 0.0, 1.0)
            out["restored"] = y
        return out

    def build(self, input_shape=None):
        """Builds every sublayer (including the decoder tail that `quality_features` does not use) on a 32x32 dummy."""
        if not self.built:
            self.decode(ops.zeros((1, 32, 32, 3)), training=False, full=True)
            self.built = True

    def quality_features(self, images, training=None):
        """q(x) = concat[GAP(bottom), GAP(dec 14x14), GAP(dec 28x28), GAP(dec 56x56)] (docs/methods/hcl.md, Design (ours))."""
        d = self.decode(images, training=training, full=False)
        return ops.concatenate([self.gap(d["bottom"])] + [self.gap(m) for m in d["decoder"]], axis=-1)

    def call(self, images, training=None):
        return self.decode(images, training=training, full=True)["restored"]

    def get_config(self):
        return {**super().get_config(), "depth": self.depth, "backbone_weights": None, "width": self.width,
                "blocks": list(self.blocks) if self.blocks else None, "decoder_filters": list(self.decoder_filters),
                "decoder_block": self.decoder_block, "input_norm": self.input_norm, "output": self.output_mode,
                "input_skip": self.input_skip}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("trainable", None)
        config.pop("dtype", None)
        return cls(**config)


# ---------------------------------------------------------------------------------------------- two learning rates

def _plain(restoration) -> dict:
    """RestorationNet arguments with tuples as lists (what a `.keras` round trip gives back)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dict(restoration or {}).items()}


class _Holder:
    """Keeps the backbone optimizer out of Keras' layer attribute tracking (`.keras` saving still reaches it through the
    `backbone_optimizer` property and `get_compile_config`)."""

    def __init__(self, value=None):
        self.value = value


class _TwoLRMixin:
    """`compile(optimizer=..., backbone_optimizer=...)`: the restoration network's variables get their own optimizer.

    The backbone optimizer's learning rate is a variable that `keras_iqa.training.hcl.GroupLRSchedule` sets per epoch
    (0 while frozen, then 1/10 of the head rate). Without `backbone_optimizer` the model trains with Keras' single optimizer.
    """

    def compile(self, optimizer="adam", backbone_optimizer=None, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self._backbone_opt = _Holder(keras.optimizers.get(backbone_optimizer) if backbone_optimizer is not None else None)
        if self.built:  # each optimizer on its own group, now (under the strategy scope when there is one)
            build_optimizer_groups(self.optimizer_groups())

    def get_compile_config(self):
        """Keras's compile config plus the backbone optimizer's, so `load_model` rebuilds both optimizers (and restores
        both optimizers' state, saved under `backbone_optimizer` in the `.keras` file)."""
        cfg = super().get_compile_config() or {}
        bo = self.backbone_optimizer
        return {**cfg, "backbone_optimizer": keras.optimizers.serialize(bo)} if bo is not None else cfg

    def compile_from_config(self, config):
        """Re-compiles a loaded model with both optimizers built on their groups, before Keras loads their variables
        (a file without a backbone optimizer compiles with Keras' single optimizer, as it was saved)."""
        config = dict(config or {})
        bopt = config.pop("backbone_optimizer", None)
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config, backbone_optimizer=keras.optimizers.deserialize(bopt) if bopt else None)

    @property
    def backbone_optimizer(self):
        holder = getattr(self, "_backbone_opt", None)
        return holder.value if holder is not None else None

    def _variable_groups(self):
        back_ids = {id(v) for v in self.restoration.trainable_variables}
        back = [v for v in self.trainable_variables if id(v) in back_ids]
        rest = [v for v in self.trainable_variables if id(v) not in back_ids]
        return back, rest

    def optimizer_groups(self):
        """[(optimizer, the heads' variables), (backbone optimizer, the restoration network's)], or Keras's single
        optimizer on every variable without a backbone optimizer. Both optimizers' state is in `save_weights` files
        (run backups); a resume builds both on these groups before loading (`keras_iqa.training.runner`)."""
        if self.backbone_optimizer is None:
            return [(self.optimizer, list(self.trainable_variables))]
        back, rest = self._variable_groups()
        return [(self.optimizer, rest), (self.backbone_optimizer, back)]

    def train_step(self, data):
        """Keras's `train_step` with two optimizers (public APIs only): the loss from `compute_loss` is already scaled
        for the replicas by Keras's rule (compiled Keras losses do it; `HCLSynthetic.compute_loss` does it itself) and
        the loss tracker logs it unscaled, as Keras's own step does."""
        if self.backbone_optimizer is None:
            return super().train_step(data)
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        first = next(i for i in tf.nest.flatten(x) if i is not None)
        tracker = next(m for m in self.metrics if m.name == "loss")  # Keras's loss tracker (logged unscaled)
        tracker.update_state(loss * float(replicas_in_sync()), sample_weight=tf.shape(first)[0])
        apply_optimizer_groups(tape, loss, self.optimizer_groups())
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


# ------------------------------------------------------------------------------------------------------- curriculum 2

@keras.saving.register_keras_serializable(package="keras_iqa")
class HCLSynthetic(_TwoLRMixin, keras.Model):
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

    def __init__(self, restoration=None, num_datasets=4, subnet_units=(256, 64), subnet_dropout=0.1, cqac=True, cqac_heads=4,
                 cqac_key_dim=16, lambda_corr=0.1, **kwargs):
        kwargs.setdefault("name", "hcl_synthetic")
        super().__init__(**kwargs)
        self.restoration_config = _plain(restoration)
        self.num_datasets = int(num_datasets)
        self.subnet_units, self.subnet_dropout = tuple(int(u) for u in subnet_units), float(subnet_dropout)
        self.use_cqac, self.cqac_heads, self.cqac_key_dim = bool(cqac), int(cqac_heads), int(cqac_key_dim)
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
        return {**super().get_config(), "restoration": self.restoration_config, "num_datasets": self.num_datasets,
                "subnet_units": list(self.subnet_units), "subnet_dropout": self.subnet_dropout, "cqac": self.use_cqac,
                "cqac_heads": self.cqac_heads, "cqac_key_dim": self.cqac_key_dim, "lambda_corr": self.lambda_corr}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("trainable", None)
        config.pop("dtype", None)
        return cls(**config)


# ------------------------------------------------------------------------------------------------------- curriculum 3

@keras.saving.register_keras_serializable(package="keras_iqa")
class HCL(_TwoLRMixin, IQAModel):
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

    def __init__(self, restoration=None, num_datasets=4, subnet_units=(256, 64), subnet_dropout=0.1, cqac=True, cqac_heads=4,
                 cqac_key_dim=16, head_units=128, score_range=(0.0, 100.0), higher_better=True, crop_size=224, test_crops=25,
                 crop_policy="random", **kwargs):
        kwargs.setdefault("name", "hcl")
        super().__init__(score_range=score_range, higher_better=higher_better, crop_size=crop_size, test_crops=test_crops,
                         crop_policy=crop_policy, **kwargs)
        if int(crop_size) % 32:
            raise ValueError(f"HCL's U-Net needs crop_size divisible by 32, got {crop_size}")
        self.restoration_config = _plain(restoration)
        self.num_datasets = int(num_datasets)
        self.subnet_units, self.subnet_dropout = tuple(int(u) for u in subnet_units), float(subnet_dropout)
        self.use_cqac, self.cqac_heads, self.cqac_key_dim = bool(cqac), int(cqac_heads), int(cqac_key_dim)
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
        cfg = super().get_config()
        cfg.update(restoration={**self.restoration_config, "backbone_weights": None}, num_datasets=self.num_datasets,
                   subnet_units=list(self.subnet_units), subnet_dropout=self.subnet_dropout, cqac=self.use_cqac,
                   cqac_heads=self.cqac_heads, cqac_key_dim=self.cqac_key_dim, head_units=self.head_units)
        return cfg


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
    m = HCL(restoration=restoration_kwargs(cfg), head_units=cfg.head_units, score_range=cfg.score_range,
            higher_better=cfg.higher_better, crop_size=cfg.crop_size, test_crops=cfg.test_crops, crop_policy=cfg.crop_policy,
            **head_kwargs(cfg))
    return _build(m, cfg.crop_size)


TINY = {"width": 0.125, "blocks": (1, 1, 1, 1), "decoder_filters": (32, 16, 16, 8, 8), "subnet_units": (32, 16),
        "cqac_heads": 2, "cqac_key_dim": 8, "head_units": 16, "crop_size": 64, "num_datasets": 2}

register(ModelCard(
    name="hcl", builder=build_hcl, config_cls=HCLModelConfig, score_range=(0.0, 100.0), higher_better=True, paper=PAPER,
    input=InputContract(crop_size=224, test_crops="25 random 224 crops averaged"),
    trained_on="random init; train with `keras-iqa train hcl --stages all` (three curricula)",
    description="HCL (reconstruction): ResNet-50 U-Net restoration features + K subnetworks + CQAC + fused head",
))
register(ModelCard(
    name="hcl-tiny", builder=build_hcl, config_cls=HCLModelConfig, defaults=TINY, score_range=(0.0, 100.0),
    higher_better=True, paper=PAPER, input=InputContract(crop_size=64, test_crops="25 random 64 crops averaged"),
    description="tiny HCL (reconstruction) (width 0.125, one block per stage, 64 px, K=2) for tests and smoke runs",
))
