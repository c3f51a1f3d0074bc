"""What the converters share: torch -> Keras layouts of the common layers and an all-or-nothing assignment.

Layouts (PyTorch -> Keras): Conv2d weight [out, in, kh, kw] -> kernel [kh, kw, in, out]; Linear weight [out, in] ->
kernel [in, out]; BatchNorm weight / bias / running_mean / running_var -> gamma / beta / moving_mean / moving_variance;
LayerNorm weight / bias -> gamma / beta. `Plan` collects (Keras variable, value, checkpoint key) triples, checks every shape
before it writes anything and reports the checkpoint keys it did not use.
"""

from __future__ import annotations

import numpy as np

from keras_iqa.caller import hint

BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def strip_prefix(state: dict, prefix: str = "module.") -> dict:
    """Removes a DataParallel / DistributedDataParallel `module.` prefix from every key that has it."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """Conv2d weight [out, in, kh, kw] -> Keras Conv2D kernel [kh, kw, in, out]."""
    return np.transpose(w, (2, 3, 1, 0))


def dense_kernel(w: np.ndarray) -> np.ndarray:
    """Linear weight [out, in] -> Keras Dense kernel [in, out]."""
    return np.transpose(w)


class Plan:
    """Collects the assignments of one conversion; `apply()` checks all shapes first, then writes (all or nothing).

    Args:
        state: the checkpoint's {key: numpy array} (after `strip_prefix`).
        what: the checkpoint's kind for error messages, e.g. "official REQA".
    """

    def __init__(self, state: dict, what: str):
        self.state, self.what = state, what
        self.items = []  # (variable, value, key)
        self.used = set()

    def get(self, key: str) -> np.ndarray:
        if key not in self.state:
            raise KeyError(key)
        self.used.add(key)
        return self.state[key]

    def require(self, keys) -> None:
        """Raises one ValueError naming every missing key (instead of failing on the first)."""
        missing = [k for k in keys if k not in self.state]
        if missing:
            raise ValueError(f"the checkpoint lacks {len(missing)} tensors an {self.what} checkpoint has, e.g. "
                             f"{missing[:4]} (first keys it has: {list(self.state)[:4]}); is it a checkpoint of that network?")

    def add(self, variable, value, key: str) -> None:
        self.items.append((variable, np.asarray(value), key))

    def dense(self, layer, prefix: str) -> None:
        self.add(layer.kernel, dense_kernel(self.get(prefix + ".weight")), prefix + ".weight")
        self.add(layer.bias, self.get(prefix + ".bias"), prefix + ".bias")

    def conv(self, layer, prefix: str) -> None:
        self.add(layer.kernel, conv_kernel(self.get(prefix + ".weight")), prefix + ".weight")
        if getattr(layer, "use_bias", False):
            self.add(layer.bias, self.get(prefix + ".bias"), prefix + ".bias")

    def batch_norm(self, layer, prefix: str) -> None:
        for var, k in zip((layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance), BN_KEYS):
            self.add(var, self.get(f"{prefix}.{k}"), f"{prefix}.{k}")

    def layer_norm(self, layer, prefix: str) -> None:
        self.add(layer.gamma, self.get(prefix + ".weight"), prefix + ".weight")
        self.add(layer.beta, self.get(prefix + ".bias"), prefix + ".bias")

    def apply(self, hint: str = "") -> int:
        """Checks every shape, then assigns; returns the number of checkpoint tensors read."""
        for var, value, key in self.items:
            if tuple(var.shape) != tuple(value.shape):
                raise ValueError(f"shape mismatch for {key!r}: checkpoint {tuple(value.shape)} (in Keras layout) vs Keras "
                                 f"{var.path} {tuple(var.shape)}{'; ' + hint if hint else ''}")
        for var, value, _ in self.items:
            var.assign(value.astype(var.dtype))
        return len(self.used)

    def unused(self, expected_unused=()) -> list:
        """Checkpoint keys neither assigned nor known to be unused (BatchNorm's `num_batches_tracked` never is)."""
        return sorted(k for k in self.state if k not in self.used and k not in expected_unused
                      and not k.endswith("num_batches_tracked"))


def check_unused(plan: Plan, unused: list, strict: bool) -> None:
    if unused and strict:
        raise ValueError(f"the checkpoint holds {len(unused)} tensors the {plan.what} network does not have, e.g. "
                         f"{unused[:4]}: it is another network or a modified one (converting it would drop them silently; "
                         f"pass {hint('strict=False', '--allow-unused')} to convert anyway)")
