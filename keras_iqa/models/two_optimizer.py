"""`TwoOptimizerModel`: a Keras model trained by two optimizers, one on its backbone and one on the rest (REQA, HCL).

Keras gives a model one optimizer, and Adam is invariant to the scale of the gradients, so a second optimizer is the only
faithful way to give the backbone its own learning rate (REQA: 2e-5 against 2e-4; HCL: 1/10 of the heads' rate, 0 while
frozen). The mixin, on public Keras APIs only:

- `compile(optimizer, backbone_optimizer=None, **kwargs)`: Keras's compile plus the backbone optimizer (without one the
  model trains with Keras's single optimizer; under `mixed_float16` both are wrapped in `LossScaleOptimizer`); both are built on their variable groups at once when the model is built;
- `backbone_optimizer`, `optimizer_groups()`: which optimizer updates which variables (`backbone_variables()` is the one
  thing a family says);
- `get_compile_config` / `compile_from_config`: both optimizers' configs go into a `.keras` file, and `load_model` rebuilds
  both on their groups before Keras loads their state. The state itself is saved by Keras's own walk over the model's
  attributes (the `backbone_optimizer` property sits beside `optimizer`), so `model.save` / `.keras`, `save_weights` and
  run backups (`keras_iqa.training.runner`) hold and restore both optimizers' variables;
- `train_step`: Keras's step (`compute_loss` -> loss tracker -> `compute_metrics`) with one backward pass feeding both
  optimizers (`keras_iqa.optimizers.apply_optimizer_groups`); a family with its own step calls `apply_optimizers`.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_iqa.optimizers import apply_optimizer_groups, build_optimizer_groups, replicas_in_sync


class TwoOptimizerModel:
    """Mixin for a `keras.Model` subclass (list it first: `class HCL(TwoOptimizerModel, IQAModel)`).

    Subclasses implement `backbone_variables()` (the trainable variables the backbone optimizer updates) and may override
    `extra_gradient()` (a term added to each gradient, e.g. REQA's coupled L2) and `compute_loss`.
    """

    _backbone_optimizer = None

    def compile(self, optimizer="adam", backbone_optimizer=None, **kwargs):
        """Keras's `compile` plus `backbone_optimizer` (an optimizer, its name or config; None: one optimizer for all)."""
        super().compile(optimizer=optimizer, **kwargs)
        bopt = keras.optimizers.get(backbone_optimizer) if backbone_optimizer is not None else None
        if (bopt is not None and self.dtype_policy.name == "mixed_float16" and kwargs.get("auto_scale_loss", True)
                and not isinstance(bopt, keras.optimizers.LossScaleOptimizer)):
            bopt = keras.optimizers.LossScaleOptimizer(bopt, name="backbone_loss_scale_optimizer")  # as Keras's compile
        self._backbone_optimizer = bopt
        if self.built:  # each optimizer on its own group, now (under the strategy scope when there is one)
            build_optimizer_groups(self.optimizer_groups())

    @property
    def backbone_optimizer(self):
        """The optimizer of `backbone_variables()` (None when compiled with one optimizer)."""
        return self._backbone_optimizer

    def backbone_variables(self) -> list:
        """The trainable variables the backbone optimizer updates (a family says which)."""
        raise NotImplementedError(f"{type(self).__name__} must say which variables are its backbone's")

    def extra_gradient(self):
        """None, or `f(gradient, variable)` added to each gradient (scaled for the replicas like the loss)."""
        return None

    def optimizer_groups(self) -> list:
        """[(backbone optimizer, backbone variables), (optimizer, the rest)], or [(optimizer, every variable)] without a
        backbone optimizer: what each optimizer updates and is built on (`keras_iqa.optimizers.build_optimizer_groups`;
        a resume builds both on these groups before loading a backup)."""
        if self.backbone_optimizer is None:
            return [(self.optimizer, list(self.trainable_variables))]
        back_ids = {id(v) for v in self.backbone_variables()}
        back = [v for v in self.trainable_variables if id(v) in back_ids]
        rest = [v for v in self.trainable_variables if id(v) not in back_ids]
        return [(self.backbone_optimizer, back), (self.optimizer, rest)]

    def apply_optimizers(self, tape, loss) -> None:
        """One update of both optimizers from `loss` (computed inside `tape`, already scaled for the replicas)."""
        apply_optimizer_groups(tape, loss, self.optimizer_groups(), extra_gradient=self.extra_gradient())

    def get_compile_config(self):
        """Keras's compile config plus the backbone optimizer's (None without one)."""
        cfg = super().get_compile_config() or {}
        bo = self.backbone_optimizer
        return {**cfg, "backbone_optimizer": keras.optimizers.serialize(bo) if bo is not None else None}

    def compile_from_config(self, config):
        """Re-compiles a loaded model: both optimizers are rebuilt on their groups, so `load_model` restores both
        optimizers' state (a file without a backbone optimizer compiles with one optimizer, as it was saved)."""
        config = dict(config or {})
        bopt = config.pop("backbone_optimizer", None)
        config = keras.saving.deserialize_keras_object(config, safe_mode=True)
        self.compile(**config, backbone_optimizer=keras.optimizers.deserialize(bopt) if bopt else None)

    def train_step(self, data):
        """Keras's `train_step` with two optimizers: `compute_loss` returns the loss scaled for the replicas (compiled Keras
        losses do it; a family's own `compute_loss` must, `keras_iqa.optimizers.scale_for_replicas`) and the loss tracker
        logs it unscaled, as Keras's own step does."""
        if self.backbone_optimizer is None:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        first = next(i for i in tf.nest.flatten(x) if i is not None)
        tracker = next(m for m in self.metrics if m.name == "loss")  # Keras's loss tracker (logged unscaled)
        tracker.update_state(loss * float(replicas_in_sync()), sample_weight=tf.shape(first)[0])
        self.apply_optimizers(tape, loss)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
