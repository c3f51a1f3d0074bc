"""REQA's official PyTorch checkpoint format (`REQANet` state dict) -> the "reqa" Keras model (docs/converters.md).

Official keys (module names of the official code) and where they go:

| official key | Keras |
|---|---|
| `res.*` (torchvision ResNet-50; repeated under `local_distortion_perception_module.res.*` and `global_context_understanding_module.res.*`, one shared module) | `backbone` |
| `local_distortion_perception_module.lda{d}_feedback.cells.0.cells.0.{g}_x.conv_1_x.weight`, `.{g}_x.bn_1_x.*` for the gates g = i, f, c, o (also under `...cells.0.stack.0...`) | `feedback{d}`: `x_conv` kernel and `x_bn`, the four gates side by side (i, f, g, o) |
| the same with `{g}_h.conv_1_h`, `{g}_h.bn_1_h` | `feedback{d}`: `h_conv`, `h_bn` |
| `...lda{d}_feedback.fc` | `feedback{d}.proj` (both flatten the pooled map channel-major) |
| `global_context_understanding_module.patch_embeddings`, `.cls_token`, `.position_embeddings` | `transformer.patch_embed`, `quality_token`, `positions` |
| `...encoder.layer.{k}.attention_norm`, `.attn.{query,key,value,out}`, `.ffn_norm`, `.ffn.fc1`, `.ffn.fc2` | `transformer.block{k}_ln1`, `block{k}_attn` (heads split from the 224 outputs), `block{k}_ln2`, `block{k}_fc1`, `block{k}_fc2` |
| `...encoder.encoder_norm` | not used by the official forward pass (reported as unused) |
| `global_context_understanding_module.fc` | `transformer.head` |
| `fc.0`, `fc.2`, ..., `fc.8` (MLP-III) | `mlp3_fc1` ... `mlp3_fc5` |

The official code has no checkpoint file of its own (it saves nothing); this is the layout of `REQANet().state_dict()`,
which is what `torch.save(model.state_dict(), ...)` writes after training with it. T (steps) is not stored: the card's (4).

Example:
>>> import os, tempfile, torch
>>> from bench.peers.reqa_torch import REQANet
>>> from keras_iqa.converters.reqa import convert
>>> from keras_iqa.models.reqa import TINY
>>> path = os.path.join(tempfile.mkdtemp(), "reqa.pt")
>>> sizes = {k: v for k, v in TINY.items() if k not in ("test_crops",)}
>>> torch.save(REQANet(**sizes).state_dict(), path)
>>> model, report = convert(path, card="reqa-tiny")
>>> report["unused"]  # the official encoder's final LayerNorm is never applied
['global_context_understanding_module.encoder.encoder_norm.bias', 'global_context_understanding_module.encoder.encoder_norm.weight']
"""

from __future__ import annotations

import numpy as np

import keras_iqa
from keras_iqa.caller import setting
from keras_iqa.converters.common import Plan, check_unused, conv_kernel, dense_kernel, strip_prefix
from keras_iqa.converters.metaiqa import resnet_plan
from keras_iqa.converters.safe_load import load_state_dict

WHAT = "official REQA"
LDPM = "local_distortion_perception_module."
GCUM = "global_context_understanding_module."
#: backbone prefixes of the official state dict, the shared ResNet-50 under each of its three names
RES_PREFIXES = ("res.", LDPM + "res.", GCUM + "res.")
#: the two names of each ConvLSTM cell (one module registered twice)
CELL_PREFIXES = ("cells.0.cells.0.", "cells.0.stack.0.")
GATES = "ifco"  # official gate order: input, forget, cell candidate (g), output; Keras FeedbackBlock: i, f, g, o


def _dedupe_shared(state: dict) -> tuple[dict, list]:
    """Folds the repeated copies of shared modules (backbone x3, ConvLSTM cell x2) onto one canonical key each.

    Returns (state with canonical keys only, the duplicate keys dropped). Copies that differ are an error: in the official
    network they are one module, so a checkpoint where they differ did not come from it.
    """
    def canonical(key):
        for p in RES_PREFIXES[1:]:
            if key.startswith(p):
                return "res." + key[len(p):]
        return key.replace("." + CELL_PREFIXES[1], "." + CELL_PREFIXES[0])

    out, dropped = {}, []
    for key in sorted(state, key=lambda k: k != canonical(k)):  # canonical spellings first
        c = canonical(key)
        if c in out:
            if out[c].shape != state[key].shape or not np.array_equal(out[c], state[key]):
                raise ValueError(f"{key!r} differs from {c!r}: in the official REQANet both name one shared module, so "
                                 "this checkpoint did not come from it")
            dropped.append(key)
        else:
            out[c] = state[key]
    return out, dropped


def _feedback_plan(plan: Plan, block, prefix: str) -> None:
    cell = prefix + CELL_PREFIXES[0]
    for path, conv, bn in (("x", block.x_conv, block.x_bn), ("h", block.h_conv, block.h_bn)):
        convs = [plan.get(f"{cell}{g}_{path}.conv_1_{path}.weight") for g in GATES]
        if convs[0].shape[-2:] != (1, 1):
            raise ValueError(f"{cell}i_{path}.conv_1_{path}.weight is a {convs[0].shape[-2]}x{convs[0].shape[-1]} "
                             "convolution; REQA's feedback blocks use 1x1 (official configuration)")
        plan.add(conv.kernel, np.concatenate([conv_kernel(w) for w in convs], axis=-1), f"{cell}*_{path}.conv_1_{path}.weight")
        for var, k in zip((bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance),
                          ("weight", "bias", "running_mean", "running_var")):
            parts = [plan.get(f"{cell}{g}_{path}.bn_1_{path}.{k}") for g in GATES]
            plan.add(var, np.concatenate(parts), f"{cell}*_{path}.bn_1_{path}.{k}")
    plan.dense(block.proj, prefix + "fc")


