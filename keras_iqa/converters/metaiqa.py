"""MetaIQA's released PyTorch checkpoints -> the "metaiqa-official" Keras model (Zhu et al., CVPR 2020; docs/converters.md).

The released network is `Net(resnet_layer=torchvision ResNet-18 with its ImageNet FC, net=BaselineModel1)`; its state dict
keys are `resnet_layer.conv1.weight`, `resnet_layer.layer2.0.downsample.0.weight`, `resnet_layer.fc.weight`,
`net.fc1.weight`, `net.bn1.running_mean`, `net.relu1.weight` (the PReLU slope), ..., `net.fc3.bias`. A bare torchvision
ResNet-18 prefix (`conv1.weight` ...) is accepted too, as is DataParallel's `module.` prefix. The released `.pt` files are
whole pickled models, which `keras_iqa.converters.safe_load` refuses to open; docs/converters.md shows how to turn them into
a state dict once on a trusted machine.

Example:
>>> import os, tempfile, torch
>>> from bench.peers.metaiqa_torch import Net
>>> from keras_iqa.converters.metaiqa import convert
>>> path = os.path.join(tempfile.mkdtemp(), "metaiqa.pt")
>>> torch.save(Net(width=0.125, blocks=(1, 1, 1, 1)).state_dict(), path)
>>> model, report = convert(path, card="metaiqa-tiny", head="official")
>>> report["tensors"], report["unused"]
(78, [])
"""

from __future__ import annotations

import re
from typing import Optional

import keras_iqa
from keras_iqa.caller import setting
from keras_iqa.converters.common import Plan, check_unused, strip_prefix
from keras_iqa.converters.safe_load import load_state_dict

#: Keras head layer -> module path in the released `Net` ("{bb}" = the ResNet prefix)
HEAD_MAP = {"imagenet_fc": "{bb}fc", "fc1": "net.fc1", "bn1": "net.bn1", "prelu1": "net.relu1", "fc2": "net.fc2",
            "bn2": "net.bn2", "prelu2": "net.relu2", "fc3": "net.fc3"}
WHAT = "official MetaIQA"


def backbone_key(layer_name: str) -> Optional[str]:
    """keras-hub ResNet layer name -> torchvision module path: conv1_conv -> conv1, stack1_block0_0_conv -> layer2.0.downsample.0,
    stack0_block1_2_bn -> layer1.1.bn2; None for layers without weights in torchvision."""
    if layer_name == "conv1_conv":
        return "conv1"
    if layer_name == "conv1_bn":
        return "bn1"
    m = re.fullmatch(r"stack(\d+)_block(\d+)_(\d)_(conv|bn)", layer_name)
    if not m:
        return None
    base = f"layer{int(m[1]) + 1}.{int(m[2])}."
    if m[3] == "0":
        return base + ("downsample.0" if m[4] == "conv" else "downsample.1")
    return base + f"{m[4]}{m[3]}"


def resnet_plan(plan: Plan, backbone, prefix: str) -> None:
    """Adds a keras-hub ResNet (`keras_iqa.backbones.resnet_features`) read from torchvision keys under `prefix`."""
    for layer in backbone.layers:
        if not layer.weights:
            continue
        path = backbone_key(layer.name)
        if path is None:
            raise ValueError(f"backbone layer {layer.name!r} has no torchvision counterpart")
        if layer.name.endswith("_bn"):
            plan.batch_norm(layer, prefix + path)
        else:
            plan.conv(layer, prefix + path)


def load_state(model, state: dict, strict: bool = True) -> dict:
    """Copies a released MetaIQA state dict ({key: array}) into a MetaIQA Keras model with `head="official"`.

    Returns {"tensors": n written, "unused": checkpoint keys not used}; raises ValueError naming the key for a missing tensor,
    a shape that does not fit (another width or depth) or, with `strict`, tensors the network does not have.
    """
    if getattr(model, "head", None) != "official":
        raise ValueError("the released MetaIQA checkpoints need the official head: convert into the 'metaiqa-official' card "
                         f"({setting('card', 'metaiqa-official')}, or a card built with head='official')")
    state = strip_prefix(state)
    prefix = "resnet_layer." if "resnet_layer.conv1.weight" in state else ""
    plan = Plan(state, WHAT)
    heads = [layer for layer in model.head_layers if layer.name in HEAD_MAP]
    needed = [f"{prefix}conv1.weight"] + [HEAD_MAP[layer.name].format(bb=prefix) + ".weight" for layer in heads]
    plan.require(needed)
    try:
        resnet_plan(plan, model.backbone, prefix)
        for layer in heads:
            path = HEAD_MAP[layer.name].format(bb=prefix)
            if layer.name.startswith("bn"):
                plan.batch_norm(layer, path)
            elif layer.name.startswith("prelu"):
                plan.add(layer.alpha, plan.get(path + ".weight").reshape(tuple(layer.alpha.shape)), path + ".weight")
            else:
                plan.dense(layer, path)
    except KeyError as e:
        plan.require([e.args[0]])
    n = plan.apply(hint="convert into a card of the released size ('metaiqa-official': ResNet-18, width 1.0)")
    unused = plan.unused()
    check_unused(plan, unused, strict)
    return {"tensors": n, "unused": unused}


def convert(checkpoint, card: str = "metaiqa-official", strict: bool = True, **overrides):
    """Released MetaIQA checkpoint (a state dict file: .pt / .pth / .safetensors) -> (Keras MetaIQA model, report).

    Args:
        checkpoint: path of the state dict, or an already loaded {key: array} mapping.
        card: registry card to build ("metaiqa-official"; a smaller card with `head="official"` for tests).
        strict: refuse checkpoints holding tensors the network does not have.
        **overrides: config overrides for the card.
    """
    state = load_state_dict(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    model = keras_iqa.create_model(card, **overrides)
    return model, load_state(model, state, strict=strict)
