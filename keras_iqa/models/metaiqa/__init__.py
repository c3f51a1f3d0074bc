"""MetaIQA (Zhu et al., CVPR 2020), in keras-hub's layout:

- `metaiqa_config.py`: `MetaIQAConfig`, every hyper-parameter once;
- `metaiqa_model.py`: the `MetaIQA` model (ResNet + GAP + paper or official head) and `build_metaiqa(cfg)`;
- `metaiqa_presets.py`: the registry cards ("metaiqa", "metaiqa-official", "metaiqa-tiny"), registered here on import.

PyTorch checkpoint conversion: `keras_iqa.converters.metaiqa`. Meta-training recipe: `keras-iqa train metaiqa`.
"""

from keras_iqa.models.metaiqa.metaiqa_config import HEADS, PAPER, MetaIQAConfig
from keras_iqa.models.metaiqa.metaiqa_model import MetaIQA, build_metaiqa
from keras_iqa.models.metaiqa.metaiqa_presets import CARDS, TINY
from keras_iqa.registry import register

for _card in CARDS:
    register(_card)

__all__ = ["MetaIQA", "MetaIQAConfig", "build_metaiqa", "HEADS", "PAPER", "TINY", "CARDS"]
