"""REQA quality transformer (paper Sec. III-B "TE", Eq. 6-7; official `GLResViT` in GCUM.py).

stage-4 map [B, h, w, C] -> 1x1 conv patch embedding to D (patch size 1, N = h·w tokens) -> prepend a learned quality token
(zero init) -> add learned positions (zero init) -> dropout -> `depth` pre-LN ViT blocks
(x += MHSA(LN(x)); x += MLP(LN(x)), LN eps 1e-6, MLP D -> mlp_dim -> D with exact GELU) -> Dense(out_dim) on the quality token: v_m.

Deviation from the paper's Eq. 7 (post-LN, LN(S(X)W + X)): the official code's pre-LN block is used; `norm_first=False`
switches to the paper's post-LN form. The encoder's final LayerNorm is defined but unused in the code, so we omit it.
"""

from __future__ import annotations

import keras
from keras import ops


def _bias_init():
    return keras.initializers.RandomNormal(stddev=1e-6)


@keras.saving.register_keras_serializable(package="keras_iqa")
class QualityTransformer(keras.layers.Layer):
    """`call(fm4)` -> v_m [B, out_dim] (the quality token after the encoder and the output projection).

    Args:
        dim: token width D (224). heads: attention heads (14, head dim D/heads = 16). depth: blocks (1). mlp_dim: block MLP (176).
        out_dim: projection of the quality token (128). dropout: embedding / MLP dropout (0.1). attention_dropout: 0.0.
        norm_first: True = pre-LN block (official code), False = post-LN (paper Eq. 7).
    """

    def __init__(self, dim=224, heads=14, depth=1, mlp_dim=176, out_dim=128, dropout=0.1, attention_dropout=0.0,
                 norm_first=True, **kwargs):
        super().__init__(**kwargs)
        if int(dim) % int(heads):
            raise ValueError(f"QualityTransformer dim={dim} must be divisible by heads={heads}")
        self.dim, self.heads, self.depth, self.mlp_dim, self.out_dim = int(dim), int(heads), int(depth), int(mlp_dim), int(out_dim)
        self.dropout, self.attention_dropout, self.norm_first = float(dropout), float(attention_dropout), bool(norm_first)
        xavier = keras.initializers.GlorotUniform()
        self.embed = keras.layers.Conv2D(self.dim, 1, name="patch_embed")
        self.embed_drop = keras.layers.Dropout(self.dropout, name="embed_drop")
        self.block_layers = []  # flat list (7 layers per block) so Keras tracks every sublayer
        for k in range(self.depth):
            self.block_layers.extend(self._block_dict(

                ln1=keras.layers.LayerNormalization(epsilon=1e-6, name=f"block{k}_ln1"),
                attn=keras.layers.MultiHeadAttention(self.heads, self.dim // self.heads, dropout=self.attention_dropout,
                                                     kernel_initializer=xavier, name=f"block{k}_attn"),
                ln2=keras.layers.LayerNormalization(epsilon=1e-6, name=f"block{k}_ln2"),
                fc1=keras.layers.Dense(self.mlp_dim, activation="gelu", kernel_initializer=xavier, bias_initializer=_bias_init(),
                                       name=f"block{k}_fc1"),
                drop1=keras.layers.Dropout(self.dropout, name=f"block{k}_drop1"),
                fc2=keras.layers.Dense(self.dim, kernel_initializer=xavier, bias_initializer=_bias_init(), name=f"block{k}_fc2"),
                drop2=keras.layers.Dropout(self.dropout, name=f"block{k}_drop2"),
            ).values())
        self.head = keras.layers.Dense(self.out_dim, kernel_initializer=xavier, bias_initializer=_bias_init(), name="head")

    _KEYS = ("ln1", "attn", "ln2", "fc1", "drop1", "fc2", "drop2")

    @staticmethod
    def _block_dict(**layers):
        return {k: layers[k] for k in QualityTransformer._KEYS}

    @property
    def blocks(self):
        n = len(self._KEYS)
        return [dict(zip(self._KEYS, self.block_layers[i:i + n])) for i in range(0, len(self.block_layers), n)]

    def build(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        if h is None or w is None:
            raise ValueError("QualityTransformer needs a static spatial size (learned positions, one per token)")
        n = h * w + 1
        self.embed.build(input_shape)
        self.quality_token = self.add_weight(shape=(1, 1, self.dim), initializer="zeros", name="quality_token")
        self.positions = self.add_weight(shape=(1, n, self.dim), initializer="zeros", name="positions")
        tok = (None, n, self.dim)
        for b in self.blocks:
            b["ln1"].build(tok)
            b["attn"].build(tok, tok)
            b["ln2"].build(tok)
            b["fc1"].build(tok)
            b["fc2"].build((None, n, self.mlp_dim))
        self.head.build((None, self.dim))
        self._tokens = n
        self.built = True

    def _mlp(self, b, x, training):
        return b["drop2"](b["fc2"](b["drop1"](b["fc1"](x), training=training)), training=training)

    def call(self, x, training=None):
        t = self.embed(x)
        t = ops.reshape(t, (-1, self._tokens - 1, self.dim))
        q = ops.broadcast_to(ops.cast(self.quality_token, t.dtype), (ops.shape(t)[0], 1, self.dim))
        t = ops.concatenate([q, t], axis=1) + ops.cast(self.positions, t.dtype)
        t = self.embed_drop(t, training=training)
        for b in self.blocks:
            if self.norm_first:
                y = b["ln1"](t)
                t = t + b["attn"](y, y, training=training)
                t = t + self._mlp(b, b["ln2"](t), training)
            else:  # paper Eq. 7: post-LN residuals
                t = b["ln1"](t + b["attn"](t, t, training=training))
                t = b["ln2"](t + self._mlp(b, t, training))
        return self.head(t[:, 0])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.out_dim)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(dim=self.dim, heads=self.heads, depth=self.depth, mlp_dim=self.mlp_dim, out_dim=self.out_dim,
                   dropout=self.dropout, attention_dropout=self.attention_dropout, norm_first=self.norm_first)
        return cfg