def _attention_plan(plan: Plan, attn, prefix: str, heads: int) -> None:
    for name, dense in (("query", attn.query_dense), ("key", attn.key_dense), ("value", attn.value_dense)):
        w, b = plan.get(f"{prefix}.{name}.weight"), plan.get(f"{prefix}.{name}.bias")
        d = w.shape[1]
        plan.add(dense.kernel, dense_kernel(w).reshape(d, heads, -1), f"{prefix}.{name}.weight")  # [D, heads, head_dim]
        plan.add(dense.bias, b.reshape(heads, -1), f"{prefix}.{name}.bias")
    w, b = plan.get(f"{prefix}.out.weight"), plan.get(f"{prefix}.out.bias")
    plan.add(attn.output_dense.kernel, dense_kernel(w).reshape(heads, -1, w.shape[0]), f"{prefix}.out.weight")
    plan.add(attn.output_dense.bias, b, f"{prefix}.out.bias")


def _transformer_plan(plan: Plan, te, prefix: str) -> None:
    plan.conv(te.embed, prefix + "patch_embeddings")
    plan.add(te.quality_token, plan.get(prefix + "cls_token"), prefix + "cls_token")
    plan.add(te.positions, plan.get(prefix + "position_embeddings"), prefix + "position_embeddings")
    n_layers = len({k.split(".")[3] for k in plan.state if k.startswith(prefix + "encoder.layer.")})
    if n_layers != te.depth:
        raise ValueError(f"the checkpoint's transformer has {n_layers} blocks, the Keras model {te.depth}: convert into a "
                         f"card with depth_te={n_layers}")
    for k, b in enumerate(te.blocks):
        p = f"{prefix}encoder.layer.{k}."
        plan.layer_norm(b["ln1"], p + "attention_norm")
        _attention_plan(plan, b["attn"], p + "attn", te.heads)
        plan.layer_norm(b["ln2"], p + "ffn_norm")
        plan.dense(b["fc1"], p + "ffn.fc1")
        plan.dense(b["fc2"], p + "ffn.fc2")
    plan.dense(te.head, prefix + "fc")


def load_state(model, state: dict, strict: bool = True) -> dict:
    """Copies an official REQA state dict ({key: array}) into a Keras `REQA` model of the same sizes.

    Returns {"tensors": n written, "unused": keys the official forward pass never reads (the encoder's final LayerNorm),
    "duplicates": n repeated keys of shared modules}; raises ValueError naming the key for a missing tensor, a shape that
    does not fit (another card) or, with `strict`, tensors the network does not have.
    """
    if not (getattr(model, "use_feedback", False) and getattr(model, "use_transformer", False)):
        raise ValueError("an official REQA checkpoint has the feedback network and the transformer: convert into a REQA card "
                         f"with feedback=True and transformer=True ({setting('card', 'reqa')})")
    if not model.norm_first:
        raise ValueError("the official transformer is pre-LN: convert into a card with norm_first=True "
                         f"({setting('card', 'reqa')})")
    state, dropped = _dedupe_shared(strip_prefix(state))
    plan = Plan(state, WHAT)
    cells = [f"{LDPM}lda{d}_feedback.{CELL_PREFIXES[0]}i_x.conv_1_x.weight" for d in (1, 2, 3)]
    plan.require(["res.conv1.weight", GCUM + "patch_embeddings.weight", "fc.0.weight"] + cells)
    try:
        resnet_plan(plan, model.backbone, "res.")
        for d, block in enumerate(model.feedback_blocks, start=1):
            _feedback_plan(plan, block, f"{LDPM}lda{d}_feedback.")
        _transformer_plan(plan, model.quality_transformer, GCUM)
        for i, layer in enumerate(model.head_layers):
            plan.dense(layer, f"fc.{2 * i}")
    except KeyError as e:
        plan.require([e.args[0]])
    n = plan.apply(hint="convert into the card of the checkpoint's sizes ('reqa' for the official network, 224 px crops)")
    norm = [f"{GCUM}encoder.encoder_norm.{k}" for k in ("weight", "bias")]
    unused = plan.unused(expected_unused=norm)
    check_unused(plan, unused, strict)
    return {"tensors": n, "unused": sorted(k for k in norm if k in state) + unused, "duplicates": len(dropped)}


def convert(checkpoint, card: str = "reqa", strict: bool = True, **overrides):
    """Official REQA checkpoint (a state dict file: .pt / .pth / .safetensors) -> (Keras REQA model, report).

    Args:
        checkpoint: path of the state dict, or an already loaded {key: array} mapping.
        card: registry card to build ("reqa": the official sizes; "reqa-tiny" for tests).
        strict: refuse checkpoints holding tensors the network does not have.
        **overrides: config overrides for the card (e.g. steps).
    """
    state = load_state_dict(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    model = keras_iqa.create_model(card, **overrides)
    return model, load_state(model, state, strict=strict)
