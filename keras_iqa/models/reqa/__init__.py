"""REQA (Li & Huo, "Coarse-to-fine Assessment of Image Quality to Alleviate the Range Effect"), in keras-hub's layout:

- `reqa_config.py`: `REQAConfig`, every hyper-parameter once;
- `reqa_model.py`: the `REQA` model (forward pass, coarse-to-fine losses, two optimizers) and `build_reqa(cfg)`;
- `reqa_presets.py`: the registry cards ("reqa", "reqa-official", "reqa-tiny"), registered here on import.

PyTorch checkpoint conversion: `keras_iqa.converters.reqa`. Training recipe: `keras-iqa train reqa`.
"""

from keras_iqa.models.reqa.reqa_config import COARSE_MODES, PAPER, REQAConfig
from keras_iqa.models.reqa.reqa_model import REQA, build_reqa
from keras_iqa.models.reqa.reqa_presets import CARDS, TINY
from keras_iqa.registry import register

for _card in CARDS:
    register(_card)

__all__ = ["REQA", "REQAConfig", "build_reqa", "TINY", "PAPER", "COARSE_MODES", "CARDS"]
