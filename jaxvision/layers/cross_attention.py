"""Cross-attention with learnable class tokens for segmentation (report 003, problem 5 b, Code Snippet 11).

Queries are learnable class tokens [num_classes, dim] (randomly initialised, torch.randn: N(0, 1));
keys and values are the per-pixel features of the segmentation decoder (the ASPP -> decoder features
at stride 4), projected by a Linear to `dim` when their width differs (the report's 512 variant).
Each block follows the reports' TransformerBlock with cross-attention in place of self-attention:
separate LayerNorms for the queries and for the keys/values, multi-head attention with dropout on
the attention weights and an output projection, then x + MLP(LN(x)). The mask logits are the plain
dot products of the updated class tokens with the (projected) pixel features, einsum('bkc,bchw->bkhw').
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.attention import dot_product_attention, trunc_normal_02
from jaxvision.layers.transformer import LN_EPS, Mlp


class MultiHeadCrossAttention(nn.Module):
    """Queries `x` [B, Nq, D] attend to `context` [B, Nk, Dc]; returns [B, Nq, D] in `dtype`.

    Separate Dense projections `q` (of x), `k` and `v` (of context) to D, `num_heads` heads of
    D / num_heads, the kernel `attention_fn(q, k, v, mask, dropout)` of jaxvision.layers.attention
    (`mask` [B, Nk] boolean, True = real key), output projection `proj`. `dropout_rate` drops
    attention weights when `train` is True (needs a 'dropout' rng).
    """

    num_heads: int
    qkv_bias: bool = True
    dropout_rate: float = 0.0
    attention_fn: Callable = dot_product_attention
    kernel_init: Callable = trunc_normal_02
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, context: jnp.ndarray, mask: jnp.ndarray | None = None,
                 train: bool = False) -> jnp.ndarray:
        b, nq, d = x.shape
        if self.num_heads < 1 or d % self.num_heads:
            raise ValueError(f"MultiHeadCrossAttention: width {d} is not divisible by num_heads {self.num_heads}")

        def heads(name, tokens):
            y = nn.Dense(d, use_bias=self.qkv_bias, dtype=self.dtype, kernel_init=self.kernel_init, name=name)(tokens)
            return y.reshape(b, tokens.shape[1], self.num_heads, d // self.num_heads).transpose(0, 2, 1, 3)

        dropout = None
        if self.dropout_rate > 0:
            dropout = nn.Dropout(self.dropout_rate, deterministic=not train, name="attn_drop")
        out = self.attention_fn(heads("q", x), heads("k", context), heads("v", context), mask, dropout)
        out = out.transpose(0, 2, 1, 3).reshape(b, nq, d)
        return nn.Dense(d, dtype=self.dtype, kernel_init=self.kernel_init, name="proj")(out)


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention block: x + attn(norm_q(x), norm_kv(context)), then x + mlp(norm2(x)).

    `attention_dropout_rate` drops attention weights (the report's dropout), `dropout_rate` the
    attention and MLP outputs; `mlp_ratio` is the report's expansion.
    """

    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    attention_fn: Callable = dot_product_attention
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, context: jnp.ndarray, train: bool,
                 mask: jnp.ndarray | None = None) -> jnp.ndarray:
        q = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm_q")(x)
        kv = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm_kv")(context)
        y = MultiHeadCrossAttention(self.num_heads, self.qkv_bias, self.attention_dropout_rate, self.attention_fn,
                                    dtype=self.dtype, name="attn")(q, kv, mask, train)
        x = x + nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm2")(x)
        return x + Mlp(int(x.shape[-1] * self.mlp_ratio), self.dropout_rate, self.dtype, name="mlp")(y, train)


class ClassTokenCrossAttention(nn.Module):
    """Segmentation logits from learnable class tokens attending to per-pixel features.

    Call: `(features [B, h, w, C], train)` -> logits [B, h, w, num_classes] float32 at the features'
    resolution (the caller upsamples). Parameters: `class_tokens` [num_classes, dim] ~ N(0, 1);
    `feature_proj` (Dense C -> dim) only when C != dim; `blocks_{i}` (CrossAttentionBlock). The
    report: dim 256 with 3 layers; dim 512 (features projected) with 2 layers; 4 heads, expansion 4,
    dropout on the attention weights. Logits = <class token k after the blocks, pixel feature>.
    """

    num_classes: int
    dim: int = 256
    num_heads: int = 4
    num_layers: int = 3
    expansion: float = 4.0
    dropout: float = 0.0
    attention_fn: Callable = dot_product_attention
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if self.num_heads < 1 or self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        super().__post_init__()

    @nn.compact
    def __call__(self, features: jnp.ndarray, train: bool) -> jnp.ndarray:
        b, h, w, c = features.shape
        features = features.astype(self.dtype)
        if c != self.dim:
            features = nn.Dense(self.dim, dtype=self.dtype, kernel_init=trunc_normal_02, name="feature_proj")(features)
        context = features.reshape(b, h * w, self.dim)
        tokens = self.param("class_tokens", nn.initializers.normal(1.0), (self.num_classes, self.dim))
        tokens = jnp.broadcast_to(tokens.astype(self.dtype), (b, self.num_classes, self.dim))
        for i in range(self.num_layers):
            tokens = CrossAttentionBlock(self.num_heads, self.expansion, attention_dropout_rate=self.dropout,
                                         attention_fn=self.attention_fn, dtype=self.dtype,
                                         name=f"blocks_{i}")(tokens, context, train)
        return jnp.einsum("bkc,bhwc->bhwk", tokens.astype(jnp.float32), features.astype(jnp.float32))
