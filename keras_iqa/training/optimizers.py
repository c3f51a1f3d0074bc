"""Re-export of `keras_iqa.optimizers` (`FusedAdam` and the multi-optimizer update), its home since models import it.

Existing imports keep working; saved models find `FusedAdam` by its registered name "keras_iqa>FusedAdam".

Example:
>>> from keras_iqa.training.optimizers import FusedAdam
>>> FusedAdam is __import__("keras_iqa.optimizers", fromlist=["FusedAdam"]).FusedAdam
True
"""

from keras_iqa.optimizers import (FusedAdam, apply_optimizer_groups, build_optimizer_groups, replicas_in_sync,
                                  scale_for_replicas)

__all__ = ["FusedAdam", "replicas_in_sync", "scale_for_replicas", "build_optimizer_groups", "apply_optimizer_groups"]
