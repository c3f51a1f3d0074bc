"""`lr="auto"`: the papers' learning rates with ImageNet (or otherwise trained) backbones, measured larger ones from random init.

The REQA, MetaIQA and HCL papers tune their learning rates for backbones that start from ImageNet weights (REQA: 2e-4 for
the new layers, 2e-5 for ResNet-50; MetaIQA: fine-tuning at 1e-5; HCL: 1e-4 / 1e-5 for the backbone). From random init
(`backbone_weights=None`: offline, a tiny card, a new architecture) these rates barely move the network in a usable number of
steps. `resolve_lr("auto", ...)` picks the paper value when the backbone is pretrained and the `RANDOM_INIT` value otherwise,
and warns once per process and family that the paper rates assume ImageNet weights. An explicit number is always used as is
(the warning is still given once when the backbone is random). See docs/heads.md for the measurements behind `RANDOM_INIT`.

Example:
>>> from keras_iqa.training.lr import RANDOM_INIT, resolve_lr
>>> resolve_lr("auto", paper=2e-4, random_init=RANDOM_INIT["reqa"]["lr"], pretrained=False, family="reqa")
0.003
>>> resolve_lr("auto", paper=2e-4, random_init=RANDOM_INIT["reqa"]["lr"], pretrained=True, family="reqa")
0.0002
>>> resolve_lr(1e-3, paper=2e-4, random_init=RANDOM_INIT["reqa"]["lr"], pretrained=True, family="reqa")
0.001
"""

from __future__ import annotations

import warnings
from typing import Optional, Union

from keras_iqa.caller import setting

__all__ = ["AUTO", "RANDOM_INIT", "is_pretrained", "resolve_lr", "warn_random_init"]

AUTO = "auto"

# random-init defaults (ours; measured on tiny synthetic sets, docs/heads.md): new layers and backbone at the same rate
RANDOM_INIT = {
    "reqa": {"lr": 3e-3, "backbone_lr": 3e-4},
    "metaiqa": {"finetune_lr": 1e-3},
    "hcl": {"lr": 1e-2, "backbone_lr": 1e-3},
}
_warned: set = set()


def is_pretrained(weights) -> bool:
    """True when `weights` names pretrained backbone weights ("imagenet", a preset directory); False for None / "none"."""
    return weights is not None and str(weights).strip().lower() not in ("", "none", "null", "random")


def warn_random_init(family: str, detail: str = "") -> None:
    """Warns once per process and family that the paper learning rates assume ImageNet-initialised backbones."""
    if family in _warned:
        return
    _warned.add(family)
    msg = (f"{family}: the backbone has no pretrained weights ({setting('backbone_weights', None)}); the paper learning "
           f"rates assume ImageNet-initialised backbones and barely train from random init. {detail}".rstrip())
    warnings.warn(msg, UserWarning, stacklevel=3)


def resolve_lr(value: Union[str, float, None], paper: float, random_init: float, pretrained: bool, family: str,
               name: str = "lr") -> float:
    """`value` as a float; "auto" (or None) -> `paper` when `pretrained`, else `random_init` (warning once)."""
    auto = value is None or (isinstance(value, str) and value.strip().lower() == AUTO)
    if not pretrained:
        warn_random_init(family, f"lr=auto uses the random-init defaults ({_fmt(family)}); set the rates explicitly to "
                                 "override.")
    if auto:
        return float(paper if pretrained else random_init)
    return float(value)


def _fmt(family: str) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in RANDOM_INIT.get(family, {}).items())


def _reset_warnings(family: Optional[str] = None) -> None:
    """Forgets which families were warned about (tests)."""
    if family is None:
        _warned.clear()
    else:
        _warned.discard(family)
