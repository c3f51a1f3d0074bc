"""HCL (reconstruction; Wang et al., IJCV 2023), in keras-hub's layout:

- `hcl_config.py`: `HCLModelConfig`, every hyper-parameter of the three stage models once, and which part takes which;
- `hcl_restoration.py`: `RestorationNet` (curriculum 1, ResNet encoder + U-Net decoder);
- `hcl_model.py`: `HCLSynthetic` (curriculum 2), `HCL` (curriculum 3, the deployable `IQAModel`) and the builders;
- `hcl_presets.py`: the registry cards ("hcl", "hcl-tiny"), registered here on import.

Also re-exported here under their old names: the decoder blocks (`keras_iqa.layers.decoder_blocks`), `RestorationLoss` /
`restoration_l1` / `PIXEL_LOSSES` (`keras_iqa.losses`) and `HeadCorrelation` (`keras_iqa.metrics`). Training recipe:
`keras-iqa train hcl` (`keras_iqa.training.hcl`).
"""

from keras_iqa.layers.decoder_blocks import DECODER_BLOCKS, ConvBlock, InceptionConv
from keras_iqa.losses import PIXEL_LOSSES, RestorationLoss, restoration_l1
from keras_iqa.metrics import HeadCorrelation
from keras_iqa.models.hcl.hcl_config import (INPUT_NORMS, OUTPUTS, PAPER, HCLModelConfig, head_kwargs,
                                             restoration_kwargs)
from keras_iqa.models.hcl.hcl_model import HCL, HCLSynthetic, build_hcl, build_restoration, build_synthetic
from keras_iqa.models.hcl.hcl_presets import CARDS, TINY
from keras_iqa.models.hcl.hcl_restoration import RestorationNet
from keras_iqa.registry import register

for _card in CARDS:
    register(_card)

__all__ = ["HCLModelConfig", "RestorationNet", "HCLSynthetic", "HCL", "build_restoration", "build_synthetic", "build_hcl",
           "restoration_kwargs", "head_kwargs", "ConvBlock", "InceptionConv", "RestorationLoss", "restoration_l1",
           "HeadCorrelation", "DECODER_BLOCKS", "PIXEL_LOSSES", "INPUT_NORMS", "OUTPUTS", "PAPER", "TINY", "CARDS"]
