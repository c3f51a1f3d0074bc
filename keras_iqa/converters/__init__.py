"""Checkpoint converters: official PyTorch checkpoints -> keras-iqa presets (docs/converters.md).

One module per released format, each with `convert(checkpoint, card=..., strict=True, **overrides) -> (model, report)`:

- `keras_iqa.converters.metaiqa`: MetaIQA's released network (ResNet-18 + ImageNet FC + BaselineModel1) -> "metaiqa-official";
- `keras_iqa.converters.reqa`: REQA's official `REQANet` state dict (ResNet-50 + ConvLSTM feedback + transformer + MLP-III)
  -> "reqa".

Checkpoints are read by `keras_iqa.converters.safe_load` only: `torch.load(weights_only=True)` or `.safetensors`; a file that
needs code to open (a whole pickled model) is refused with `UnsafeCheckpointError`, which says how to make a state dict of
it safely. `convert_to_preset` converts and writes a preset folder (`IQAModel.save_to_preset`) whose metadata.json records
the checkpoint's name, size and SHA-256, the converter and the command; `keras-iqa convert` is its command line.

Example:
>>> import os, tempfile, torch
>>> import keras_iqa
>>> from bench.peers.metaiqa_torch import Net
>>> from keras_iqa.converters import convert_to_preset
>>> tmp = tempfile.mkdtemp()
>>> torch.save(Net(width=0.125, blocks=(1, 1, 1, 1)).state_dict(), os.path.join(tmp, "metaiqa.pt"))
>>> folder, report = convert_to_preset("metaiqa", os.path.join(tmp, "metaiqa.pt"), os.path.join(tmp, "preset"),
...                                    card="metaiqa-tiny", head="official")
>>> model = keras_iqa.from_preset(str(folder))
>>> model.head, report["tensors"]
('official', 78)
"""

from __future__ import annotations

import importlib
import os
from typing import Optional

#: family -> (converter module, default card, what it reads)
CONVERTERS = {
    "metaiqa": ("keras_iqa.converters.metaiqa", "metaiqa-official",
                "MetaIQA's released network (torchvision ResNet-18 with its ImageNet FC + BaselineModel1), as a state dict"),
    "reqa": ("keras_iqa.converters.reqa", "reqa",
             "REQA's official REQANet (ResNet-50, ConvLSTM feedback, transformer, MLP-III), as a state dict"),
}


def converter(family: str):
    """The converter module of a family ("metaiqa", "reqa")."""
    if family not in CONVERTERS:
        raise ValueError(f"no converter for {family!r}; choose one of {sorted(CONVERTERS)}")
    return importlib.import_module(CONVERTERS[family][0])


def convert(family: str, checkpoint, card: Optional[str] = None, strict: bool = True, **overrides):
    """Converts a checkpoint of `family` into a Keras model: (model, report). See the family modules."""
    mod = converter(family)
    return mod.convert(checkpoint, card=card or CONVERTERS[family][1], strict=strict, **overrides)


def convert_to_preset(family: str, checkpoint, out, card: Optional[str] = None, strict: bool = True,
                      command: Optional[str] = None, **overrides):
    """Converts `checkpoint` and writes the model as a preset folder `out` (`keras_iqa.from_preset(out)` loads it).

    Args:
        family: "metaiqa" or "reqa".
        checkpoint: path of the state dict (.pt / .pth / .bin / .safetensors).
        out: the preset folder to write.
        card: registry card to build (default: the family's official card).
        strict: refuse checkpoints holding tensors the network does not have.
        command: the command line to record (default: the equivalent Python call).
        **overrides: config overrides for the card.

    Returns:
        (preset folder, report: tensors read, unused keys, checkpoint SHA-256).
    """
    from keras_iqa.converters.safe_load import sha256

    card = card or CONVERTERS[family][1]
    path = os.path.abspath(os.fspath(checkpoint))
    digest = sha256(path) if os.path.isfile(path) else None
    model, report = convert(family, path, card=card, strict=strict, **overrides)
    call = f"keras_iqa.converters.convert_to_preset({family!r}, {os.fspath(checkpoint)!r}, {os.fspath(out)!r}, card={card!r}"
    call += "".join(f", {k}={v!r}" for k, v in overrides.items()) + ")"
    source = {"checkpoint": os.path.basename(path), "path": path, "sha256": digest, "bytes": os.path.getsize(path),
              "format": CONVERTERS[family][2], "converter": CONVERTERS[family][0], "command": command or call,
              "tensors": report["tensors"], "unused": report["unused"]}
    metadata = {"card": card, "converted_from": source,
                "training": {"data": "as the converted checkpoint (not recorded in it)",
                             "protocol": f"converted from {os.path.basename(path)} (sha256 {digest})"}}
    folder = model.save_to_preset(out, metadata=metadata)
    return folder, {**report, "sha256": digest}
